"""Independent float64 NumPy reference for the CIFAR ResNets (He et al. 2015 s.4.2,
pre-activation variant from He et al. 2016).

It exists only to check the Flax model in property tests, so it deliberately shares
no code with it and imports nothing but NumPy. Layout is NHWC, kernels are HWIO.

Naming (params / batch_stats are nested dicts):
  stem_conv{kernel}  stem_bn{scale,bias | mean,var}  (stem_bn only when not preact)
  stage{s}_block{b}/{conv1,bn1,conv2,bn2[,conv3,bn3][,proj_conv[,proj_bn]]}
  final_bn (preact only)  head{kernel,bias}
"""
from collections.abc import Mapping

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

STEM_WIDTH = 16
STAGE_WIDTHS = (16, 32, 64)


def _f64(x):
  return np.asarray(x, dtype=np.float64)


def _tree_copy(tree):
  if isinstance(tree, Mapping):
    return {k: _tree_copy(v) for k, v in tree.items()}
  return _f64(tree).copy()


# ----------------------------------------------------------------------------- layers

def conv2d(x, kernel, stride=1):
  """Cross-correlation without bias; 'same'-style padding of k//2 (3x3 -> 1, 1x1 -> 0).

  Taking every stride-th window of the padded input gives
  floor((H + 2p - k) / stride) + 1 outputs, the PyTorch convention (7 -> 4 for 3x3/2).
  """
  x, kernel = _f64(x), _f64(kernel)
  kh, kw = kernel.shape[:2]
  ph, pw = kh // 2, kw // 2
  x = np.pad(x, ((0, 0), (ph, ph), (pw, pw), (0, 0)))
  windows = sliding_window_view(x, (kh, kw), axis=(1, 2))  # (N, H', W', C, kh, kw)
  windows = windows[:, ::stride, ::stride]
  return np.tensordot(windows, kernel, axes=([4, 5, 3], [0, 1, 2]))


def batch_norm(x, scale, bias, mean, var, train, momentum=0.9, epsilon=1e-5):
  """Returns (y, new_mean, new_var), statistics per channel over (N, H, W).

  Train mode uses the biased batch variance both for normalising and for the running
  average (the Flax convention, unlike PyTorch which stores the unbiased one).
  """
  x = _f64(x)
  mean, var = _f64(mean), _f64(var)
  if train:
    batch_mean = x.mean(axis=(0, 1, 2))
    batch_var = ((x - batch_mean) ** 2).mean(axis=(0, 1, 2))
    new_mean = momentum * mean + (1 - momentum) * batch_mean
    new_var = momentum * var + (1 - momentum) * batch_var
    use_mean, use_var = batch_mean, batch_var
  else:
    new_mean, new_var = mean.copy(), var.copy()
    use_mean, use_var = mean, var
  y = (x - use_mean) / np.sqrt(use_var + epsilon) * _f64(scale) + _f64(bias)
  return y, new_mean, new_var


def relu(x):
  return np.maximum(x, 0.0)


def shortcut_a(z, stride, out_channels):
  """Parameter-free option A: subsample spatially, zero-pad channels (extra half after)."""
  z = _f64(z)[:, ::stride, ::stride, :]
  extra = out_channels - z.shape[-1]
  lo = extra // 2
  return np.pad(z, ((0, 0), (0, 0), (0, 0), (lo, extra - lo)))


class _Norm:
  """Applies named BN layers of one module and records their new running stats, so the
  block functions stay pure: the caller gets a fresh stats dict back."""

  def __init__(self, params, stats, train, momentum, epsilon):
    self.params, self.stats = params, stats
    self.new = _tree_copy(stats)
    self.train, self.momentum, self.epsilon = train, momentum, epsilon

  def __call__(self, name, x):
    p, s = self.params[name], self.stats[name]
    y, mean, var = batch_norm(x, p['scale'], p['bias'], s['mean'], s['var'],
                                  self.train, self.momentum, self.epsilon)
    self.new[name] = {'mean': mean, 'var': var}
    return y


def _shortcut(z, p, stride, out_channels, option, norm):
  """Identity unless the shape changes. Option B's projection is normalised only in
  post-activation blocks; preact blocks pass norm=None because their shortcut input is
  already normalised and the sum is normalised again by the next block."""
  if stride == 1 and z.shape[-1] == out_channels:
    return z
  if option == 'A':
    return shortcut_a(z, stride, out_channels)
  z = conv2d(z, p['proj_conv']['kernel'], stride)
  return norm('proj_bn', z) if norm is not None else z


# ----------------------------------------------------------------------------- blocks

def basic_block(x, p, s, stride, *, preact=False, shortcut='A', train=True,
        momentum=0.9, epsilon=1e-5):
  """Two 3x3 convs. Returns (out, new_block_stats)."""
  x = _f64(x)
  bn = _Norm(p, s, train, momentum, epsilon)
  out_ch = _f64(p['conv2']['kernel']).shape[-1]

  def conv(name, y, st=1):
    return conv2d(y, p[name]['kernel'], st)

  if not preact:
    y = relu(bn('bn1', conv('conv1', x, stride)))
    y = bn('bn2', conv('conv2', y))
    return relu(y + _shortcut(x, p, stride, out_ch, shortcut, bn)), bn.new
  pre = relu(bn('bn1', x))
  y = conv('conv1', pre, stride)
  y = conv('conv2', relu(bn('bn2', y)))
  # As in the reference pre-activation code: a shape-changing shortcut reuses the
  # pre-activated input, while an identity shortcut keeps the raw signal path clean.
  z = pre if (stride != 1 or x.shape[-1] != out_ch) else x
  return y + _shortcut(z, p, stride, out_ch, shortcut, None), bn.new


def bottleneck_block(x, p, s, stride, *, preact=False, shortcut='A', train=True,
                     momentum=0.9, epsilon=1e-5):
  """1x1 reduce, 3x3 (carries the stride), 1x1 expand to 4*planes. Returns (out, new_stats)."""
  x = _f64(x)
  bn = _Norm(p, s, train, momentum, epsilon)
  out_ch = _f64(p['conv3']['kernel']).shape[-1]

  def conv(name, y, st=1):
    return conv2d(y, p[name]['kernel'], st)

  if not preact:
    y = relu(bn('bn1', conv('conv1', x)))
    y = relu(bn('bn2', conv('conv2', y, stride)))
    y = bn('bn3', conv('conv3', y))
    return relu(y + _shortcut(x, p, stride, out_ch, shortcut, bn)), bn.new
  pre = relu(bn('bn1', x))
  y = conv('conv1', pre)
  y = conv('conv2', relu(bn('bn2', y)), stride)
  y = conv('conv3', relu(bn('bn3', y)))
  z = pre if (stride != 1 or x.shape[-1] != out_ch) else x
  return y + _shortcut(z, p, stride, out_ch, shortcut, None), bn.new


# ----------------------------------------------------------------------------- network

def num_blocks(depth, block='basic'):
  """Blocks per stage: depth = 6n+2 (basic, 2 convs/block) or 9n+2 (bottleneck, 3)."""
  per_block = {'basic': 2, 'bottleneck': 3}
  if block not in per_block:
    raise ValueError(f'unknown block type {block!r}')
  layers = 3 * per_block[block]
  if not isinstance(depth, int) or depth < layers + 2 or (depth - 2) % layers:
    raise ValueError(f'depth {depth!r} is not {layers}n+2 for block={block!r}')
  return (depth - 2) // layers


def block_plan(depth, block='basic', width=1):
  """[(name, in_channels, planes, out_channels, stride)] for every block, in order."""
  n = num_blocks(depth, block)
  expansion = 4 if block == 'bottleneck' else 1
  plan, in_ch = [], STEM_WIDTH
  for s, base in enumerate(STAGE_WIDTHS, start=1):
    planes = base * width
    for b in range(1, n + 1):
      stride = 2 if (s > 1 and b == 1) else 1
      plan.append((f'stage{s}_block{b}', in_ch, planes, planes * expansion, stride))
      in_ch = planes * expansion
  return plan


def forward(params, batch_stats, images, *, depth, block='basic', preact=False,
      shortcut='A', width=1, train=True, momentum=0.9, epsilon=1e-5):
  """Returns (logits, new_batch_stats), all in float64; inputs are never mutated."""
  if shortcut not in ('A', 'B'):
    raise ValueError(f'unknown shortcut option {shortcut!r}')
  block_fn = {'basic': basic_block, 'bottleneck': bottleneck_block}.get(block)
  plan = block_plan(depth, block, width)  # validates depth and block
  top = _Norm(params, batch_stats, train, momentum, epsilon)

  x = conv2d(images, params['stem_conv']['kernel'], 1)
  if not preact:
    x = relu(top('stem_bn', x))
  for name, _, _, _, stride in plan:
    x, top.new[name] = block_fn(x, params[name], batch_stats[name], stride,
                  preact=preact, shortcut=shortcut, train=train,
                  momentum=momentum, epsilon=epsilon)
  if preact:
    x = relu(top('final_bn', x))
  x = x.mean(axis=(1, 2))
  logits = x @ _f64(params['head']['kernel']) + _f64(params['head']['bias'])
  return logits, top.new


def count_params(params):
  """Total number of scalars in a nested dict of arrays."""
  if isinstance(params, Mapping):
    return sum(count_params(v) for v in params.values())
  return int(np.size(params))


def init_params(depth, *, block='basic', preact=False, shortcut='A', width=1,
        num_classes=10, rng=None):
  """Random (params, batch_stats) with the documented names and shapes.

  Values are deliberately non-trivial (scale != 1, mean != 0, var != 1) so that tests
  using them exercise every term of batch norm; kernels use He scaling so activations
  stay O(1) through deep networks.
  """
  rng = np.random.default_rng(rng)
  params, stats = {}, {}

  def conv(k, cin, cout):
    return {'kernel': rng.normal(0, np.sqrt(2.0 / (k * k * cin)), (k, k, cin, cout))}

  def bn(p, s, name, c):
    p[name] = {'scale': 1 + 0.1 * rng.normal(size=c), 'bias': 0.1 * rng.normal(size=c)}
    s[name] = {'mean': 0.1 * rng.normal(size=c), 'var': rng.uniform(0.5, 1.5, c)}

  params['stem_conv'] = conv(3, 3, STEM_WIDTH)
  if not preact:
    bn(params, stats, 'stem_bn', STEM_WIDTH)
  for name, cin, planes, cout, stride in block_plan(depth, block, width):
    p, s = params.setdefault(name, {}), stats.setdefault(name, {})
    if block == 'basic':
      p['conv1'], p['conv2'] = conv(3, cin, planes), conv(3, planes, planes)
      bn_channels = [cin if preact else planes, planes]
    else:
      p['conv1'], p['conv2'] = conv(1, cin, planes), conv(3, planes, planes)
      p['conv3'] = conv(1, planes, cout)
      bn_channels = [cin, planes, planes] if preact else [planes, planes, cout]
    for i, c in enumerate(bn_channels, start=1):
      bn(p, s, f'bn{i}', c)
    if shortcut == 'B' and (stride != 1 or cin != cout):
      p['proj_conv'] = conv(1, cin, cout)
      if not preact:
        bn(p, s, 'proj_bn', cout)
  last = block_plan(depth, block, width)[-1][3]
  if preact:
    bn(params, stats, 'final_bn', last)
  params['head'] = {'kernel': rng.normal(0, 1 / np.sqrt(last), (last, num_classes)),
                      'bias': 0.1 * rng.normal(size=num_classes)}
  return params, stats
