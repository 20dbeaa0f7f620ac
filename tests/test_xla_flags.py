"""The XLA flags the trainer sets before JAX starts (parallel.set_xla_flags).

Fresh processes: this one started JAX long ago (conftest), and XLA reads
XLA_FLAGS once, when its backends start.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from cli import REPO
from resnet_jax.run import parallel

EXTRA = 'xla_backend_extra_options'
TERMINATE = 'xla_cpu_collective_call_terminate_timeout_seconds'


def test_the_flags_are_added_to_the_users_and_never_override_them():
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=3'}
  flags = parallel.set_xla_flags(environ).split()
  assert flags == ['--xla_force_host_platform_device_count=3',
                   f'--{TERMINATE}=-1']
  assert parallel.set_xla_flags(environ).split() == flags  # Added once.
  # A user's own value wins, whichever way it is spelled.
  environ = {'XLA_FLAGS': f'-{EXTRA}=xla_cpu_optimize_for_size '
                          f'--{TERMINATE}=600'}
  assert parallel.set_xla_flags(environ) == environ['XLA_FLAGS'] == (
      f'-{EXTRA}=xla_cpu_optimize_for_size --{TERMINATE}=600')
  assert parallel.set_xla_flags({}) == f'--{TERMINATE}=-1'


# One training step of a ResNet-8 in a fresh process, started as the trainer
# starts (parallel.configure_cpu_devices) or bare; prints what it computed and
# how many ReLUs (maximum) its compiled program holds.
STEP = '''
import functools, json, os, re, sys
import jax, ml_collections, numpy as np
from configs import smoke
from resnet_jax.core import models, optimizer, steps
from resnet_jax.run import parallel
if sys.argv[1] == 'trainer':
  config = smoke.get_config()
  config.cpu_devices = 1
  parallel.configure_cpu_devices(config)
else:
  jax.config.update('jax_num_cpu_devices', 1)
tx = optimizer.create_optimizer(ml_collections.ConfigDict(dict(
    momentum=0.9, nesterov=False, weight_decay=5e-4, weight_decay_mode='l2',
    weight_decay_on='all')), lambda step: 0.1)
state = steps.create_train_state(jax.random.key(0), models.ResNet(depth=8),
                                 tx, (8, 8, 3))
rng = np.random.default_rng(0)
batch = {'image': rng.normal(size=(16, 8, 8, 3)).astype(np.float32),
         'label': rng.integers(0, 10, 16).astype(np.int32)}
step = jax.jit(functools.partial(steps.train_step, learning_rate_fn=lambda s: 0.1))
program = step.lower(state, batch, jax.random.key(1)).compile().as_text()
state, metrics = step(state, batch, jax.random.key(1))
leaves = jax.tree.leaves((state.params, state.batch_stats, state.opt_state))
np.savez(sys.argv[2], **{f'state{i}': np.asarray(x) for i, x in enumerate(leaves)},
         **{f'metric_{k}': np.asarray(v) for k, v in metrics.items()})
print(json.dumps({'xla_flags': os.environ.get('XLA_FLAGS', ''),
                  'relus': len(re.findall(r' maximum\\(', program))}))
'''


def _fresh(*args, xla_flags=None):
  env = {k: v for k, v in os.environ.items() if k != 'XLA_FLAGS'}
  if xla_flags:
    env['XLA_FLAGS'] = xla_flags
  result = subprocess.run([sys.executable, '-c', *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result


@pytest.mark.slow
def test_a_started_trainer_compiles_with_them_and_computes_the_same(tmp_path):
  trainer = json.loads(_fresh(STEP, 'trainer', tmp_path / 'trainer.npz')
                       .stdout.splitlines()[-1])
  bare = json.loads(_fresh(STEP, 'bare', tmp_path / 'bare.npz')
                    .stdout.splitlines()[-1])

  assert f'--{TERMINATE}=-1' in trainer['xla_flags']
  # (resnet_jax/__init__.py adds a flag of its own on import: not these.)
  assert not any(name in bare['xla_flags'] for name in parallel.XLA_FLAGS)
  # The flags change no compiled operation, so the step is bit-identical.
  assert trainer['relus'] == bare['relus']
  with np.load(tmp_path / 'trainer.npz') as got, \
       np.load(tmp_path / 'bare.npz') as want:
    assert got.files == want.files and len(got.files) > 10
    for name in want.files:
      np.testing.assert_array_equal(got[name], want[name], err_msg=name)


# Device 1 reaches the all-reduce `delay` seconds after device 0.
LATE = '''
import sys, time
import jax, jax.numpy as jnp, numpy as np
from jax.sharding import PartitionSpec as P
from configs import smoke
from resnet_jax.run import parallel
config = smoke.get_config()
config.cpu_devices = 2
parallel.configure_cpu_devices(config)
delay = float(sys.argv[1])

def late(index):
  if int(index) == 1:
    time.sleep(delay)
  return np.float32(index)

def total(x):
  index = jax.lax.axis_index(parallel.AXIS)
  y = jax.experimental.io_callback(
      late, jax.ShapeDtypeStruct((), jnp.float32), index)
  return jax.lax.psum(x + y, parallel.AXIS)

dp = parallel.DataParallel('shard_map')
f = jax.jit(jax.shard_map(total, mesh=dp.mesh, in_specs=P(parallel.AXIS),
                          out_specs=P()))
print(float(f(jnp.ones(2))[0]))
'''


@pytest.mark.slow
def test_a_device_late_to_an_all_reduce_slows_the_step_and_never_aborts_it():
  # XLA:CPU aborts the process (SIGABRT, "Termination timeout ... Exiting to
  # ensure a consistent program state") when a participant is more than
  # its warning time (20 s; 1 s here, the user's flag) plus 40 s late: 45 s
  # late, it did.
  result = _fresh(LATE, '45', xla_flags=(
      '--xla_cpu_collective_call_warn_stuck_timeout_seconds=1'))
  assert result.stdout.split() == ['3.0']  # (1 + 0) + (1 + 1).
