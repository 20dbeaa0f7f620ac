"""The four layouts (sharded, jit, pmap, shard_map) compute the same training
step, and a run moves between them."""

import functools
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import pytest

from oracle import assert_float32_close
from trainer_process import REPO
from resnet_jax.core import models, optimizer, schedules, steps
from resnet_jax.run import parallel

GLOBAL_BATCH = 16
IMAGE_SHAPE = (8, 8, 3)


def run(mode, num_steps=2, batch_size=GLOBAL_BATCH, switch_to=None):
  """Trains a ResNet-8 for `num_steps` in `mode`; returns the state and metrics.

  With `switch_to`, the steps after the first run in that mode instead, on
  the state taken out of the first layout as a checkpoint takes it.
  """
  dp = parallel.DataParallel(mode)
  lr = schedules.create_learning_rate_fn(ml_collections.ConfigDict(dict(
      name='warmup_cosine', base_learning_rate=0.1, reference_batch_size=128,
      warmup_steps=1)), batch_size, total_steps=20)
  tx = optimizer.create_optimizer(ml_collections.ConfigDict(dict(
      momentum=0.9, nesterov=True, weight_decay=5e-4, weight_decay_mode='l2',
      weight_decay_on='all')), lr)

  def compiled(dp):
    model = models.ResNet(depth=8, bn_axis_name=dp.axis_name)
    return model, dp.train_step(functools.partial(
        steps.train_step, learning_rate_fn=lr)), dp.eval_step(steps.eval_step)

  model, train_step, eval_step = compiled(dp)
  state = dp.put_state(steps.create_train_state(
      jax.random.key(0), model, tx, IMAGE_SHAPE))
  rng = np.random.default_rng(0)
  history = []
  for i in range(num_steps):
    if i == 1 and switch_to:
      saved = jax.device_get(dp.get_state(state))
      dp = parallel.DataParallel(switch_to)
      model, train_step, eval_step = compiled(dp)
      # As a restore fills the new layout's state: its model, the saved arrays.
      state = dp.put_state(saved.replace(apply_fn=model.apply))
    batch = {'image': rng.normal(size=(batch_size, *IMAGE_SHAPE)).astype(
        np.float32), 'label': rng.integers(0, 10, batch_size).astype(np.int32)}
    state, metrics = train_step(state, dp.put_batch(batch), jax.random.key(i))
    history.append(metrics)
  history.append(eval_step(state, dp.put_batch(batch)))
  return jax.device_get(dp.get_state(state)), jax.device_get(history)


@pytest.fixture(scope='module')
def single_device():
  return run('jit')


@pytest.mark.parametrize('mode, switch_to', [
    ('sharded', None), ('pmap', None), ('shard_map', None),
    # Resuming in another layout: the state as a checkpoint holds it.
    ('pmap', 'sharded'), ('sharded', 'pmap'), ('sharded', 'jit')])
def test_data_parallel_step_equals_the_single_device_step(
    mode, switch_to, single_device):
  assert jax.device_count() == 8
  state, history = run(mode, switch_to=switch_to)
  want_state, want_history = single_device
  # Float32 sums in another order (oracle.float32_atol derives the bound):
  # 2 steps, reductions over at most batch x height x width = 16 x 8 x 8.
  close = functools.partial(assert_float32_close, reduction_size=16 * 8 * 8,
                            num_steps=2)
  close(state.params, want_state.params)
  close(state.batch_stats, want_state.batch_stats)
  close(state.opt_state, want_state.opt_state)
  assert int(state.step) == int(want_state.step) == 2
  close(history, want_history)


def test_batch_stats_are_identical_on_every_device():
  dp = parallel.DataParallel('pmap')
  model = models.ResNet(depth=8, bn_axis_name=dp.axis_name)
  state = dp.put_state(steps.create_train_state(
      jax.random.key(0), model, optimizer.create_optimizer(
          ml_collections.ConfigDict(dict(
              momentum=0.9, nesterov=False, weight_decay=0.0,
              weight_decay_mode='l2', weight_decay_on='all')),
          lambda step: 0.1), IMAGE_SHAPE))
  rng = np.random.default_rng(1)
  # Each device sees a differently distributed slice of the batch.
  images = rng.normal(size=(GLOBAL_BATCH, *IMAGE_SHAPE)) * np.arange(
      1, GLOBAL_BATCH + 1)[:, None, None, None]
  batch = {'image': images.astype(np.float32),
           'label': np.zeros(GLOBAL_BATCH, np.int32)}
  step = dp.train_step(functools.partial(
      steps.train_step, learning_rate_fn=lambda step: 0.1))
  state, _ = step(state, dp.put_batch(batch), jax.random.key(0))
  for leaf in jax.tree.leaves((state.batch_stats, state.params)):
    np.testing.assert_array_equal(np.asarray(leaf), np.asarray(leaf)[:1].repeat(
        8, axis=0))


def test_train_step_donates_the_state():
  dp = parallel.DataParallel('jit')
  state = dp.put_state(steps.create_train_state(
      jax.random.key(0), models.ResNet(depth=8), optimizer.create_optimizer(
          ml_collections.ConfigDict(dict(
              momentum=0.9, nesterov=False, weight_decay=0.0,
              weight_decay_mode='l2', weight_decay_on='all')),
          lambda step: 0.1), IMAGE_SHAPE))
  step = dp.train_step(functools.partial(
      steps.train_step, learning_rate_fn=lambda step: 0.1))
  batch = {'image': np.zeros((4, *IMAGE_SHAPE), np.float32),
           'label': np.zeros(4, np.int32)}
  old_kernel = state.params['head']['kernel']
  step(state, dp.put_batch(batch), jax.random.key(0))
  assert old_kernel.is_deleted()


def test_unknown_parallelism_is_rejected():
  with pytest.raises(ValueError, match="unknown parallelism 'dp'"):
    parallel.DataParallel('dp')


def test_single_device_mode_uses_one_device_and_no_axis():
  dp = parallel.DataParallel('jit')
  assert dp.num_devices == 1 and dp.axis_name is None
  assert parallel.DataParallel('pmap').num_devices == 8


def test_the_sharded_layout_splits_the_batch_and_xla_reduces_it():
  dp = parallel.DataParallel('sharded')
  assert dp.num_devices == 8 and dp.axis_name is None
  batch = dp.put_batch({'image': np.zeros((GLOBAL_BATCH, *IMAGE_SHAPE),
                                          np.float32)})
  assert [s.data.shape[0] for s in batch['image'].addressable_shards] == [
      GLOBAL_BATCH // 8] * 8
  state = dp.put_state({'w': np.ones(3, np.float32)})
  assert state['w'].sharding.is_fully_replicated
  # A step written for one device: the partitioner adds the all-reduce.
  step = dp.eval_step(lambda state, batch, axis_name: {
      'sum': (batch['image'].mean() * state['w']).sum()})
  assert 'all-reduce' in step.lower(state, batch).compile().as_text()
  assert step(state, batch)['sum'].sharding.is_fully_replicated


def test_cpu_devices_are_the_most_cores_the_batch_sizes_divide_over():
  assert parallel.cpu_device_count(2, [128, 500]) == 2
  assert parallel.cpu_device_count(3, [128, 500]) == 2
  assert parallel.cpu_device_count(16, [128, 500]) == 4
  assert parallel.cpu_device_count(8, [96, 48]) == 8
  assert parallel.cpu_device_count(7, [127]) == 1


def test_a_fresh_process_gets_one_cpu_device_per_core():
  # conftest has already started JAX with 8 devices here: ask a new process.
  code = '''
import os
os.environ.pop('XLA_FLAGS', None)
import jax
from configs import default
from resnet_jax.run import parallel
config = default.get_config()
expected = parallel.cpu_device_count(len(os.sched_getaffinity(0)), [128, 500])
assert parallel.configure_cpu_devices(config) == expected, expected
assert jax.device_count() == expected, jax.devices()
config.cpu_devices = 1  # Too late now: the backend has started.
assert parallel.configure_cpu_devices(config) is None
print('ok', expected)
'''
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
  assert result.returncode == 0, result.stderr[-2000:]
  assert result.stdout.startswith('ok ')
