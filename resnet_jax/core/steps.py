"""The train state and the train and eval steps: pure, written once for every
layout.

Each step works on the examples it is given. When `axis_name` names a
data-parallel axis (under `jax.pmap` or `jax.shard_map`, see parallel.py), the
gradients, batch-norm statistics and metrics are combined over that axis, so the
result equals that of one device holding the whole global batch.

A batch is a dict with 'image' (N, H, W, C) and 'label' (N,) and, optionally,
'mask' (N,): a per-example weight, 0 for the padding that fills a final
partial batch. Images arrive as the model takes them, or as raw pixels with an
`augment_fn` / `preprocess_fn` (see augment.py) that turns them into input on
the device. Metrics are sums (weighted loss, correct predictions, example
count), so they add up exactly over devices, over steps and over a padded
final batch: divide by 'count' for means.
"""

from typing import Any

from flax.training import train_state
import jax
import jax.numpy as jnp
import optax

from resnet_jax.core import augment


class TrainState(train_state.TrainState):
  """Flax's TrainState (step, apply_fn, params, tx, opt_state) plus batch_stats.

  `apply_fn` and `tx` are static: the arrays are the whole state, so it can be
  jitted, donated, replicated and checkpointed as one pytree.
  """
  batch_stats: Any


def create_train_state(rng: jax.Array, model, tx: optax.GradientTransformation,
                       image_shape) -> TrainState:
  """Initialises `model` for images of `image_shape` (H, W, C): He
  initialisation, batch-norm statistics at mean 0, variance 1."""
  variables = jax.jit(model.init, static_argnames='train')(
      rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables['batch_stats'], tx=tx)


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
               label_smoothing: float = 0.0, augment_fn=None,
               axis_name: str | None = None):
  """One SGD step on the mean loss over the (global) batch.

  `rng` is the step's key: `augment_fn(images, keys)`, when given, transforms
  the images with one key per example (augment.example_keys).

  Returns the new state and the metric sums, plus the learning rate used.
  """
  images = batch['image']
  if augment_fn is not None:
    images = augment_fn(
        images, augment.example_keys(rng, images.shape[0], axis_name))
  weights = _weights(batch)
  # Each device divides its own sum by the global weight and the gradients
  # are then summed: exactly the gradient of the global mean, whatever the
  # split, masked examples included.
  total_weight = jnp.maximum(_sum_over(jnp.sum(weights), axis_name), 1.0)

  def loss_fn(params):
    logits, updates = state.apply_fn(
        {'params': params, 'batch_stats': state.batch_stats}, images,
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


def eval_step(state: TrainState, batch, *, preprocess_fn=None,
              axis_name: str | None = None):
  """Metric sums of the model in inference mode (running batch-norm stats).

  `preprocess_fn(images)`, when given, turns raw pixels into model input.
  """
  images = batch['image']
  if preprocess_fn is not None:
    images = preprocess_fn(images)
  logits = state.apply_fn(
      {'params': state.params, 'batch_stats': state.batch_stats}, images,
      train=False)
  per_example = cross_entropy(logits, batch['label'])
  return _metric_sums(logits, batch['label'], per_example, _weights(batch),
                      axis_name)
