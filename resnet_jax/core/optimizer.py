"""SGD with momentum and weight decay, as an Optax transformation.

Weight decay comes in two forms (`optimizer.weight_decay_mode`):

- 'l2' (the paper's): the gradient of 0.5 * wd * ||w||^2 is added to the data
  gradient before momentum. This is exactly an L2 term in the loss (and
  PyTorch's SGD `weight_decay`), written as a gradient transformation so that
  data parallelism sums only the data gradient over devices.
- 'decoupled' (SGDW, Loshchilov & Hutter 2019): wd * w is added after
  momentum, so the decay is not accumulated in the velocity; it is still
  multiplied by the scheduled learning rate.

`optimizer.weight_decay_on` says which parameters decay: 'all' (every
parameter, batch-norm scale and bias and the dense bias included, as in Caffe
and the common PyTorch reproduction) or 'kernels' (convolution and dense
kernels only).
"""

import jax

WEIGHT_DECAY_MODES = ('l2', 'decoupled')
WEIGHT_DECAY_ON = ('all', 'kernels')


def weight_decay_mask(params, weight_decay_on: str):
  """A pytree of booleans: which parameters weight decay applies to."""
  if weight_decay_on not in WEIGHT_DECAY_ON:
    raise ValueError(f'unknown weight_decay_on {weight_decay_on!r}; '
                     f'choose one of {WEIGHT_DECAY_ON}')
  if weight_decay_on == 'all':
    return jax.tree.map(lambda _: True, params)
  return jax.tree_util.tree_map_with_path(
      lambda path, _: path[-1].key == 'kernel', params)


def create_optimizer(config, learning_rate_fn):
  """SGD for the config's `optimizer` block, an Optax transformation following
  `learning_rate_fn` (an optax.Schedule)."""
  # Imported here: a config is read and checked (WEIGHT_DECAY_*) without it.
  import optax  # pylint: disable=g-import-not-at-top
  if config.weight_decay_mode not in WEIGHT_DECAY_MODES:
    raise ValueError(f'unknown weight_decay_mode {config.weight_decay_mode!r};'
                     f' choose one of {WEIGHT_DECAY_MODES}')
  decay = optax.add_decayed_weights(
      config.weight_decay,
      mask=lambda params: weight_decay_mask(params, config.weight_decay_on))
  momentum = optax.trace(decay=config.momentum, nesterov=config.nesterov)
  steps = [decay, momentum] if config.weight_decay_mode == 'l2' else [
      momentum, decay]
  return optax.chain(*steps, optax.scale_by_learning_rate(learning_rate_fn))
