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
another process count, another fusion); `float64_steps` replays steps in
float64 and measures, for each value of the state, the magnitude of the
terms it was summed from, which that tolerance is proportional to.
"""

import functools
import math

from flax import linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import smoke
from resnet_jax.core import augment
from resnet_jax.core import models
from resnet_jax.core import optimizer
from resnet_jax.core import schedules
from resnet_jax.core import steps
from resnet_jax.data import batching
from resnet_jax.data import datasets
from resnet_jax.run import experiment
from resnet_jax.run import parallel
from resnet_jax.run import runs

IMAGE_SHAPE = (8, 8, 3)
NUM_EXAMPLES = 64
EPS32 = float(np.finfo(np.float32).eps)  # 2^-23: twice float32's unit roundoff.


def float32_atol(leaf, reduction_size: int, num_steps: int = 1,
                 scale=None) -> float:
  """Absolute tolerance for one leaf of two float32 results whose sums over
  up to `reduction_size` terms were taken in other orders.

  `scale`: per entry of the leaf, the sum of the magnitudes of the terms it
  was summed from (float64_steps measures it); without it, the leaf itself,
  which is that sum only where no terms cancel (a loss, a parameter).

  Derivation. A float32 sum s = x_1 + ... + x_n taken as a tree (XLA's
  reductions, a sum per device then across devices) is within
  ceil(log2 n) u sum|x_i| of the exact sum, u = 2^-24; two such orders
  differ by at most twice that. The bound is in sum|x_i|, not |s|: a
  batch-norm bias gradient, a sum of 16 x 32 x 32 terms of both signs, and
  the momentum buffer that adds them up can be near zero while their
  rounding is that of their terms. Each value of a step (activation, batch
  statistic, gradient entry) is such a sum; each x_i carries the relative
  error of the reductions before it, forward and backward through the
  network: counted as ceil(log2 n) more reductions (at least 10 here, more
  than the layers a ResNet-8 or -20 value passes through), so one step
  leaves an entry within 2 ceil(log2 n)^2 u sum|x_i|. Over several steps
  the errors add up (the step is close to an isometry at these learning
  rates), and the scale that float64_steps carries from step to step (the
  terms of a momentum buffer are the gradients it adds up, each with its
  own terms) bounds each step's: num_steps x 2 ceil(log2 n)^2 u x scale,
  with the largest scale of the leaf (the errors of one entry feed all the
  others in the next step). Nothing in it depends on the CPU's SIMD width:
  any order of the sums is within it. Not covered: a ReLU whose input is
  within rounding of zero may take the other branch in one of the two
  computations, which moves a gradient entry by a whole term (seen once:
  two processes with XLA:CPU's multi-output fusion, issue 34).
  Measured (test_oracle.py, one step, n = 1024): at most 12 u max|leaf|,
  against 200 u max|leaf| allowed.
  """
  log_n = math.ceil(math.log2(max(reduction_size, 2)))
  scale = leaf if scale is None else scale
  scale = float(np.max(np.abs(np.asarray(scale, np.float64)), initial=0.0))
  return num_steps * 2 * log_n ** 2 * (EPS32 / 2) * max(scale, 1e-30)


def assert_float32_close(actual, expected, reduction_size: int,
                         num_steps: int = 1, scales=None):
  """Every leaf of `actual` within float32_atol of `expected`'s leaf (with
  `scales`' leaf as its scale, when given: a tree like `expected`)."""
  def check(path, a, e, scale=None):
    e = np.asarray(e, np.float64)
    np.testing.assert_allclose(
        np.asarray(a, np.float64), e, rtol=0,
        atol=float32_atol(e, reduction_size, num_steps, scale),
        err_msg=jax.tree_util.keystr(path))
  if scales is None:
    jax.tree_util.tree_map_with_path(check, actual, expected)
  else:
    jax.tree_util.tree_map_with_path(check, actual, expected, scales)


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


def _trainer_call(c, ds, state, step: int, mode: str):
  """(experiment, its placed state, the batch of step `step`)."""
  exp = experiment.build(c, dp=parallel.DataParallel(mode), train_ds=ds)
  # The arrays of `state` in the trainer's own state: its model (the one of
  # this layout) and optimizer.
  state = steps.TrainState(
      step=state.step, apply_fn=exp.model.apply,
      params=state.params, batch_stats=state.batch_stats, tx=exp.tx,
      opt_state=state.opt_state)
  placed = exp.dp.put_state(runs.stack([state]))
  return exp, placed, next(exp.batches([(step, 1)]))


def trainer_step(c, ds, state, step: int, mode: str = 'jit'):
  """Step `step` of the trainer's compiled steps from one run's `state`
  (at_step(..., step)): (new state, metric sums)."""
  exp, placed, batch = _trainer_call(c, ds, state, step, mode)
  new_state, sums = exp.train_steps(placed, batch, step)
  new_state = _host_copy(runs.take(exp.dp.get_state(new_state), 0))
  sums = _host_copy(jax.tree.map(lambda x: x[0, 0], sums))
  return new_state, sums


def trainer_program(c, ds, state, step: int, mode: str = 'jit') -> str:
  """The program (StableHLO text, before XLA's passes) of trainer_step."""
  exp, placed, batch = _trainer_call(c, ds, state, step, mode)
  return jax.jit(lambda s, b: exp.train_steps(s, b, step)).lower(
      placed, batch).as_text()


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
                           std=c.data.std, data=c.data)
  return batch, np.asarray(images)


def _hand_call(c, ds):
  """(compiled step, `args(state, k)`: its arguments for step k)."""
  model, lr, tx = hand_parts(c, ds.num_examples)
  step_fn = jax.jit(functools.partial(
      steps.train_step, learning_rate_fn=lr,
      label_smoothing=c.label_smoothing,
      augment_fn=functools.partial(
          augment.augment, mean=c.data.mean, std=c.data.std, data=c.data)))

  def args(state, k):
    batch, _ = hand_batch(c, ds, k)
    hand_state = steps.TrainState(
        step=state.step, apply_fn=model.apply, params=state.params,
        batch_stats=state.batch_stats, tx=tx, opt_state=state.opt_state)
    return hand_state, batch, step_key(c, k)

  return step_fn, args


def hand_steps(c, ds):
  """`step(state, k)`: step k driven by hand from the config, from a state
  at step k: (new state, metric sums)."""
  step_fn, args = _hand_call(c, ds)

  def step(state, k):
    new_state, sums = step_fn(*args(state, k))
    return _host_copy(new_state), _host_copy(sums)

  return step


def hand_program(c, ds, state, step: int) -> str:
  """The compiled program (XLA's text) of hand_step's step `step`."""
  step_fn, args = _hand_call(c, ds)
  return step_fn.lower(*args(state, step)).compile().as_text()


def hand_step(c, ds, state, step: int):
  """Step `step` driven by hand from the config: (new state, metric sums)."""
  return hand_steps(c, ds)(state, step)


# ----------------------------------------------------------------------------
# The magnitude of the terms each value of the state is summed from.

# The layers whose parameters' gradients are sums over the batch and the
# positions of an image: every parameter of a ResNet is in one of them.
_SUMMED = (nn.Conv, nn.Dense, nn.BatchNorm)


def _sown(module, collection, name, value):
  module.sow(collection, name, value, init_fn=lambda: None,
             reduce_fn=lambda _, v: v)


def _record_layers(next_fun, args, kwargs, context):
  """(flax interceptor) Sows each layer's input and perturbs its output: the
  gradient of the perturbation is the loss's cotangent at that output."""
  module = context.module
  if context.method_name != '__call__' or not isinstance(module, _SUMMED):
    return next_fun(*args, **kwargs)
  _sown(module, 'terms', 'input', args[0])
  return module.perturb('output', next_fun(*args, **kwargs))


def _sum_of_term_magnitudes(next_fun, args, kwargs, context):
  """(flax interceptor) Sows <|cotangent|, layer(|input|)> per layer, with
  the layer's parameters: its gradient with respect to a kernel is
  sum |input| |cotangent| over the batch and the positions, the sum of the
  magnitudes of the terms of the kernel's gradient (a layer is linear in its
  kernel); for a bias sum |cotangent|; for a batch norm's scale
  sum |x_hat| |cotangent|."""
  module = context.module
  if (context.method_name != '__call__' or not isinstance(module, _SUMMED) or
      not module.has_variable('inputs', 'input')):  # (The clone below.)
    return next_fun(*args, **kwargs)
  x = jax.lax.stop_gradient(module.get_variable('inputs', 'input'))
  cotangent = jnp.abs(module.get_variable('cotangents', 'output'))
  if isinstance(module, nn.BatchNorm):
    axes = tuple(range(x.ndim - 1))
    x_hat = jnp.abs(x - x.mean(axes)) / jnp.sqrt(x.var(axes) + module.epsilon)
    out = jnp.zeros_like(x)
    if module.use_scale:
      out = out + module.get_variable('params', 'scale') * x_hat
    if module.use_bias:
      out = out + module.get_variable('params', 'bias')
  else:  # The layer alone, with its own parameters, on |x|.
    layer = module.clone(parent=None)
    out = layer.apply({'params': module.variables['params']}, jnp.abs(x),
                      *args[1:], **kwargs)
  _sown(module, 'terms', 'total', jnp.sum(cotangent * out))
  return next_fun(*args, **kwargs)


def gradient_terms(model, label_smoothing: float):
  """`terms(params, batch_stats, images, labels)`: for each gradient entry
  of the mean loss, the sum of the magnitudes of its terms (a tree like
  params), and each layer's input (a tree by layer)."""
  def terms(params, batch_stats, images, labels):
    variables = {'params': params, 'batch_stats': batch_stats}
    with nn.intercept_methods(_record_layers):
      _, first = model.apply(variables, images, train=True,
                             mutable=['batch_stats', 'perturbations', 'terms'])

    def loss(perturbations):
      with nn.intercept_methods(_record_layers):
        logits, _ = model.apply(variables | {'perturbations': perturbations},
                                images, train=True,
                                mutable=['batch_stats', 'terms'])
      return jnp.mean(steps.cross_entropy(logits, labels, label_smoothing))

    cotangents = jax.grad(loss)(first['perturbations'])

    def total(params):
      with nn.intercept_methods(_sum_of_term_magnitudes):
        _, sown = model.apply(
            {'params': params, 'batch_stats': batch_stats,
             'inputs': first['terms'], 'cotangents': cotangents},
            images, train=True, mutable=['batch_stats', 'terms'])
      return sum(jax.tree.leaves(sown['terms']))

    return jax.grad(total)(params), first['terms']

  return jax.jit(terms)


def _statistics_terms(scales, inputs, momentum: float):
  """The running averages' scales after a step: running = m running +
  (1 - m) batch, with the batch mean's terms |x| / n and the batch
  variance's (mean(x^2) - mean(x)^2, Flax's) x^2 / n and mean(x)^2."""
  def one(path, scale):
    layer = inputs
    for key in path[:-1]:
      layer = layer[key.key]
    x = layer['input']
    axes = tuple(range(x.ndim - 1))
    batch = (jnp.abs(x).mean(axes) if path[-1].key == 'mean' else
             (x * x).mean(axes) + x.mean(axes) ** 2)
    return momentum * scale + (1 - momentum) * batch
  return jax.tree_util.tree_map_with_path(one, scales)


def float64_steps(c, ds, state, num_steps: int, first: int = 0):
  """Steps first .. first + num_steps - 1 from `state` (at step `first`)
  driven by hand (as hand_steps)
  in float64, and the magnitude of the terms of each value they reach:
  (state, scales), `scales` a dict of params, batch_stats and opt_state,
  each a tree like the state's part, for float32_atol.

  The scales are carried from step to step: a gradient entry's from its
  terms (gradient_terms); the optimizer's (SGD: linear in the gradient,
  the momentum buffer and the parameters, with coefficients >= 0) by the
  same optimizer applied to the scales, so that a momentum buffer's scale
  sums its gradients' scales; a parameter's is |parameter| plus the scales
  of every update added to it; a running average's as _statistics_terms.
  """
  model_config = ml_collections.ConfigDict(c.model.to_dict())
  model_config.dtype = 'float64'
  # The batches as the trainer draws them: with 64-bit types on, JAX's
  # random draws (the crops, the flips) would be others.
  batches = [hand_batch(c, ds, k) for k in range(first, first + num_steps)]
  with jax.enable_x64(True):
    model = models.create_model(model_config)
    total = batching.total_steps(c, ds.num_examples)
    lr = schedules.create_learning_rate_fn(c.schedule, c.batch_size, total)
    tx = optimizer.create_optimizer(c.optimizer, lr)
    as64 = lambda tree: jax.tree.map(
        lambda x: np.asarray(x, np.float64)
        if np.issubdtype(np.asarray(x).dtype, np.floating) else np.asarray(x),
        tree)
    state = steps.TrainState(
        step=np.asarray(state.step), apply_fn=model.apply,
        params=as64(state.params), batch_stats=as64(state.batch_stats),
        tx=tx, opt_state=as64(state.opt_state))
    step_fn = jax.jit(functools.partial(
        steps.train_step, learning_rate_fn=lr,
        label_smoothing=c.label_smoothing))
    terms = gradient_terms(model, c.label_smoothing)
    absolute = lambda tree: jax.tree.map(np.abs, tree)
    scales = {'params': absolute(state.params),
              'batch_stats': absolute(state.batch_stats),
              'opt_state': absolute(state.opt_state)}
    added = jax.tree.map(np.zeros_like, state.params)
    for k, (batch, images) in enumerate(batches, start=first):
      grad_scales, inputs = terms(state.params, state.batch_stats, images,
                                  batch['label'])
      updates, scales['opt_state'] = tx.update(
          grad_scales, scales['opt_state'], absolute(state.params))
      added = jax.tree.map(lambda a, u: a + np.abs(u), added, updates)
      scales['batch_stats'] = _statistics_terms(
          scales['batch_stats'], inputs, c.model.bn_momentum)
      state, _ = step_fn(state, {'image': images, 'label': batch['label']},
                         step_key(c, k))
      scales['params'] = jax.tree.map(lambda p, a: np.abs(p) + a,
                                      state.params, added)
    return _host_copy(state), _host_copy(scales)
