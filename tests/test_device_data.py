"""The training split on the devices gives exactly the host batches' steps."""

import functools

import jax
import ml_collections
import numpy as np
import pytest

from resnet_jax.core import augment, models
from resnet_jax.core import optimizer, steps
from resnet_jax.data import batching, datasets
from resnet_jax.run import parallel

GLOBAL_BATCH = 16


@pytest.fixture(scope='module')
def dataset():
  rng = np.random.default_rng(0)
  return datasets.InMemoryDataset(
      images=rng.integers(0, 256, (50, 8, 8, 3), dtype=np.uint8),
      labels=rng.integers(0, 10, 50).astype(np.int32),
      class_names=tuple('abcdefghij'))


def _train(mode, dataset, on_device, num_steps=4):
  dp = parallel.DataParallel(mode)
  tx = optimizer.create_optimizer(ml_collections.ConfigDict(dict(
      momentum=0.9, nesterov=False, weight_decay=5e-4, weight_decay_mode='l2',
      weight_decay_on='all')), lambda step: 0.1)
  state = dp.put_state(steps.create_train_state(
      jax.random.key(0), models.ResNet(depth=8, bn_axis_name=dp.axis_name),
      tx, (8, 8, 3)))
  step_fn = functools.partial(
      steps.train_step, learning_rate_fn=lambda step: 0.1,
      augment_fn=functools.partial(
          augment.augment, mean=(120.,) * 3, std=(60.,) * 3,
          data=ml_collections.ConfigDict(dict(crop_padding=2,
                                              random_flip=True))))
  if on_device:
    data = (batching.place(dataset, dp),)
    train_step = dp.train_step(batching.gathering(step_fn), with_data=True)
    batch = lambda **source: {'rows': batching.train_rows(
        dataset.num_examples, **source).astype(np.int32)}
  else:
    data = ()
    train_step = dp.train_step(step_fn)
    batch = functools.partial(batching.train_batch, dataset)
  history = []
  for step in range(num_steps):
    batch_of_step = batch(seed=1, step=step, global_batch_size=GLOBAL_BATCH)
    state, metrics = train_step(state, dp.put_batch(batch_of_step),
                                jax.random.key(step), *data)
    history.append(metrics)
  state = dp.get_state(state)
  return jax.device_get((state.step, state.params, state.batch_stats,
                         state.opt_state, history))


@pytest.mark.slow
@pytest.mark.parametrize('mode', ['sharded', 'jit', 'pmap', 'shard_map'])
def test_training_on_device_data_is_bit_identical_to_host_batches(
    mode, dataset):
  want = _train(mode, dataset, on_device=False)
  got = _train(mode, dataset, on_device=True)
  jax.tree.map(np.testing.assert_array_equal, got, want)


@pytest.mark.parametrize('mode', ['sharded', 'shard_map'])
def test_the_data_is_on_every_device_once(mode):
  dp = parallel.DataParallel(mode)
  data = batching.place(datasets.InMemoryDataset(
      images=np.zeros((10, 4, 4, 3), np.uint8),
      labels=np.zeros(10, np.int32), class_names=('a',)), dp)
  assert data['image'].sharding.is_fully_replicated
  assert data['image'].sharding.device_set == set(jax.devices())
