"""Augmentation and normalisation on the device, inside the jitted steps.

The host hands over uint8 images in a seeded order; everything random happens
here, drawn from the step's key. Each example's key is folded from the step key
and the example's position in the global batch, so an example is augmented the
same way whatever the number of devices or processes, and a run resumed at
step k repeats exactly what an uninterrupted run does there.

The augmentation is the paper's: zero-pad 4 pixels on every side, take a
random crop of the original size, flip horizontally with probability 1/2. The
padding is black in pixel space (before normalisation), as with torchvision's
RandomCrop(32, padding=4) followed by Normalize. `augment` reads its settings
from the config's data group itself, so a new augmentation is written here
and its field declared in defaults.py, nowhere else.
"""

import jax
import jax.numpy as jnp


def example_keys(rng: jax.Array, num_local: int, axis_name: str | None):
  """One key per example of this device's slice of the global batch."""
  offset = 0 if axis_name is None else jax.lax.axis_index(axis_name) * num_local
  positions = offset + jnp.arange(num_local)
  return jax.vmap(jax.random.fold_in, in_axes=(None, 0))(rng, positions)


def crop_and_flip(image, key, padding: int, flip: bool):
  """A random crop of `image` (H, W, C) zero-padded by `padding`; maybe flipped."""
  height, width, channels = image.shape
  crop_key, flip_key = jax.random.split(key)
  padded = jnp.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  top, left = jax.random.randint(crop_key, (2,), 0, 2 * padding + 1)
  image = jax.lax.dynamic_slice(padded, (top, left, 0),
                                (height, width, channels))
  if flip:
    image = jnp.where(jax.random.bernoulli(flip_key), image[:, ::-1], image)
  return image


def normalize(images, mean, std):
  """(uint8 or float pixels - mean) / std per channel, in float32."""
  mean = jnp.asarray(mean, jnp.float32)
  std = jnp.asarray(std, jnp.float32)
  return (images.astype(jnp.float32) - mean) / std


def augment(images, keys, *, mean, std, data):
  """The training transform of a batch: crop and flip each image as `data`
  (config.data: crop_padding, random_flip) says, then normalise."""
  images = jax.vmap(crop_and_flip, in_axes=(0, 0, None, None))(
      images, keys, data.crop_padding, data.random_flip)
  return normalize(images, mean, std)
