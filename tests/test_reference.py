"""Fast self-checks of the NumPy reference itself (against naive loops and the spec)."""
import itertools

import numpy as np
import pytest

import reference as ref


def naive_conv(x, k, stride):
  n, h, w, c = x.shape
  kh, kw, _, o = k.shape
  p = kh // 2
  xp = np.zeros((n, h + 2 * p, w + 2 * p, c))
  xp[:, p:p + h, p:p + w] = x
  oh, ow = (h + 2 * p - kh) // stride + 1, (w + 2 * p - kw) // stride + 1
  out = np.zeros((n, oh, ow, o))
  for b, i, j, q in itertools.product(range(n), range(oh), range(ow), range(o)):
    patch = xp[b, i * stride:i * stride + kh, j * stride:j * stride + kw, :]
    out[b, i, j, q] = np.sum(patch * k[:, :, :, q])
  return out


@pytest.mark.parametrize('ksize,stride,h,w', [(3, 1, 5, 6), (3, 2, 5, 6), (3, 2, 7, 7),
                                              (1, 1, 5, 6), (1, 2, 7, 5)])
def test_conv_matches_naive_loop(ksize, stride, h, w):
  rng = np.random.default_rng(0)
  x = rng.normal(size=(2, h, w, 3))
  k = rng.normal(size=(ksize, ksize, 3, 4))
  np.testing.assert_allclose(ref.conv2d(x, k, stride), naive_conv(x, k, stride),
                               rtol=1e-12, atol=1e-12)


def test_conv_output_sizes_and_1x1_stride_picks_even_pixels():
  x = np.random.default_rng(1).normal(size=(1, 32, 32, 2))
  assert ref.conv2d(x, np.ones((3, 3, 2, 5)), 2).shape == (1, 16, 16, 5)
  assert ref.conv2d(x[:, :7, :7], np.ones((3, 3, 2, 5)), 2).shape == (1, 4, 4, 5)
  eye = np.eye(2).reshape(1, 1, 2, 2)
  np.testing.assert_array_equal(ref.conv2d(x[:, :7, :7], eye, 2), x[:, 0:7:2, 0:7:2])


def test_conv_is_cross_correlation_not_convolution():
  x = np.zeros((1, 3, 3, 1))
  x[0, 1, 2, 0] = 1.0  # right neighbour of the centre
  k = np.zeros((3, 3, 1, 1))
  k[1, 2, 0, 0] = 7.0
  assert ref.conv2d(x, k)[0, 1, 1, 0] == 7.0


def test_batch_norm_train():
  rng = np.random.default_rng(2)
  x = rng.normal(3.0, 2.0, size=(4, 5, 6, 3))
  scale, bias = rng.normal(size=3), rng.normal(size=3)
  mean0, var0 = rng.normal(size=3), rng.uniform(1, 2, 3)
  y, m, v = ref.batch_norm(x, scale, bias, mean0, var0, True, 0.9, 1e-5)
  flat = x.reshape(-1, 3)
  bm, bv = flat.mean(0), flat.var(0)  # np.var is the biased variance
  np.testing.assert_allclose(y, (x - bm) / np.sqrt(bv + 1e-5) * scale + bias, rtol=1e-12)
  np.testing.assert_allclose(m, 0.9 * mean0 + 0.1 * bm, rtol=1e-12)
  np.testing.assert_allclose(v, 0.9 * var0 + 0.1 * bv, rtol=1e-12)
  # with unit scale / zero bias the output is standardised per channel
  y1, _, _ = ref.batch_norm(x, np.ones(3), np.zeros(3), mean0, var0, True, 0.9, 0.0)
  np.testing.assert_allclose(y1.reshape(-1, 3).mean(0), 0, atol=1e-12)
  np.testing.assert_allclose(y1.reshape(-1, 3).var(0), 1, rtol=1e-12)


def test_batch_norm_eval_uses_running_stats():
  rng = np.random.default_rng(3)
  x = rng.normal(size=(2, 3, 3, 4))
  scale, bias, mean, var = (rng.normal(size=4), rng.normal(size=4),
                              rng.normal(size=4), rng.uniform(1, 2, 4))
  y, m, v = ref.batch_norm(x, scale, bias, mean, var, False, 0.9, 1e-3)
  np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3) * scale + bias, rtol=1e-12)
  np.testing.assert_array_equal(m, mean)
  np.testing.assert_array_equal(v, var)


def test_shortcut_a_pads_channels_symmetrically_extra_after():
  z = np.random.default_rng(4).normal(size=(2, 7, 7, 3))
  out = ref.shortcut_a(z, 2, 6)  # lo = 1, hi = 2
  assert out.shape == (2, 4, 4, 6)
  np.testing.assert_array_equal(out[..., 1:4], z[:, ::2, ::2])
  assert not out[..., [0, 4, 5]].any()
  out = ref.shortcut_a(np.ones((1, 4, 4, 16)), 2, 32)
  assert out.shape == (1, 2, 2, 32) and out[..., 8:24].all() and not out[..., :8].any()


def test_num_blocks():
  assert ref.num_blocks(20) == 3 and ref.num_blocks(110) == 18
  assert ref.num_blocks(29, 'bottleneck') == 3 and ref.num_blocks(164, 'bottleneck') == 18
  for depth, block in [(21, 'basic'), (2, 'basic'), (22, 'bottleneck'), (20, 'wide')]:
    with pytest.raises(ValueError, match='unknown block type|is not'):
      ref.num_blocks(depth, block)


# Option A: the well-known 0.27M / 1.7M counts. Option B adds exactly the two
# projections (16*32 + 2*32) + (32*64 + 2*64) = 2752 parameters.
@pytest.mark.parametrize('depth,shortcut,expected', [
  (20, 'A', 269_722), (110, 'A', 1_727_962), (20, 'B', 272_474), (110, 'B', 1_730_714)])
def test_param_counts(depth, shortcut, expected):
  params, _ = ref.init_params(depth, shortcut=shortcut, rng=0)
  assert ref.count_params(params) == expected


VARIANTS = list(itertools.product(['basic', 'bottleneck'], [False, True], ['A', 'B'], [1, 2]))


@pytest.mark.parametrize('block,preact,shortcut,width', VARIANTS)
def test_forward_variants(block, preact, shortcut, width):
  depth = 8 if block == 'basic' else 11
  params, stats = ref.init_params(depth, block=block, preact=preact, shortcut=shortcut,
                  width=width, rng=5)
  kw = dict(depth=depth, block=block, preact=preact, shortcut=shortcut, width=width)
  x = np.random.default_rng(6).normal(size=(3, 9, 9, 3))
  before = ref._tree_copy(stats)

  logits, new = ref.forward(params, stats, x, train=True, **kw)
  assert logits.shape == (3, 10) and np.all(np.isfinite(logits))
  flat = lambda t: {k: v for k, v in _leaves(t)}
  assert flat(new).keys() == flat(stats).keys()
  assert all(not np.array_equal(a, flat(stats)[k]) for k, a in flat(new).items())
  assert all(np.array_equal(a, flat(before)[k]) for k, a in flat(stats).items())

  logits_eval, same = ref.forward(params, stats, x, train=False, **kw)
  assert all(np.array_equal(a, flat(stats)[k]) for k, a in flat(same).items())
  # eval mode has no cross-example coupling
  single = np.concatenate([ref.forward(params, stats, x[i:i + 1], train=False, **kw)[0]
                             for i in range(3)])
  np.testing.assert_allclose(logits_eval, single, rtol=1e-12, atol=1e-12)


def _leaves(tree, prefix=''):
  for k, v in tree.items():
    if isinstance(v, dict):
      yield from _leaves(v, f'{prefix}{k}/')
    else:
      yield f'{prefix}{k}', v


def test_zero_residual_branch_reduces_block_to_shortcut():
  rng = np.random.default_rng(7)
  x = rng.normal(size=(2, 6, 6, 16))
  params, stats = ref.init_params(8, rng=8)
  p, s = params['stage1_block1'], stats['stage1_block1']
  # post-activation: zero bn2 makes the block relu(x)
  p0 = ref._tree_copy(p)
  p0['bn2'] = {'scale': np.zeros(16), 'bias': np.zeros(16)}
  out, _ = ref.basic_block(x, p0, s, 1)
  np.testing.assert_array_equal(out, np.maximum(x, 0))
  # pre-activation: zero conv2 makes the block the exact identity (no final relu)
  params, stats = ref.init_params(8, preact=True, rng=8)
  p0 = ref._tree_copy(params['stage1_block1'])
  p0['conv2']['kernel'][:] = 0
  out, _ = ref.basic_block(x, p0, stats['stage1_block1'], 1, preact=True)
  np.testing.assert_array_equal(out, x)
