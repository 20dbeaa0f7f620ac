"""The train and eval steps: pure functions, written once for every layout.

Each step works on the examples it is given. When `axis_name` names a
data-parallel axis (under `jax.pmap` or `jax.shard_map`, see parallel.py), the
gradients, batch-norm statistics and metrics are combined over that axis, so the
result equals that of one device holding the whole global batch.

A batch is a dict with 'image' (N, H, W, C) and 'label' (N,) and, optionally,
'mask' (N,): a per-example weight, 0 for the padding that fills a final
partial batch. Metrics are sums (weighted loss, correct predictions, example
count), so they add up exactly over devices, over steps and over a padded
final batch: divide by 'count' for means.
"""

import jax
import jax.numpy as jnp
import optax

from resnet_jax.train_state import TrainState


def _sum_over(x, axis_name):
  return x if axis_name is None else jax.lax.psum(x, axis_name)


def cross_entropy(logits, labels, label_smoothing: float = 0.0):
  """Per-example softmax cross-entropy against (optionally smoothed) labels."""
  targets = jax.nn.one_hot(labels, logits.shape[-1], dtype=logits.dtype)
  if label_smoothing:
    targets = optax.smooth_labels(targets, label_smoothing)
  return optax.softmax_cross_entropy(logits, targets)


def _weights(batch):
  return batch.get('mask', jnp.ones(batch['label'].shape, jnp.float32))


def _metric_sums(logits, labels, per_example_loss, weights, axis_name):
  correct = (jnp.argmax(logits, -1) == labels).astype(jnp.float32)
  return _sum_over({
      'loss': jnp.sum(per_example_loss * weights),
      'correct': jnp.sum(correct * weights),
      'count': jnp.sum(weights),
  }, axis_name)


def train_step(state: TrainState, batch, rng: jax.Array, *, learning_rate_fn,
               label_smoothing: float = 0.0, axis_name: str | None = None):
  """One SGD step on the mean loss over the (global) batch.

  `rng` is the step's random key; the step itself draws nothing from it yet
  (ResNets have no dropout), and keeps it in the signature so that data
  augmentation and other stochastic parts run inside the step.

  Returns the new state and the metric sums, plus the learning rate used.
  """
  del rng
  weights = _weights(batch)
  # Each device divides its own sum by the global weight and the gradients
  # are then summed: exactly the gradient of the global mean, whatever the
  # split, masked examples included.
  total_weight = jnp.maximum(_sum_over(jnp.sum(weights), axis_name), 1.0)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, batch['image'],
        train=True, mutable=['batch_stats'])
    per_example = cross_entropy(logits, batch['label'], label_smoothing)
    return (jnp.sum(per_example * weights) / total_weight,
            (logits, per_example, updates['batch_stats']))

  grads, (logits, per_example, batch_stats) = jax.grad(
      loss_fn, has_aux=True)(state.params)
  grads = _sum_over(grads, axis_name)
  metrics = _metric_sums(logits, batch['label'], per_example, weights,
                         axis_name)
  metrics['learning_rate'] = learning_rate_fn(state.step)
  new_state = state.apply_gradients(grads=grads, batch_stats=batch_stats)
  return new_state, metrics


def eval_step(state: TrainState, batch, *, axis_name: str | None = None):
  """Metric sums of the model in inference mode (running batch-norm stats)."""
  logits = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats},
      batch['image'], train=False)
  per_example = cross_entropy(logits, batch['label'])
  return _metric_sums(logits, batch['label'], per_example, _weights(batch),
                      axis_name)
