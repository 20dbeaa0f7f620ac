"""Our CIFAR ResNet in PyTorch, as the comparison point of the benchmarks.

The network is `models.ResNet` with its defaults (He et al. 2015, section
4.2): post-activation basic blocks, option-A shortcuts, depth 6n+2. It is
written independently of the Flax model, so that a speed comparison compares
the same arithmetic and `load_flax_params` lets tests check that it is the
same network, logit for logit.

Layout is PyTorch's: images (N, 3, H, W), in either memory format. Modules
carry the Flax names (`stem_conv`, `stage2_block1.bn1`, `head`), so the
state-dict keys spell out the Flax paths.

Batch norm: PyTorch's momentum 0.1 is Flax's 0.9. In training PyTorch keeps
the unbiased batch variance in the running average where Flax keeps the biased
one (a factor n/(n-1), n = examples x pixels per channel); the normalisation
itself uses the biased variance in both, so the logits agree.

Imports only PyTorch, so that it runs on machines without JAX.
"""

import torch
from torch import nn
from torch.nn import functional as F

STEM_WIDTH = 16
STAGE_WIDTHS = (16, 32, 64)
BN_MOMENTUM = 0.1  # Flax's 0.9.
BN_EPSILON = 1e-5


def blocks_per_stage(depth: int) -> int:
  """n in depth = 6n + 2."""
  if depth < 8 or (depth - 2) % 6:
    raise ValueError(f'depth {depth} is not 6n+2 (n >= 1)')
  return (depth - 2) // 6


def shortcut(x: torch.Tensor, out_channels: int, stride: int) -> torch.Tensor:
  """Option A: subsample by `stride`, zero-pad channels, fewer before than after.

  The split (extra // 2 before, the rest after) is models.shortcut's.
  """
  in_channels = x.shape[1]
  if stride == 1 and in_channels == out_channels:
    return x
  if stride != 1:
    x = x[:, :, ::stride, ::stride]
  extra = out_channels - in_channels
  # F.pad takes pairs from the last dimension back: W, H, then C.
  return F.pad(x, (0, 0, 0, 0, extra // 2, extra - extra // 2))


def _conv3x3(in_channels, out_channels, stride):
  # Explicit one-pixel padding, as in models.py (not 'same', which at stride
  # 2 would differ from the Flax model's sampling).
  return nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1,
                   bias=False)


def _bn(channels):
  return nn.BatchNorm2d(channels, eps=BN_EPSILON, momentum=BN_MOMENTUM)


class BasicBlock(nn.Module):
  """relu(bn2(conv2(relu(bn1(conv1(x))))) + shortcut(x))."""

  def __init__(self, in_channels: int, planes: int, stride: int):
    super().__init__()
    self.planes, self.stride = planes, stride
    self.conv1 = _conv3x3(in_channels, planes, stride)
    self.bn1 = _bn(planes)
    self.conv2 = _conv3x3(planes, planes, 1)
    self.bn2 = _bn(planes)

  def forward(self, x):
    y = F.relu(self.bn1(self.conv1(x)))
    y = self.bn2(self.conv2(y))
    return F.relu(y + shortcut(x, self.planes, self.stride))


class ResNet(nn.Module):
  """Stem conv-BN-ReLU, three stages of n basic blocks, average pool, dense."""

  def __init__(self, depth: int = 20, num_classes: int = 10):
    super().__init__()
    n = blocks_per_stage(depth)
    self.stem_conv = _conv3x3(3, STEM_WIDTH, 1)
    self.stem_bn = _bn(STEM_WIDTH)
    self.block_names = []
    in_channels = STEM_WIDTH
    for s, planes in enumerate(STAGE_WIDTHS, start=1):
      for b in range(1, n + 1):
        stride = 2 if s > 1 and b == 1 else 1
        name = f'stage{s}_block{b}'
        self.add_module(name, BasicBlock(in_channels, planes, stride))
        self.block_names.append(name)
        in_channels = planes
    self.head = nn.Linear(in_channels, num_classes)
    self._init_like_flax()

  def _init_like_flax(self):
    # models.he_normal: untruncated normal, variance 2 / fan_in, for the conv
    # and dense kernels alike; zero dense bias; batch norm scale 1, bias 0
    # (PyTorch's default there).
    for module in self.modules():
      if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.kaiming_normal_(module.weight, mode='fan_in',
                                nonlinearity='relu')
      if isinstance(module, nn.Linear):
        nn.init.zeros_(module.bias)

  def forward(self, images):
    x = F.relu(self.stem_bn(self.stem_conv(images)))
    for name in self.block_names:
      x = getattr(self, name)(x)
    return self.head(x.mean(dim=(2, 3)))


def num_params(model: nn.Module) -> int:
  """Trainable scalars; batch-norm running statistics are buffers, not counted."""
  return sum(p.numel() for p in model.parameters())


# Flax leaf name -> PyTorch state-dict leaf name.
_PARAM_NAMES = {'kernel': 'weight', 'scale': 'weight', 'bias': 'bias'}
_STAT_NAMES = {'mean': 'running_mean', 'var': 'running_var'}


def _flatten(tree, prefix=()):
  for key, value in tree.items():
    if hasattr(value, 'items'):
      yield from _flatten(value, prefix + (key,))
    else:
      yield prefix + (key,), value


def _to_torch_layout(flax_leaf_name, array):
  import numpy as np  # pylint: disable=g-import-not-at-top  (benchmarks run without it)
  tensor = torch.from_numpy(np.array(array, dtype=np.float32))
  if flax_leaf_name == 'kernel' and tensor.ndim == 4:
    return tensor.permute(3, 2, 0, 1)  # HWIO -> OIHW.
  if flax_leaf_name == 'kernel':
    return tensor.T  # (in, out) -> (out, in).
  return tensor


@torch.no_grad()
def load_flax_params(torch_model: ResNet, params, batch_stats) -> None:
  """Copies a Flax ResNet's `params` and `batch_stats` into `torch_model`.

  Every parameter and running statistic of the PyTorch model must be given
  exactly once and every Flax leaf must have a place, so that a silently
  skipped layer cannot pass for agreement. `num_batches_tracked` (only used
  by PyTorch when momentum is None) is left as it is.
  """
  state = {}
  for tree, names in ((params, _PARAM_NAMES), (batch_stats, _STAT_NAMES)):
    for path, value in _flatten(tree):
      if path[-1] not in names:
        raise ValueError(f'unexpected Flax variable {"/".join(path)}')
      key = '.'.join(path[:-1] + (names[path[-1]],))
      state[key] = _to_torch_layout(path[-1], value)
  wanted = {key for key in torch_model.state_dict()
            if not key.endswith('num_batches_tracked')}
  missing, unexpected = wanted - state.keys(), state.keys() - wanted
  if missing or unexpected:
    raise ValueError(f'Flax variables do not fit the PyTorch model: missing '
                     f'{sorted(missing)}, unexpected {sorted(unexpected)}')
  # Copies into the existing tensors (shapes checked), keeping their device
  # and memory format.
  torch_model.load_state_dict(state, strict=False)
