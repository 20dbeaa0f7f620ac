"""CIFAR ResNets (He et al. 2015, section 4.2) and their common variants.

One `ResNet` module covers the family, chosen by its fields (and so by the config):

- depth 6n+2 with basic blocks (ResNet-20/32/44/56/110/1202), or 9n+2 with
  bottleneck blocks (ResNet-164 of He et al. 2016);
- post-activation blocks (2015) or pre-activation blocks (2016, `preact=True`);
- shortcut option A (parameter-free: stride-2 subsampling and zero-padded
  channels, the paper's CIFAR choice) or option B (1x1 projection, plus batch
  norm in post-activation blocks) wherever a block changes shape;
- a width multiplier for the three stages (wide ResNets); the stem keeps 16.

Batch norm follows Flax's convention for `momentum`: running = momentum *
running + (1 - momentum) * batch. PyTorch's `momentum` is the other weight, so
Flax 0.9 equals PyTorch 0.1. Flax also keeps the biased batch variance in the
running average, where PyTorch keeps the unbiased one (a factor n/(n-1), with n
the examples times pixels per channel: negligible at CIFAR sizes).

Parameters are always float32; `dtype` sets the computation (float32 or
bfloat16), and batch-norm statistics are reduced in float32 either way.
Logits come back in float32 (float64 when computing in float64, as the
reference tests do).
"""

from collections.abc import Sequence
import functools
from typing import Any

import flax.linen as nn
import jax.numpy as jnp

STAGE_WIDTHS = (16, 32, 64)
STEM_WIDTH = 16
BOTTLENECK_EXPANSION = 4
BLOCKS = ('basic', 'bottleneck')
SHORTCUTS = ('A', 'B')

# He et al. 2015 initialise "as in [13]" (He et al., PReLU): zero-mean normal,
# variance 2 / fan_in, untruncated.
he_normal = nn.initializers.variance_scaling(2.0, 'fan_in', 'normal')


def blocks_per_stage(depth: int, block: str) -> int:
  """n in depth = 6n + 2 (basic) or 9n + 2 (bottleneck)."""
  layers_per_block = {'basic': 2, 'bottleneck': 3}.get(block)
  if layers_per_block is None:
    raise ValueError(f'unknown block {block!r}; choose one of {BLOCKS}')
  per_stage = 3 * layers_per_block
  if depth < per_stage + 2 or (depth - 2) % per_stage:
    raise ValueError(
        f'depth {depth} is not {per_stage}n+2 (n >= 1), as {block} blocks need')
  return (depth - 2) // per_stage


def shortcut(x, out_channels, stride, option, conv, norm):
  """The skip path of a block: identity unless the block changes shape.

  Called inside a block, so a projection's layers belong to that block.
  `norm` None means a projection without batch norm (pre-activation blocks).
  """
  in_channels = x.shape[-1]
  if stride == 1 and in_channels == out_channels:
    return x
  if option == 'B':
    x = conv(out_channels, (1, 1), stride, name='proj_conv')(x)
    return x if norm is None else norm(name='proj_bn')(x)
  if stride != 1:
    x = x[:, ::stride, ::stride, :]
  extra = out_channels - in_channels
  # Split the zero channels on both sides, as the widely used PyTorch
  # reproduction does; the paper only says "padded with zeros".
  return jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))


class _Block(nn.Module):
  """What every block is given: its width, stride, shortcut option and layers."""
  planes: int
  stride: int
  shortcut: str
  conv: Any  # conv(features, kernel_size, stride, name) -> a convolution.
  norm: Any  # norm(name) -> a batch norm.


class BasicBlock(_Block):
  """Two 3x3 convolutions, post-activation: relu(bn(conv(relu(bn(conv x)))) + x)."""

  @nn.compact
  def __call__(self, x):
    y = self.conv(self.planes, (3, 3), self.stride, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.planes, (3, 3), 1, name='conv2')(y)
    y = self.norm(name='bn2')(y)
    skip = shortcut(x, self.planes, self.stride, self.shortcut, self.conv,
                    self.norm)
    return nn.relu(y + skip)


class BottleneckBlock(_Block):
  """1x1 reduce, 3x3 (carrying the stride), 1x1 expand by 4; post-activation."""

  @nn.compact
  def __call__(self, x):
    out = self.planes * BOTTLENECK_EXPANSION
    y = self.conv(self.planes, (1, 1), 1, name='conv1')(x)
    y = nn.relu(self.norm(name='bn1')(y))
    y = self.conv(self.planes, (3, 3), self.stride, name='conv2')(y)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(out, (1, 1), 1, name='conv3')(y)
    y = self.norm(name='bn3')(y)
    skip = shortcut(x, out, self.stride, self.shortcut, self.conv, self.norm)
    return nn.relu(y + skip)


def _preact_shortcut_input(x, preactivated, out_channels, stride):
  # He et al.'s pre-activation code shares the first BN-ReLU with the skip path
  # when the block changes shape; an unchanged block's skip is the raw input.
  changes_shape = stride != 1 or x.shape[-1] != out_channels
  return preactivated if changes_shape else x


class PreActBasicBlock(_Block):
  """He et al. 2016: x + conv(relu(bn(conv(relu(bn(x))))))."""

  @nn.compact
  def __call__(self, x):
    p = nn.relu(self.norm(name='bn1')(x))
    y = self.conv(self.planes, (3, 3), self.stride, name='conv1')(p)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(self.planes, (3, 3), 1, name='conv2')(y)
    skip_in = _preact_shortcut_input(x, p, self.planes, self.stride)
    return y + shortcut(skip_in, self.planes, self.stride, self.shortcut,
                        self.conv, None)


class PreActBottleneckBlock(_Block):
  """Pre-activation bottleneck (ResNet-164 and ResNet-1001 of He et al. 2016)."""

  @nn.compact
  def __call__(self, x):
    out = self.planes * BOTTLENECK_EXPANSION
    p = nn.relu(self.norm(name='bn1')(x))
    y = self.conv(self.planes, (1, 1), 1, name='conv1')(p)
    y = nn.relu(self.norm(name='bn2')(y))
    y = self.conv(self.planes, (3, 3), self.stride, name='conv2')(y)
    y = nn.relu(self.norm(name='bn3')(y))
    y = self.conv(out, (1, 1), 1, name='conv3')(y)
    skip_in = _preact_shortcut_input(x, p, out, self.stride)
    return y + shortcut(skip_in, out, self.stride, self.shortcut, self.conv, None)


_BLOCK_CLASSES = {
    ('basic', False): BasicBlock,
    ('bottleneck', False): BottleneckBlock,
    ('basic', True): PreActBasicBlock,
    ('bottleneck', True): PreActBottleneckBlock,
}


class ResNet(nn.Module):
  """A CIFAR ResNet: stem, three stages of `blocks_per_stage` blocks, pool, dense.

  Call with `train=True` to normalise with batch statistics and update the
  running averages in the mutable `batch_stats` collection; `train=False`
  normalises with the running averages.
  """
  depth: int = 20
  block: str = 'basic'
  preact: bool = False
  shortcut: str = 'A'
  width: int = 1
  num_classes: int = 10
  bn_momentum: float = 0.9
  bn_epsilon: float = 1e-5
  # Set to the data-parallel axis to compute batch statistics over the global
  # batch (synchronised batch norm); None on a single device.
  bn_axis_name: str | None = None
  dtype: Any = jnp.float32
  stage_widths: Sequence[int] = STAGE_WIDTHS

  def _blocks_per_stage(self):
    if self.shortcut not in SHORTCUTS:
      raise ValueError(
          f'unknown shortcut {self.shortcut!r}; choose one of {SHORTCUTS}')
    if self.width < 1:
      raise ValueError(f'width multiplier must be >= 1, got {self.width}')
    return blocks_per_stage(self.depth, self.block)

  @nn.compact
  def __call__(self, images, train: bool):
    n = self._blocks_per_stage()
    conv = functools.partial(
        nn.Conv, use_bias=False, kernel_init=he_normal, dtype=self.dtype)

    def conv_layer(features, kernel_size, stride, name):
      # Explicit one-pixel padding, not 'SAME': with stride 2 'SAME' pads only
      # the bottom/right and so samples other pixels than PyTorch and Caffe.
      padding = 'VALID' if kernel_size == (1, 1) else ((1, 1), (1, 1))
      return conv(features, kernel_size, strides=stride, padding=padding,
                  name=name)

    norm = functools.partial(
        nn.BatchNorm, use_running_average=not train, momentum=self.bn_momentum,
        epsilon=self.bn_epsilon, axis_name=self.bn_axis_name, dtype=self.dtype)
    block_cls = _BLOCK_CLASSES[(self.block, self.preact)]

    x = conv_layer(STEM_WIDTH, (3, 3), 1, name='stem_conv')(
        images.astype(self.dtype))
    if not self.preact:
      x = nn.relu(norm(name='stem_bn')(x))
    for s, base in enumerate(self.stage_widths, start=1):
      for b in range(1, n + 1):
        stride = 2 if s > 1 and b == 1 else 1
        x = block_cls(base * self.width, stride, self.shortcut, conv_layer,
                      norm, name=f'stage{s}_block{b}')(x)
    if self.preact:
      x = nn.relu(norm(name='final_bn')(x))
    x = jnp.mean(x, axis=(1, 2))
    x = nn.Dense(self.num_classes, kernel_init=he_normal, dtype=self.dtype,
                 name='head')(x)
    return x.astype(jnp.promote_types(self.dtype, jnp.float32))


def create_model(config, bn_axis_name: str | None = None) -> ResNet:
  """The ResNet that `config.model` describes (see configs/default.py)."""
  return ResNet(
      depth=config.depth, block=config.block, preact=config.preact,
      shortcut=config.shortcut, width=config.width,
      num_classes=config.num_classes, bn_momentum=config.bn_momentum,
      bn_epsilon=config.bn_epsilon, bn_axis_name=bn_axis_name,
      dtype=jnp.dtype(config.dtype))
