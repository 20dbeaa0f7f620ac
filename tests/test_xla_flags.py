"""The XLA flags the trainer sets before JAX starts (parallel.set_xla_flags).

Fresh processes: this one started JAX long ago (conftest), and XLA reads
XLA_FLAGS once, when its backends start.
"""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest

import oracle
from trainer_process import REPO
from resnet_jax.run import parallel

EXTRA = 'xla_backend_extra_options'
TERMINATE = 'xla_cpu_collective_call_terminate_timeout_seconds'


def test_the_flags_are_added_to_the_users_and_never_override_them():
  environ = {'XLA_FLAGS': '--xla_force_host_platform_device_count=3'}
  flags = parallel.set_xla_flags(environ).split()
  ours = [f'--{TERMINATE}=-1', f'--{EXTRA}={parallel.XLA_FLAGS[EXTRA]}']
  assert flags == ['--xla_force_host_platform_device_count=3', *ours]
  assert parallel.set_xla_flags(environ).split() == flags  # Added once.
  # A user's own value wins, whichever way it is spelled.
  environ = {'XLA_FLAGS': f'-{EXTRA}=xla_cpu_optimize_for_size '
                          f'--{TERMINATE}=600'}
  assert parallel.set_xla_flags(environ) == environ['XLA_FLAGS'] == (
      f'-{EXTRA}=xla_cpu_optimize_for_size --{TERMINATE}=600')
  assert parallel.set_xla_flags({}).split() == ours


# A fresh process, started as the trainer starts
# (parallel.configure_cpu_devices) or bare, prints its XLA_FLAGS and how many
# ReLUs (maximum) the compiled program of step 5 of the oracle's config (every
# field that changes the step set) holds; the trainer's saves the state its own
# compiled step reaches (oracle.trainer_step).
STEP = """
import json, os, re, sys
import jax, numpy as np
from configs import smoke
from resnet_jax.run import parallel
if sys.argv[1] == 'trainer':
  config = smoke.get_config()
  config.cpu_devices = 1
  parallel.configure_cpu_devices(config)
else:
  jax.config.update('jax_num_cpu_devices', 1)
sys.path.insert(0, 'tests')
import oracle
c, ds = oracle.config(), oracle.dataset()
state = oracle.at_step(oracle.initial_state(c, ds), 5)
if sys.argv[1] == 'trainer':
  new, _ = oracle.trainer_step(c, ds, state, 5)
  np.savez(sys.argv[2], *jax.tree.leaves(
      (new.params, new.batch_stats, new.opt_state)))
program = oracle.hand_program(c, ds, state, 5)
print(json.dumps({'xla_flags': os.environ.get('XLA_FLAGS', ''),
                  'relus': len(re.findall(r' maximum\\(', program))}))
"""


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
  assert f'--{EXTRA}={parallel.XLA_FLAGS[EXTRA]}' in trainer['xla_flags']
  # (resnet_jax/__init__.py adds a flag of its own on import: not these.)
  assert not any(name in bare['xla_flags'] for name in parallel.XLA_FLAGS)
  # In effect: the backward pass no longer recomputes each batch-norm/ReLU
  # chain where a weight gradient needs it (the oracle's ResNet-8: 17 ReLUs
  # against 66).
  assert trainer['relus'] < bare['relus'] / 2, (trainer, bare)
  # Fused otherwise, the step sums in another order: still within float32
  # rounding of the step in float64, as the bare step is (test_oracle):
  # oracle.float32_atol, from the magnitude of each value's terms; the
  # largest reduction is over batch x height x width = 16 x 8 x 8 terms.
  c, ds = oracle.config(), oracle.dataset()
  state = oracle.at_step(oracle.initial_state(c, ds), 5)
  exact, scales = oracle.float64_steps(c, ds, state, 1, first=5)
  exact = jax.tree.leaves((exact.params, exact.batch_stats, exact.opt_state))
  scales = jax.tree.leaves((scales['params'], scales['batch_stats'],
                            scales['opt_state']))
  with np.load(tmp_path / 'trainer.npz') as got:
    assert len(got.files) == len(exact) > 10
    oracle.assert_float32_close([got[f'arr_{i}'] for i in range(len(exact))],
                                exact, 16 * 8 * 8, scales=scales)


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
