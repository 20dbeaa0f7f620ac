"""The trainer's compiled step against oracles that share none of its wiring.

One step (step 5, inside the warm-up, with a non-zero momentum buffer) of
the trainer's own compiled step (experiment.build, each layout of
parallel.MODES) on the smoke config with a value other than the default in
every field that changes the step (oracle.config), compared with:

- the pure step driven by hand from the config (oracle.hand_step), to
  float32 rounding: the trainer wires the config, the batch and the key as
  documented;
- a float64 computation of what each field should do: the images of the
  batch, the forward pass and batch-norm update of the independent NumPy
  reference (reference.py) with the config's momentum and epsilon, the loss
  with the config's label smoothing, the gradient of the float64 model that
  `models.create_model` builds from the config, and the optimizer's update
  (SGD, Nesterov, decoupled weight decay on kernels) and the learning rate
  of the warm-up written out here. Each test also checks that the default
  value of its field would have given a result outside the tolerance, so a
  field the trainer drops fails it.
"""

import re

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax
import pytest

from resnet_jax.core import augment, models
from resnet_jax.run import parallel
import oracle
import reference

STEP = 5
# float32 against float64, per leaf, relative to its largest entry: the
# float32 gradients of a ResNet-8 through batch norm are within ~1e-6 of
# that (test_steps.py); the statistics and the loss within ~1e-6 too.
REL = 1e-4
# The operand types of each convolution in a program's StableHLO text.
_CONVOLUTION_OPERANDS = re.compile(
    r'stablehlo\.convolution.*: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)')


@pytest.fixture(scope='module')
def setup():
  c = oracle.config()
  ds = oracle.dataset()
  state = oracle.at_step(oracle.initial_state(c, ds), STEP)
  return c, ds, state


@pytest.fixture(scope='module')
def trainer(setup):
  """`trainer(mode)`: (new state, sums) of the trainer's step in a layout,
  compiled once per module."""
  c, ds, state = setup
  done = {}

  def step(mode):
    if mode not in done:
      done[mode] = oracle.trainer_step(c, ds, state, STEP, mode)
    return done[mode]

  return step


@pytest.fixture(scope='module')
def hand(setup):
  c, ds, state = setup
  return oracle.hand_step(c, ds, state, STEP)


@pytest.fixture(scope='module')
def scales(setup):
  """The magnitude of the terms each value of the step is summed from."""
  c, ds, state = setup
  return oracle.float64_steps(c, ds, state, 1, first=STEP)[1]


def test_the_initial_state_is_the_one_the_seed_documents(setup):
  c, ds, _ = setup
  model, _, _ = oracle.hand_parts(c)
  key = jax.random.split(jax.random.key(c.seed))[0]  # Purpose 0: init.
  variables = jax.jit(model.init, static_argnames='train')(
      key, jnp.zeros((1, *oracle.IMAGE_SHAPE)), train=False)
  jax.tree.map(np.testing.assert_array_equal,
               oracle.initial_state(c, ds).params, variables['params'])


@pytest.mark.parametrize('mode', parallel.MODES)
def test_the_trainers_step_equals_the_pure_step_driven_by_hand(
    mode, trainer, hand, scales):
  got_state, got = trainer(mode)
  want_state, want = hand
  # One step; the largest reduction is a batch-norm statistic or a kernel
  # gradient over batch x height x width = 16 x 8 x 8 terms, each value
  # within the bound of the magnitude of its own terms.
  n = 16 * 8 * 8
  for part in ('params', 'batch_stats', 'opt_state'):
    oracle.assert_float32_close(getattr(got_state, part),
                                getattr(want_state, part), n,
                                scales=scales[part])
  assert int(got_state.step) == int(want_state.step) == STEP + 1
  assert float(got['count']) == float(want['count']) == 16
  assert float(got['correct']) == float(want['correct'])
  np.testing.assert_allclose(got['loss'], want['loss'], rtol=0,
                             atol=oracle.float32_atol(want['loss'], n))
  assert float(got['learning_rate']) == float(want['learning_rate'])


# ----------------------------------------------------------------------------
# What each field should do, in float64.


def _smoothed_cross_entropy(logits, labels, smoothing):
  """Per example, in NumPy: -(targets . log_softmax), targets (1 - s) one-hot
  + s / classes."""
  logits = np.asarray(logits, np.float64)
  log_p = logits - logits.max(-1, keepdims=True)
  log_p = log_p - np.log(np.exp(log_p).sum(-1, keepdims=True))
  classes = logits.shape[-1]
  targets = (1 - smoothing) * np.eye(classes)[labels] + smoothing / classes
  return -(targets * log_p).sum(-1)


def _forward64(c, state, images, **overrides):
  """reference.forward in train mode with the config's batch norm."""
  kwargs = dict(depth=c.model.depth, train=True,
                momentum=c.model.bn_momentum, epsilon=c.model.bn_epsilon)
  return reference.forward(state.params, state.batch_stats, images,
                           **kwargs | overrides)


def _images(c, ds, **data_overrides):
  data = ml_collections.ConfigDict(c.data.to_dict())
  data.update(data_overrides)
  other = ml_collections.ConfigDict(c.to_dict())
  other.data = data
  return oracle.hand_batch(other, ds, STEP)


def _gradient64(c, state, images, labels):
  """The float64 gradient of the mean smoothed loss, through the model that
  models.create_model builds from the config (in float64)."""
  model_config = ml_collections.ConfigDict(c.model.to_dict())
  model_config.dtype = 'float64'
  with jax.enable_x64(True):
    model = models.create_model(model_config)
    as64 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float64),
                                     tree)

    def loss(params):
      logits, _ = model.apply(
          {'params': params, 'batch_stats': as64(state.batch_stats)},
          jnp.asarray(images, jnp.float64), train=True,
          mutable=['batch_stats'])
      targets = ((1 - c.label_smoothing) * jax.nn.one_hot(labels, 10) +
                 c.label_smoothing / 10)
      return jnp.mean(-jnp.sum(targets * jax.nn.log_softmax(logits), -1))

    grads = jax.jit(jax.grad(loss))(as64(state.params))
    return jax.tree.map(np.asarray, grads)


def _assert_close(actual, expected, rel=REL):
  def check(path, a, e):
    e = np.asarray(e, np.float64)
    np.testing.assert_allclose(
        np.asarray(a, np.float64), e, rtol=0,
        atol=rel * (np.abs(e).max() + 1e-12), err_msg=jax.tree_util.keystr(path))
  jax.tree_util.tree_map_with_path(check, actual, expected)


def _far(a, b, rel=REL) -> bool:
  """Whether some leaf of `a` differs from `b`'s beyond the tolerance."""
  return any(
      np.abs(np.asarray(x, np.float64) - np.asarray(y, np.float64)).max() >
      10 * rel * (np.abs(np.asarray(y, np.float64)).max() + 1e-12)
      for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


@pytest.fixture(scope='module')
def float64(setup):
  c, ds, state = setup
  batch, images = _images(c, ds)
  logits, stats = _forward64(c, state, images)
  return batch, images, logits, stats


def test_label_smoothing_reaches_the_loss(setup, trainer, float64):
  c, _, _ = setup
  batch, _, logits, _ = float64
  _, sums = trainer('jit')
  want = _smoothed_cross_entropy(logits, batch['label'], c.label_smoothing)
  assert float(sums['loss']) == pytest.approx(want.sum(), rel=REL)
  unsmoothed = _smoothed_cross_entropy(logits, batch['label'], 0.0).sum()
  assert abs(unsmoothed - want.sum()) > 10 * REL * want.sum()


@pytest.mark.parametrize('field, default', [
    ('crop_padding', 4), ('random_flip', False),
    ('mean', (125.31, 122.95, 113.87)), ('std', (62.99, 62.09, 66.70))])
def test_augmentation_and_normalisation_reach_the_images(
    setup, trainer, float64, field, default):
  # The images the step saw, through the first batch-norm's running mean
  # and the loss: those of the config's padding, flips, mean and std, not
  # those of another value.
  c, ds, state = setup
  batch, _, logits, stats = float64
  new_state, sums = trainer('jit')
  _assert_close(new_state.batch_stats['stem_bn'], stats['stem_bn'])
  want = _smoothed_cross_entropy(logits, batch['label'], c.label_smoothing)
  assert float(sums['loss']) == pytest.approx(want.sum(), rel=REL)
  _, other_images = _images(c, ds, **{field: default})
  _, other_stats = _forward64(c, state, other_images)
  assert _far(other_stats['stem_bn'], stats['stem_bn'])


@pytest.mark.parametrize('field', ['bn_momentum', 'bn_epsilon'])
def test_batch_norm_momentum_and_epsilon_reach_the_statistics(
    setup, trainer, float64, field):
  c, _, state = setup
  _, images, _, stats = float64
  new_state, _ = trainer('jit')
  _assert_close(new_state.batch_stats, stats)
  default = {'bn_momentum': 0.9, 'bn_epsilon': 1e-5}[field]
  _, other = _forward64(c, state, images,
                        **{field.removeprefix('bn_'): default})
  assert _far(other, stats)


def _kernels(params):
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key == 'kernel', params)


def _update64(c, state, grads, lr, *, mode=None, on=None, decay=None):
  """SGD's new (params, momentum) in float64, written out: optax.trace's
  trace = g + momentum * trace, Nesterov's update g + momentum * trace,
  weight decay added to g ('l2') or to the update ('decoupled')."""
  opt = c.optimizer
  mode = mode or opt.weight_decay_mode
  on = on or opt.weight_decay_on
  decay = opt.weight_decay if decay is None else decay
  mask = (_kernels(state.params) if on == 'kernels' else
          jax.tree.map(lambda _: True, state.params))
  trace = _trace(state.opt_state)
  f64 = lambda x: np.asarray(x, np.float64)

  def one(w, g, t, m):
    w, g, t = f64(w), f64(g), f64(t)
    wd = decay * w * m
    if mode == 'l2':
      g = g + wd
    t = g + opt.momentum * t
    u = g + opt.momentum * t if opt.nesterov else t
    if mode == 'decoupled':
      u = u + wd
    return w - lr * u, t

  out = jax.tree.map(one, state.params, grads, trace, mask)
  is_pair = lambda x: isinstance(x, tuple)
  return (jax.tree.map(lambda p: p[0], out, is_leaf=is_pair),
          jax.tree.map(lambda p: p[1], out, is_leaf=is_pair))


def _trace(opt_state):
  """The momentum buffer in an optimizer state (optax.TraceState)."""
  found = [s.trace for s in jax.tree.leaves(
      opt_state, is_leaf=lambda x: isinstance(x, optax.TraceState))
           if isinstance(s, optax.TraceState)]
  assert len(found) == 1, opt_state
  return found[0]


@pytest.fixture(scope='module')
def gradient64(setup, float64):
  c, _, state = setup
  batch, images, _, _ = float64
  return _gradient64(c, state, images, batch['label'])


def test_the_term_scales_are_the_magnitudes_of_the_gradients_terms(
    setup, float64, gradient64):
  # oracle.gradient_terms: for each gradient entry, sum |terms|. The head's
  # bias has terms |softmax - targets| / batch per example, written out
  # here; every entry's is at least the gradient's magnitude, and a batch
  # norm's bias, a sum of both signs over 16 x 8 x 8 terms, cancels: its
  # gradient is far below its terms' magnitude (the scale a tolerance needs,
  # oracle.float32_atol).
  c, _, state = setup
  batch, images, logits, _ = float64
  model_config = ml_collections.ConfigDict(c.model.to_dict())
  model_config.dtype = 'float64'
  with jax.enable_x64(True):
    terms = oracle.gradient_terms(models.create_model(model_config),
                                  c.label_smoothing)
    as64 = lambda tree: jax.tree.map(lambda x: np.asarray(x, np.float64),
                                     tree)
    scales, _ = terms(as64(state.params), as64(state.batch_stats), images,
                      batch['label'])
    scales = jax.tree.map(np.asarray, scales)
  probabilities = np.exp(logits - logits.max(-1, keepdims=True))
  probabilities /= probabilities.sum(-1, keepdims=True)
  targets = ((1 - c.label_smoothing) * np.eye(10)[batch['label']] +
             c.label_smoothing / 10)
  np.testing.assert_allclose(scales['head']['bias'],
                             np.abs(probabilities - targets).sum(0) / 16,
                             rtol=1e-9)
  jax.tree.map(lambda s, g: np.testing.assert_array_less(
      np.abs(g), s * (1 + 1e-9) + 1e-30), scales, gradient64)
  bias = gradient64['stem_bn']['bias']
  assert np.abs(bias).max() < 0.1 * scales['stem_bn']['bias'].max()


def _warmup_rate(c, step):
  # warmup_cosine: linear from 0 over the warm-up, which lasts
  # warmup_steps * 128 / batch_size steps, to base rate * batch_size / 128.
  scale = c.batch_size / c.schedule.reference_batch_size
  warmup = round(c.schedule.warmup_steps / scale)
  assert step < warmup
  return c.schedule.base_learning_rate * scale * step / warmup


def test_the_schedule_sets_the_rate_of_the_step(setup, trainer):
  c, _, _ = setup
  _, sums = trainer('jit')
  rate = _warmup_rate(c, STEP)
  assert float(sums['learning_rate']) == pytest.approx(rate, rel=1e-6)
  # The default schedule ('paper') would have used the base rate.
  assert rate < 0.9 * c.schedule.base_learning_rate * c.batch_size / 128


@pytest.mark.parametrize('other', [
    {}, {'mode': 'l2'}, {'on': 'all'}, {'decay': 1e-4}, {'lr': 'paper'}],
    ids=['config', 'mode', 'on', 'weight_decay', 'schedule'])
def test_the_optimizer_fields_and_the_rate_reach_the_update(
    setup, trainer, gradient64, other):
  c, _, state = setup
  new_state, _ = trainer('jit')
  # Updates (new - old parameters) are compared, relative to their own
  # largest entry: on the parameters' scale they would hide in rounding.
  moved = lambda params: jax.tree.map(
      lambda a, w: np.asarray(a, np.float64) - w, params, state.params)
  lr = _warmup_rate(c, STEP)
  params, trace = _update64(c, state, gradient64, lr)
  _assert_close(moved(new_state.params), moved(params))
  _assert_close(_trace(new_state.opt_state), trace)
  if other:  # That value instead of the config's would have shown.
    kwargs = dict(other)
    if kwargs.pop('lr', None):  # The default schedule: the base rate.
      lr = c.schedule.base_learning_rate * c.batch_size / 128
    other_params, other_trace = _update64(c, state, gradient64, lr, **kwargs)
    assert _far(moved(other_params), moved(params)) or _far(other_trace,
                                                            trace)


def test_bfloat16_reaches_the_computation(setup):
  # Every convolution of the trainer's step (forward and backward) takes
  # bfloat16 operands, float32 ones under the default dtype.
  c, ds, state = setup
  bf16 = oracle.config(**{'model.dtype': 'bfloat16'})
  for config, dtype in ((bf16, 'bf16'), (c, 'f32')):
    operands = _CONVOLUTION_OPERANDS.findall(
        oracle.trainer_program(config, ds, state, STEP))
    assert operands and set(operands) == {(dtype, dtype)}, operands
  # And its loss stays near float64's: bfloat16 keeps 8 bits of mantissa, so
  # each image and weight moves by at most 2^-9 of itself. (No lower bound:
  # those roundings can cancel in the loss; on an Intel Xeon with
  # avx512_bf16 it moved by 1.3e-5 of itself, within float32's reach.)
  _, sums = oracle.trainer_step(bf16, ds, state, STEP, 'jit')
  batch, images = oracle.hand_batch(bf16, ds, STEP)
  logits, _ = _forward64(c, state, images)
  want = _smoothed_cross_entropy(logits, batch['label'],
                                 c.label_smoothing).sum()
  assert abs(float(sums['loss']) - want) < 8 * 2.0 ** -8 * want


# ----------------------------------------------------------------------------
# The augmentation contract: pad and crop in pixel space, then normalise.


def test_padding_is_black_pixels_normalised_like_the_image():
  # A real mean and std: the padding becomes (0 - mean) / std per channel,
  # not 0 (which normalising first, then padding, would give).
  mean, std = np.array([125.31, 122.95, 113.87]), np.array([62.99, 62.09,
                                                            66.70])
  image = np.random.default_rng(0).integers(1, 256, (1, 6, 6, 3), np.uint8)
  transform = jax.jit(lambda key: augment.augment(
      image, augment.example_keys(key, 1, None), mean=mean, std=std,
      data=ml_collections.ConfigDict(dict(crop_padding=2, random_flip=False))))
  seen = set()
  for i in range(40):
    out = np.asarray(transform(jax.random.key(i)))[0]
    pixels = out * std + mean  # Back to pixel space.
    padded = np.pad(image[0], ((2, 2), (2, 2), (0, 0))).astype(np.float64)
    offsets = [(t, l) for t in range(5) for l in range(5)
               if np.allclose(pixels, padded[t:t + 6, l:l + 6], atol=1e-3)]
    assert len(offsets) == 1, i
    seen.update(offsets)
    border = np.all(padded[offsets[0][0]:offsets[0][0] + 6,
                           offsets[0][1]:offsets[0][1] + 6] == 0, axis=-1)
    np.testing.assert_allclose(out[border], np.broadcast_to(
        -mean / std, out[border].shape), rtol=1e-6)
  assert len(seen) > 10  # Crops at many offsets, several with padding.
