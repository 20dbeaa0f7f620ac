"""What a run classifies with: its model and its inputs' normalisation, built
alike for training (experiment.py) and inference (inference.py). It needs no
optimizer, schedule or checkpoint library: loading a release imports none.
"""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax.core import augment
from resnet_jax.core import models
from resnet_jax.data import datasets


@dataclasses.dataclass(frozen=True, eq=False)
class Classifier:
  """A model, the images (H, W, C) it takes and the per-channel mean and std
  (0..255 units) that its uint8 inputs are normalised with."""
  model: models.ResNet
  image_shape: tuple[int, int, int]
  mean: np.ndarray
  std: np.ndarray

  @functools.cached_property
  def logits_fn(self):
    """Jitted (one run's variables, uint8 images) -> logits, as in eval_step."""

    @jax.jit
    def logits_fn(variables, images):
      inputs = augment.normalize(images, self.mean, self.std)
      return self.model.apply(variables, inputs, train=False)

    return logits_fn

  def variable_shapes(self) -> dict:
    """One run's {'params', 'batch_stats'}: shapes and dtypes, traced."""
    return jax.eval_shape(functools.partial(self.model.init, train=False),
                          jax.random.key(0),
                          jnp.zeros((1, *self.image_shape), jnp.float32))

  def recorded(self) -> dict:
    """The normalisation, as checkpoints and releases record it for readers."""
    return {datasets.RECORDED: {'normalization': {
        'mean': [float(x) for x in self.mean],
        'std': [float(x) for x in self.std]}}}


def build(config, image_shape, *, axis_name: str | None = None,
          train_ds: datasets.InMemoryDataset | None = None,
          normalization: dict | None = None) -> Classifier:
  """The classifier `config` describes, for images of `image_shape`, its
  inputs normalised with `normalization` ({'mean', 'std'}, as recorded), else
  config.data's constants or, where it measures them, `train_ds`'s."""
  if normalization is not None:
    mean, std = normalization['mean'], normalization['std']
  elif config.data.normalization == 'measured':
    if train_ds is None:
      raise ValueError(
          "this run used config.data.normalization='measured': its mean and "
          'std are measured on the training split '
          f'{config.data.train_split!r}, which must be loaded to build it')
    mean, std = datasets.measure_channel_stats(train_ds)
  else:
    mean, std = config.data.mean, config.data.std
  return Classifier(
      model=models.create_model(config.model, axis_name),
      image_shape=tuple(int(n) for n in image_shape),
      mean=np.asarray(mean, np.float32), std=np.asarray(std, np.float32))
