"""An oracle for the trainer's step that shares none of its wiring.

`trainer_step` calls the trainer's own compiled step (experiment.build, the
layout's `train_steps`, the batches it prefetches). `hand_step` drives the
pure pieces by hand from the config, as the README and experiment.py
document them: the model from `models.create_model(config.model)`, the
schedule and optimizer from their config blocks, the batch of (seed, step)
from batching.train_batch, the step's key `fold_in(split(key(seed))[1],
step)` (purpose 1 of the seed's key: augmentation), the images augmented
with the config's padding, flip, mean and std, the loss with its smoothing.
A config field the trainer drops or miswires makes the two disagree.

`float32_atol` is the tolerance for comparing two float32 computations of
the same values whose reductions are summed in other orders (another layout,
another process count, another fusion).
"""

import functools
import math

import jax
import numpy as np

from configs import smoke
from resnet_jax import augment
from resnet_jax import batching
from resnet_jax import datasets
from resnet_jax import experiment
from resnet_jax import models
from resnet_jax import optimizer
from resnet_jax import parallel
from resnet_jax import runs
from resnet_jax import schedules
from resnet_jax import steps

IMAGE_SHAPE = (8, 8, 3)
NUM_EXAMPLES = 64
EPS32 = float(np.finfo(np.float32).eps)  # 2^-23: twice float32's unit roundoff.


def float32_atol(leaf, reduction_size: int, num_steps: int = 1) -> float:
  """Absolute tolerance for one leaf of two float32 results whose sums over
  up to `reduction_size` terms were taken in other orders.

  Derivation. A float32 sum of n terms taken as a tree (XLA's reductions,
  a sum per device then across devices) is within ceil(log2 n) u sum|x_i|
  of the exact sum, u = 2^-24; two such orders differ by at most twice
  that. Each value of a step (activation, batch statistic, gradient entry)
  is such a sum, and here sum|x_i| stays within a small factor of the
  largest entry of its leaf (the activations are batch-normalised), so one
  reduction leaves the entries within 2 ceil(log2 n) u max|leaf|. A value
  inherits the error of the reductions before it, forward and backward
  through the network: counted as ceil(log2 n) more reductions (at least
  10 here, more than the layers a ResNet-8 or -20 value passes through).
  Over several steps the errors add up (the step is close to an isometry
  at these learning rates): 2 ceil(log2 n)^2 u max|leaf| per step.
  Measured (test_oracle.py, one step, n = 1024): at most 12 u max|leaf|,
  against 200 u max|leaf| allowed.
  """
  log_n = math.ceil(math.log2(max(reduction_size, 2)))
  scale = float(np.max(np.abs(np.asarray(leaf, np.float64)), initial=0.0))
  return num_steps * 2 * log_n ** 2 * (EPS32 / 2) * max(scale, 1e-30)


def assert_float32_close(actual, expected, reduction_size: int,
                         num_steps: int = 1):
  """Every leaf of `actual` within float32_atol of `expected`'s leaf."""
  def check(path, a, e):
    e = np.asarray(e, np.float64)
    np.testing.assert_allclose(
        np.asarray(a, np.float64), e, rtol=0,
        atol=float32_atol(e, reduction_size, num_steps),
        err_msg=jax.tree_util.keystr(path))
  jax.tree_util.tree_map_with_path(check, actual, expected)


def dataset(seed: int = 0) -> datasets.InMemoryDataset:
  """64 random 8x8 uint8 images of 10 classes, as a loaded split."""
  rng = np.random.default_rng(seed)
  return datasets.InMemoryDataset(
      images=rng.integers(0, 256, (NUM_EXAMPLES, *IMAGE_SHAPE), np.uint8),
      labels=rng.integers(0, 10, NUM_EXAMPLES).astype(np.int32),
      class_names=tuple(f'c{i}' for i in range(10)), source='oracle')


def config(**overrides):
  """The smoke config with a value other than the default in every field
  that changes the step; `overrides` ({'dotted.field': value}) on top."""
  c = smoke.get_config()
  c.seed = 3
  c.batch_size = 16
  c.eval_batch_size = 16
  c.num_train_steps = 20
  c.label_smoothing = 0.1
  c.data.crop_padding = 2
  c.data.random_flip = True
  c.data.mean = (110.0, 100.0, 90.0)
  c.data.std = (50.0, 60.0, 70.0)
  c.model.bn_momentum = 0.7
  c.model.bn_epsilon = 1e-2
  c.optimizer.momentum = 0.8
  c.optimizer.nesterov = True
  c.optimizer.weight_decay = 5e-3
  c.optimizer.weight_decay_mode = 'decoupled'
  c.optimizer.weight_decay_on = 'kernels'
  c.schedule.name = 'warmup_cosine'
  c.schedule.base_learning_rate = 0.4
  c.schedule.warmup_steps = 1  # 8 steps at batch 16.
  for field, value in overrides.items():
    *blocks, name = field.split('.')
    target = c
    for block in blocks:
      target = target[block]
    target[name] = value
  return c


def initial_state(c, ds):
  """One run's freshly initialised state (the trainer's), on the host."""
  exp = experiment.build(c, dp=parallel.DataParallel('jit'), train_ds=ds)
  return _host_copy(runs.take(exp.init_state(), 0))


def _host_copy(tree):
  # NumPy copies: on a CPU, jax.device_get may return views of device
  # buffers, which a later step that donates them would overwrite.
  return jax.tree.map(np.array, jax.device_get(tree))


def at_step(state, step: int, seed: int = 1):
  """`state` as at `step`: its step counter and the schedule's count (the
  optimizer state's scalars) at `step`, and a non-zero momentum buffer, so
  that momentum and Nesterov act on the step."""
  rng = np.random.default_rng(seed)
  return state.replace(
      step=np.asarray(step, np.int32),
      opt_state=jax.tree.map(
          lambda x: (0.05 * rng.normal(size=np.shape(x))).astype(np.float32)
          if np.ndim(x) else np.asarray(step, np.asarray(x).dtype),
          state.opt_state))


def trainer_step(c, ds, state, step: int, mode: str = 'jit'):
  """Step `step` of the trainer's compiled steps from one run's `state`
  (at_step(..., step)): (new state, metric sums)."""
  exp = experiment.build(c, dp=parallel.DataParallel(mode), train_ds=ds)
  # The arrays of `state` in the trainer's own state: its model (the one of
  # this layout) and optimizer.
  state = steps.TrainState(
      step=state.step, apply_fn=exp.model.apply,
      params=state.params, batch_stats=state.batch_stats, tx=exp.tx,
      opt_state=state.opt_state)
  placed = exp.dp.put_state(runs.stack([state]))
  batches = exp.batches([(step, 1)])
  new_state, sums = exp.train_steps(placed, next(batches), step)
  new_state = _host_copy(runs.take(exp.dp.get_state(new_state), 0))
  sums = _host_copy(jax.tree.map(lambda x: x[0, 0], sums))
  return new_state, sums


def hand_parts(c, num_examples: int = NUM_EXAMPLES):
  """(model, learning-rate function, optimizer) made from the config."""
  total = batching.total_steps(c, num_examples)
  lr = schedules.create_learning_rate_fn(c.schedule, c.batch_size, total)
  return (models.create_model(c.model), lr,
          optimizer.create_optimizer(c.optimizer, lr))


def step_key(c, step: int) -> jax.Array:
  """The documented key of training step `step`: purpose 1 (augmentation)
  of the seed's key, folded with the step."""
  return jax.random.fold_in(jax.random.split(jax.random.key(c.seed))[1], step)


def hand_batch(c, ds, step: int):
  """The global batch of `step` as uint8 pixels, and its augmented images."""
  batch = batching.train_batch(ds, seed=c.seed, step=step,
                               global_batch_size=c.batch_size)
  keys = augment.example_keys(step_key(c, step), c.batch_size, None)
  images = augment.augment(batch['image'], keys, mean=c.data.mean,
                           std=c.data.std, padding=c.data.crop_padding,
                           flip=c.data.random_flip)
  return batch, np.asarray(images)


def hand_steps(c, ds):
  """`step(state, k)`: step k driven by hand from the config, from a state
  at step k: (new state, metric sums)."""
  model, lr, tx = hand_parts(c, ds.num_examples)
  step_fn = jax.jit(functools.partial(
      steps.train_step, learning_rate_fn=lr,
      label_smoothing=c.label_smoothing,
      augment_fn=functools.partial(
          augment.augment, mean=c.data.mean, std=c.data.std,
          padding=c.data.crop_padding, flip=c.data.random_flip)))

  def step(state, k):
    batch, _ = hand_batch(c, ds, k)
    hand_state = steps.TrainState(
        step=state.step, apply_fn=model.apply, params=state.params,
        batch_stats=state.batch_stats, tx=tx, opt_state=state.opt_state)
    new_state, sums = step_fn(hand_state, batch, step_key(c, k))
    return _host_copy(new_state), _host_copy(sums)

  return step


def hand_step(c, ds, state, step: int):
  """Step `step` driven by hand from the config: (new state, metric sums)."""
  return hand_steps(c, ds)(state, step)
