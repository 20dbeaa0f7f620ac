"""SGD with momentum and the two forms of weight decay, against their formulas."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from resnet_jax.core import optimizer

LR = 0.1
MOMENTUM = 0.9
WD = 0.01


def run(mode, nesterov=False, decay_on='all', num_steps=3):
  params = {'conv': {'kernel': jnp.array([1.0, -2.0])},
            'bn': {'scale': jnp.array([0.5]), 'bias': jnp.array([0.25])}}
  grads = [jax.tree.map(lambda x: (i + 1) * 0.3 * jnp.ones_like(x), params)
           for i in range(num_steps)]
  tx = optimizer.create_optimizer(ml_collections.ConfigDict(dict(
      momentum=MOMENTUM, nesterov=nesterov, weight_decay=WD,
      weight_decay_mode=mode, weight_decay_on=decay_on)), lambda step: LR)
  state = tx.init(params)
  for g in grads:
    updates, state = tx.update(g, state, params)
    params = jax.tree.map(lambda p, u: p + u, params, updates)
  return params, grads


def reference_sgd(w, gs, mode, nesterov, decays):
  w, v = np.array(w, np.float64), 0.0
  for g in gs:
    d = WD * w if decays else 0.0
    if mode == 'l2':  # PyTorch SGD(weight_decay): the L2 gradient joins momentum.
      g = g + d
      v = MOMENTUM * v + g
      w = w - LR * ((g + MOMENTUM * v) if nesterov else v)
    else:  # SGDW: momentum sees the data gradient only.
      v = MOMENTUM * v + g
      w = w - LR * (((g + MOMENTUM * v) if nesterov else v) + d)
  return w


@pytest.mark.parametrize('mode', ['l2', 'decoupled'])
@pytest.mark.parametrize('nesterov', [False, True])
@pytest.mark.parametrize('decay_on', ['all', 'kernels'])
def test_updates_follow_the_sgd_formula(mode, nesterov, decay_on):
  params, grads = run(mode, nesterov, decay_on)
  initial = {'conv': {'kernel': [1.0, -2.0]}, 'bn': {'scale': [0.5],
                                                     'bias': [0.25]}}
  for module, name in [('conv', 'kernel'), ('bn', 'scale'), ('bn', 'bias')]:
    decays = decay_on == 'all' or name == 'kernel'
    expected = reference_sgd(initial[module][name],
                             [np.asarray(g[module][name]) for g in grads],
                             mode, nesterov, decays)
    np.testing.assert_allclose(params[module][name], expected, rtol=1e-6)


def test_kernels_mask_selects_only_conv_and_dense_kernels():
  params = {'stem_conv': {'kernel': 0}, 'stem_bn': {'scale': 0, 'bias': 0},
            'head': {'kernel': 0, 'bias': 0}}
  assert optimizer.weight_decay_mask(params, 'kernels') == {
      'stem_conv': {'kernel': True}, 'stem_bn': {'scale': False, 'bias': False},
      'head': {'kernel': True, 'bias': False}}


def test_unknown_weight_decay_settings_are_rejected():
  with pytest.raises(ValueError, match="unknown weight_decay_on 'biases'"):
    optimizer.weight_decay_mask({}, 'biases')
  with pytest.raises(ValueError, match="unknown weight_decay_mode 'adamw'"):
    optimizer.create_optimizer(ml_collections.ConfigDict(dict(
        momentum=0.9, nesterov=False, weight_decay=1e-4,
        weight_decay_mode='adamw', weight_decay_on='all')), lambda s: 0.1)
