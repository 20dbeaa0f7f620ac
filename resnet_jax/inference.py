"""A trained run, loaded for inference: its config, model and one checkpoint.

A workdir written by train.py holds `config.json` (the run's config), the
checkpoints and the TensorBoard events. `load` rebuilds the model from the
config, restores a checkpoint's parameters and batch-norm statistics, and
compiles one function from uint8 pixels to logits: the model in inference mode
(running batch-norm statistics) after the normalisation the run trained with.
evaluate.py and predict.py are built on it.

Loading writes nothing: the checkpoints are opened and restored, never tidied
or saved, so a workdir can be inspected while its run is still training.
"""

from collections.abc import Callable
import dataclasses
import json
import os

import jax
import ml_collections
import numpy as np

from resnet_jax import checkpoints
from resnet_jax import datasets
from resnet_jax import experiment
from resnet_jax import models
from resnet_jax import parallel

CONFIG_FILE = 'config.json'
CHECKPOINT_CHOICES = ('latest', 'best')


@dataclasses.dataclass(frozen=True, eq=False)
class Loaded:
  """One checkpoint of a run, ready to classify images.

  `logits_fn(variables, images)` is jitted: uint8 images (N, H, W, C) of
  `image_shape` in, float32 logits (N, num_classes) out. `class_names` is None
  where the names cannot be known here (then show class indices).
  """
  config: ml_collections.ConfigDict
  model: models.ResNet
  variables: dict  # {'params': ..., 'batch_stats': ...}
  step: int
  image_shape: tuple[int, int, int]
  mean: np.ndarray
  std: np.ndarray
  class_names: tuple[str, ...] | None
  logits_fn: Callable

  @property
  def num_classes(self) -> int:
    return int(self.config.model.num_classes)

  def apply(self, images):
    """Logits of one batch of uint8 images: `logits_fn` on these variables."""
    return self.logits_fn(self.variables, images)

  def logits(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of any number of images (see `batched_logits`)."""
    return batched_logits(self.apply, images, batch_size)


def batched_logits(apply_fn, images: np.ndarray, batch_size: int) -> np.ndarray:
  """`apply_fn` over `images` in batches, each image exactly once.

  The last batch is padded to `batch_size` with zeros, so a jitted `apply_fn`
  compiles once; the padding's logits are dropped.
  """
  if batch_size < 1:
    raise ValueError(f'batch size must be positive, got {batch_size}')
  outputs = []
  for start in range(0, len(images), batch_size):
    chunk = images[start:start + batch_size]
    real = len(chunk)
    if real < batch_size:
      padding = np.zeros((batch_size - real,) + chunk.shape[1:], chunk.dtype)
      chunk = np.concatenate([chunk, padding])
    outputs.append(np.asarray(jax.device_get(apply_fn(chunk)))[:real])
  if not outputs:
    raise ValueError('no images to classify')
  logits = np.concatenate(outputs).astype(np.float32, copy=False)
  if len(logits) != len(images):
    raise RuntimeError(f'computed {len(logits)} logits for {len(images)} '
                       'images')
  return logits


def read_config(workdir: str) -> ml_collections.ConfigDict:
  """The config the run in `workdir` trained with, from its config.json."""
  if not os.path.isdir(workdir):
    raise ValueError(f'workdir {workdir} does not exist or is not a directory')
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(
        f'{path} is missing: {workdir} is not a workdir written by '
        'resnet_jax.main (or was written before runs saved their config)')
  try:
    with open(path) as f:
      # JSON has no tuples: tuple fields (mean, std, ...) come back as lists.
      return ml_collections.ConfigDict(json.load(f))
  except (json.JSONDecodeError, TypeError, AttributeError) as e:
    raise ValueError(f'{path} is not a config written by the trainer: {e}'
                     ) from None


def parse_checkpoint(value) -> str | int:
  """'latest', 'best' or a step number (given as an int or a string of one)."""
  if isinstance(value, int) and not isinstance(value, bool):
    step = value
  elif isinstance(value, str) and value.strip() in CHECKPOINT_CHOICES:
    return value.strip()
  elif isinstance(value, str) and value.strip().isdigit():
    step = int(value)
  else:
    raise ValueError(f'checkpoint {value!r}: use latest, best or a step number')
  if step < 0:
    raise ValueError(f'checkpoint step must be >= 0, got {step}')
  return step


def _choose_step(reader, checkpoint) -> int | None:
  """The step to restore: None for the newest readable one."""
  steps = reader.all_steps()
  if not steps:
    raise ValueError(f'no checkpoint in {reader.directory}')
  if checkpoint == 'latest':
    return None
  if checkpoint == 'best':
    step = reader.best_step()
    if step is None:
      raise ValueError(
          f'no best checkpoint is known in {reader.directory} (none was saved '
          f'with a validation accuracy); use latest or one of {steps}')
    return step
  if checkpoint not in steps:
    raise ValueError(f'no checkpoint of step {checkpoint} in '
                     f'{reader.directory}; there are {steps}')
  return checkpoint


def _class_names(config, stored_metadata) -> tuple[str, ...] | None:
  names = stored_metadata.get('class_names')
  if names is None:  # Checkpoints written before they recorded them.
    return datasets.class_names(config.data, config.model.num_classes)
  return tuple(names) if len(names) == config.model.num_classes else None


def load(workdir: str, checkpoint='latest') -> Loaded:
  """Loads a checkpoint of the run in `workdir` for inference.

  Args:
    workdir: a run's --workdir, with config.json and checkpoints/.
    checkpoint: 'latest' (the newest that reads back intact), 'best' (the
      best validation accuracy among the checkpoints saved with one) or a
      step number.

  Raises:
    ValueError: one-line reasons: no such workdir, no config.json, no such
      checkpoint, a checkpoint of another model, data needed but missing.
  """
  checkpoint = parse_checkpoint(checkpoint)
  config = read_config(workdir)
  directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
  if not os.path.isdir(directory):
    raise ValueError(f'no checkpoint in {workdir}: {directory} does not exist')
  with checkpoints.Checkpointer(directory, metadata={},
                                read_only=True) as reader:
    step = _choose_step(reader, checkpoint)
    stored = reader.stored_metadata(step)
  if stored is None:
    raise ValueError(f'cannot read the run metadata of any checkpoint in '
                     f'{directory}')
  train_ds = None
  if config.data.normalization == 'measured':
    # Its mean and std are the training split's, measured again.
    train_ds = datasets.load_split(config.data, config.data.train_split)
  exp = experiment.build(
      config, dp=parallel.DataParallel('jit'), train_ds=train_ds,
      image_shape=tuple(int(n) for n in stored['image_shape']))
  # The checkpoints must be of the model config.json describes: the
  # checkpointer compares its metadata before restoring anything.
  with checkpoints.Checkpointer(
      directory, metadata=exp.checkpoint_metadata(training=False),
      read_only=True) as checkpointer:
    state = checkpointer.restore(exp.abstract_state(), step=step)
  return Loaded(
      config=config, model=exp.model,
      variables={'params': state.params, 'batch_stats': state.batch_stats},
      step=int(state.step), image_shape=exp.image_shape, mean=exp.mean,
      std=exp.std, class_names=_class_names(config, stored),
      logits_fn=exp.logits_fn)
