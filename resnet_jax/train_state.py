"""The training state: step, parameters, batch-norm statistics, optimizer state."""

from typing import Any

from flax.training import train_state
import jax
import jax.numpy as jnp
import optax


class TrainState(train_state.TrainState):
  """Flax's TrainState (step, apply_fn, params, tx, opt_state) plus batch_stats.

  `apply_fn` and `tx` are static: the arrays are the whole state, so it can be
  jitted, donated, replicated and checkpointed as one pytree.
  """
  batch_stats: Any


def create_train_state(rng: jax.Array, model, tx: optax.GradientTransformation,
                       image_shape) -> TrainState:
  """Initialises `model` for images of `image_shape` (H, W, C).

  He initialisation comes from the model; batch-norm statistics start at mean
  0, variance 1.
  """
  variables = jax.jit(model.init, static_argnames='train')(
      rng, jnp.zeros((1, *image_shape), jnp.float32), train=False)
  return TrainState.create(apply_fn=model.apply, params=variables['params'],
                           batch_stats=variables['batch_stats'], tx=tx)
