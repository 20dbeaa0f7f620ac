"""The PyTorch ResNet of the benchmarks is our network, logit for logit.

A speed comparison with PyTorch means something only if both sides compute
the same thing: these tests load our Flax variables into the PyTorch model
and compare outputs in float32.
"""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

# .ci/run installs the extra and sets this, so that CI fails rather than skips.
if os.environ.get('RESNET_JAX_REQUIRE_TORCH') == '1':
  import torch  # pylint: disable=g-import-not-at-top
else:
  torch = pytest.importorskip(
      'torch', reason='PyTorch is optional: install the torch extra to test '
      'the benchmark model (experiments/torch_resnet.py)')

# pylint: disable=g-import-not-at-top,wrong-import-position
from configs import default
from experiments import torch_resnet
from resnet_jax.core import models
import reference

# Both sides in float32 through 20 layers; they differ only in summation
# order (seen: under 1e-6 of the logits' scale). A wrong padding, shortcut or
# statistic moves logits by 1e-2 or more.
RTOL = 1e-4


def flax_model(depth):
  config = default.get_config().model
  config.depth = depth
  return models.create_model(config)


def flax_variables(depth, seed=0):
  """Our variables with non-trivial values (batch norm scale != 1, mean != 0,
  var != 1), so that every term of batch norm is compared."""
  model = flax_model(depth)
  shapes = jax.eval_shape(lambda: model.init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))
  params, stats = reference.init_params(depth, rng=seed)
  as32 = lambda tree: jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), tree)
  variables = {'params': as32(params), 'batch_stats': as32(stats)}
  assert jax.tree.map(jnp.shape, variables) == jax.tree.map(jnp.shape, shapes)
  return model, variables


def cifar_like_images(n, seed=0):
  """Pixels 0..255 normalised as the input pipeline does, NHWC float32."""
  config = default.get_config().data
  pixels = np.random.default_rng(seed).integers(0, 256, (n, 32, 32, 3))
  return ((pixels - np.array(config.mean)) / np.array(config.std)).astype(
      np.float32)


def to_nchw(images):
  return torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()


def torch_model_like(model, variables):
  torch_model = torch_resnet.ResNet(depth=model.depth)
  torch_resnet.load_flax_params(torch_model, variables['params'],
                                variables['batch_stats'])
  return torch_model


@pytest.mark.parametrize('depth', [8, 20])
def test_parameter_count_equals_the_flax_models(depth):
  flax_params = jax.eval_shape(lambda: flax_model(depth).init(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)), train=False))['params']
  flax_count = sum(x.size for x in jax.tree.leaves(flax_params))
  torch_count = torch_resnet.num_params(torch_resnet.ResNet(depth=depth))
  print(f'ResNet-{depth}: Flax {flax_count:,} parameters, '
        f'PyTorch {torch_count:,}')
  assert torch_count == flax_count
  if depth == 20:
    assert torch_count == 269_722


@pytest.mark.parametrize('in_channels, out_channels, stride', [
    (16, 32, 2), (3, 8, 2), (4, 9, 1)])
def test_shortcut_subsamples_and_zero_pads_channels_like_ours(
    in_channels, out_channels, stride):
  # An odd number of extra channels (5) pins which side gets the extra one.
  x = np.random.default_rng(0).normal(
      size=(2, 8, 8, in_channels)).astype(np.float32)
  ours = models.shortcut(jnp.asarray(x), out_channels, stride, 'A', None, None)
  theirs = torch_resnet.shortcut(to_nchw(x), out_channels, stride)
  np.testing.assert_array_equal(theirs.permute(0, 2, 3, 1).numpy(), ours)


def test_eval_mode_logits_equal_ours():
  model, variables = flax_variables(20)
  images = cifar_like_images(8)
  ours = np.asarray(model.apply(variables, images, train=False))

  torch_model = torch_model_like(model, variables).eval()
  with torch.no_grad():
    theirs = torch_model(to_nchw(images)).numpy()
    theirs_cl = torch_model.to(memory_format=torch.channels_last)(
        to_nchw(images).to(memory_format=torch.channels_last)).numpy()

  scale = np.abs(ours).max()
  print(f'eval max |diff| {np.abs(theirs - ours).max():.2e}, channels_last '
        f'{np.abs(theirs_cl - ours).max():.2e}, max |logit| {scale:.2f}')
  np.testing.assert_allclose(theirs, ours, rtol=0, atol=RTOL * scale)
  np.testing.assert_allclose(theirs_cl, ours, rtol=0, atol=RTOL * scale)


def test_train_mode_logits_and_running_statistics_equal_ours():
  model, variables = flax_variables(20, seed=1)
  images = cifar_like_images(8, seed=1)
  ours, updates = model.apply(variables, images, train=True,
                              mutable=['batch_stats'])
  ours = np.asarray(ours)

  torch_model = torch_model_like(model, variables).train()
  with torch.no_grad():
    theirs = torch_model(to_nchw(images)).numpy()

  scale = np.abs(ours).max()
  print(f'train max |diff| {np.abs(theirs - ours).max():.2e}, '
        f'max |logit| {scale:.2f}')
  np.testing.assert_allclose(theirs, ours, rtol=0, atol=RTOL * scale)

  # Same momentum convention; only the variance's Bessel correction differs:
  # PyTorch averages in batch_var * n / (n - 1) where Flax takes batch_var,
  # n = examples x pixels per channel (32x32, 16x16, 8x8 by stage).
  torch_state = torch_model.state_dict()

  def check(path, old, new):
    *module, stat = [key.key for key in path]
    module = '.'.join(module)
    old, new = np.asarray(old), np.asarray(new)
    if stat == 'mean':
      np.testing.assert_allclose(torch_state[f'{module}.running_mean'], new,
                                 rtol=RTOL, atol=RTOL)
      return
    n = len(images) * {'stage2': 16, 'stage3': 8}.get(module[:6], 32)**2
    batch_var = (new - 0.9 * old) / 0.1
    np.testing.assert_allclose(torch_state[f'{module}.running_var'],
                               0.9 * old + 0.1 * batch_var * n / (n - 1),
                               rtol=RTOL, atol=RTOL)

  jax.tree_util.tree_map_with_path(check, dict(variables['batch_stats']),
                                   dict(updates['batch_stats']))


def test_loading_refuses_variables_of_another_depth():
  _, variables = flax_variables(8)
  with pytest.raises(ValueError, match='missing'):
    torch_resnet.load_flax_params(torch_resnet.ResNet(depth=20),
                                  variables['params'],
                                  variables['batch_stats'])
