"""The Flax ResNet against the paper and against an independent NumPy model."""

import re

from hypothesis import given, strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import default
from resnet_jax.core import models
import reference

# Float32 against float64 through up to 20 layers of convolution and batch
# norm: the worst error seen (depths 8 to 56) was 3.5e-6 of the logits' scale,
# so 2e-4 leaves a wide margin while still catching any real difference (a
# wrong padding, statistic or shortcut moves logits by 1e-2 or more).
RTOL = 2e-4


def init_variables(model, image_size=32):
  return jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, image_size, image_size, 3)),
      train=False))


def num_params(model):
  return sum(x.size for x in jax.tree.leaves(init_variables(model)['params']))


@pytest.mark.parametrize('depth, paper_millions, exact', [
    (20, 0.27, 269_722), (32, 0.46, 464_154), (44, 0.66, 658_586),
    (56, 0.85, 853_018), (110, 1.7, 1_727_962)])
def test_parameter_counts_match_the_paper(depth, paper_millions, exact):
  count = num_params(models.ResNet(depth=depth))
  assert count == exact
  # The paper's Table 6 rounds to two significant figures.
  assert float(f'{count / 1e6:.2g}') == paper_millions


def test_option_b_adds_exactly_the_two_projections():
  extra = num_params(models.ResNet(shortcut='B')) - num_params(models.ResNet())
  assert extra == (16 * 32 + 2 * 32) + (32 * 64 + 2 * 64)


def test_width_multiplier_scales_the_stages_not_the_stem():
  wide = init_variables(models.ResNet(depth=20, width=4))['params']
  assert wide['stem_conv']['kernel'].shape == (3, 3, 3, 16)
  assert wide['stage1_block1']['conv1']['kernel'].shape == (3, 3, 16, 64)
  assert wide['stage3_block3']['conv2']['kernel'].shape == (3, 3, 256, 256)
  assert wide['head']['kernel'].shape == (256, 10)


@pytest.mark.parametrize('variant', [
    dict(depth=20), dict(depth=20, shortcut='B'), dict(depth=14, preact=True),
    dict(depth=14, preact=True, shortcut='B'), dict(depth=11, block='bottleneck'),
    dict(depth=20, block='bottleneck', preact=True, shortcut='B', width=2)])
def test_parameter_names_and_shapes_agree_with_the_reference(variant):
  flax_vars = init_variables(models.ResNet(**variant))
  ref_params, ref_stats = reference.init_params(**variant)
  shapes = lambda tree: jax.tree.map(np.shape, tree)
  assert shapes(flax_vars['params']) == shapes(ref_params)
  assert shapes(flax_vars['batch_stats']) == shapes(ref_stats)


def test_parameters_are_float32_and_bfloat16_computes_close_to_float32():
  images = np.random.default_rng(0).normal(size=(4, 16, 16, 3))
  f32 = models.ResNet(depth=8)
  variables = f32.init(jax.random.key(0), images, train=False)
  bf16 = f32.clone(dtype=jnp.bfloat16)
  assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(
      bf16.init(jax.random.key(0), images, train=False)))
  logits32 = f32.apply(variables, images, train=False)
  logits16 = bf16.apply(variables, images, train=False)
  assert logits16.dtype == jnp.float32
  np.testing.assert_allclose(logits16, logits32, atol=0.05 * np.abs(
      logits32).max())


# The operand types of each convolution in a lowered (StableHLO) program:
# `stablehlo.convolution(...) ... : (tensor<4x16x16x3xbf16>, tensor<...>)`.
_CONVOLUTION_OPERANDS = re.compile(
    r'stablehlo\.convolution.*: \(tensor<[^>]*x(\w+)>, tensor<[^>]*x(\w+)>\)')


def test_the_config_dtype_reaches_the_convolutions_and_the_logits():
  # Built as the trainer builds it, so that a dtype dropped anywhere between
  # the config and the layers fails here.
  config = default.get_config().model
  config.depth = 8
  images = np.random.default_rng(0).normal(size=(4, 16, 16, 3)).astype(
      np.float32)
  variables = models.create_model(config).init(
      jax.random.key(0), images, train=False)
  logits, operands = {}, {}
  for dtype in ('float32', 'bfloat16'):
    config.dtype = dtype
    model = models.create_model(config)
    forward = jax.jit(lambda v, x, m=model: m.apply(v, x, train=False))
    logits[dtype] = np.asarray(forward(variables, images))
    operands[dtype] = _CONVOLUTION_OPERANDS.findall(
        forward.lower(variables, images).as_text())

  # Depth 8: the stem and two convolutions in each of three blocks.
  assert operands['float32'] == [('f32', 'f32')] * 7
  assert operands['bfloat16'] == [('bf16', 'bf16')] * 7
  # bfloat16 keeps 8 bits of mantissa: the logits move by about 2**-8 of their
  # scale, far beyond float32 rounding (~1e-7), yet stay close.
  scale = np.abs(logits['float32']).max()
  difference = np.abs(logits['bfloat16'] - logits['float32']).max()
  assert 1e-4 * scale < difference < 0.05 * scale


def test_he_initialisation_has_variance_two_over_fan_in():
  params = models.ResNet(depth=20, width=4).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False)['params']
  kernel = params['stage3_block2']['conv1']['kernel']  # fan-in 3*3*256
  assert np.var(kernel) == pytest.approx(2 / (9 * 256), rel=0.02)
  assert np.mean(kernel) == pytest.approx(0, abs=1e-3)


@pytest.mark.parametrize('bad, message', [
    (dict(depth=21), 'depth 21 is not 6n\\+2'),
    (dict(depth=32, block='bottleneck'), 'depth 32 is not 9n\\+2'),
    (dict(block='dense'), "unknown block 'dense'"),
    (dict(shortcut='C'), "unknown shortcut 'C'"),
    (dict(width=0), 'width multiplier must be >= 1')])
def test_invalid_architectures_are_rejected_with_a_clear_message(bad, message):
  with pytest.raises(ValueError, match=message):
    init_variables(models.ResNet(**bad))


# The batch statistics come back in both modes: in eval mode they must be the
# ones given.
_apply = jax.jit(
    lambda model, variables, images, train: model.apply(
        variables, images, train=train, mutable=['batch_stats']),
    static_argnums=(0, 3))

architectures = st.one_of(
    st.builds(dict, depth=st.sampled_from([8, 14, 20]), block=st.just('basic')),
    st.builds(dict, depth=st.sampled_from([11, 20]), block=st.just('bottleneck')))


def _assert_equals_the_float64_reference(variant, batch, size, train, seed):
  rng = np.random.default_rng(seed)
  params, stats = reference.init_params(**variant, rng=rng)
  images = rng.normal(size=(batch, size, size, 3))

  model = models.ResNet(**variant, bn_momentum=0.9, bn_epsilon=1e-5)
  as32 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)
  # What eval mode must leave as it is, copied before either model runs.
  stats_given = jax.tree.map(np.array, stats)
  logits, new_stats = _apply(
      model, {'params': as32(params), 'batch_stats': as32(stats)},
      jnp.asarray(images, jnp.float32), train)
  ref_logits, ref_stats = reference.forward(
      params, stats, images, **variant, train=train, momentum=0.9,
      epsilon=1e-5)

  scale = np.abs(ref_logits).max() + 1.0
  np.testing.assert_allclose(logits, ref_logits, rtol=0, atol=RTOL * scale)
  # Train mode: the model's updated statistics are the reference's. Eval
  # mode: both leave the statistics given unchanged (the float64 draw, not a
  # copy of what either returned).
  want = ref_stats if train else stats_given
  jax.tree.map(lambda a, b: np.testing.assert_allclose(
      a, b, rtol=RTOL, atol=RTOL), dict(new_stats['batch_stats']), want)
  if not train:
    jax.tree.map(np.testing.assert_array_equal, ref_stats, stats_given)


# Every variant, in both modes, at the smallest depth: Hypothesis's few draws
# below need not include each of these 16, so they are pinned here. An odd
# image size makes the stride-2 layers' padding and subsampling matter.
@pytest.mark.parametrize('train', [False, True], ids=['eval', 'train'])
@pytest.mark.parametrize('shortcut', ['A', 'B'])
@pytest.mark.parametrize('preact', [False, True], ids=['post', 'preact'])
@pytest.mark.parametrize('block, depth', [('basic', 8), ('bottleneck', 11)])
def test_every_variant_equals_the_float64_reference(
    block, depth, preact, shortcut, train):
  variant = dict(depth=depth, block=block, preact=preact, shortcut=shortcut)
  _assert_equals_the_float64_reference(variant, batch=2, size=9, train=train,
                                       seed=depth)


# Beyond those: deeper and wider models, other batch and image sizes.
@given(arch=architectures, preact=st.booleans(), shortcut=st.sampled_from('AB'),
       width=st.integers(1, 2), batch=st.integers(1, 4),
       size=st.integers(5, 12), train=st.booleans(), seed=st.integers(0, 2**16))
def test_logits_and_batch_stats_equal_the_float64_reference(
    arch, preact, shortcut, width, batch, size, train, seed):
  variant = dict(arch, preact=preact, shortcut=shortcut, width=width)
  _assert_equals_the_float64_reference(variant, batch, size, train, seed)
