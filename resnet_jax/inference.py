"""A trained run, loaded for inference: its config, model and one checkpoint.

A workdir written by train.py holds `config.json` (the run's config), the
checkpoints and the TensorBoard events. `load` rebuilds the model from the
config, restores a checkpoint's parameters and batch-norm statistics, and
compiles one function from uint8 pixels to logits: the model in inference mode
(running batch-norm statistics) after the normalisation the run trained with.
evaluate.py and predict.py are built on it.

A checkpoint holds config.num_runs runs (runs.py), run i of seed
config.seed + i. `load` picks one run (`run`, default 0), or with `ensemble`
all of them: the ensemble's logits are the mean of the runs' logits.

A released workdir (experiments/release.py: pretrained/<name>/) loads the
same way: its config.json describes one run, and its checkpoint, marked
WEIGHTS_ONLY in its metadata, holds that run's {step, params, batch_stats}
(run axis of size 1) without the optimizer state, restored as exactly that.

Loading writes nothing: the checkpoints are opened and restored, never tidied
or saved, so a workdir can be inspected while its run is still training.
"""

from collections.abc import Callable
import dataclasses
import functools
import json
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resnet_jax import checkpoints
from resnet_jax import datasets
from resnet_jax import experiment
from resnet_jax import models
from resnet_jax import parallel
from resnet_jax import runs

CONFIG_FILE = 'config.json'
CHECKPOINT_CHOICES = ('latest', 'best')
# The checkpoint metadata key of a checkpoint that holds `weights(state)`
# only (a released one), not the whole TrainState.
WEIGHTS_ONLY = 'weights_only'


@dataclasses.dataclass(frozen=True, eq=False)
class Loaded:
  """One checkpoint of a workdir's runs, ready to classify images.

  `run` is the run chosen, or None for the ensemble of all `num_runs` runs.
  `logits_fn(variables, images)` is jitted and takes one run's variables:
  uint8 images (N, H, W, C) of `image_shape` in, float32 logits
  (N, num_classes) out. `class_names` is None where the names cannot be
  known here (then show class indices).
  """
  config: ml_collections.ConfigDict
  model: models.ResNet
  # Every run's {'params': ..., 'batch_stats': ...}, leading run axis.
  all_variables: dict
  run: int | None
  step: int
  image_shape: tuple[int, int, int]
  mean: np.ndarray
  std: np.ndarray
  class_names: tuple[str, ...] | None
  logits_fn: Callable

  @property
  def num_classes(self) -> int:
    return int(self.config.model.num_classes)

  @property
  def num_runs(self) -> int:
    return int(self.config.num_runs)

  @property
  def seeds(self) -> list[int]:
    return runs.seeds(self.config)

  @property
  def seed(self) -> int | None:
    """The chosen run's seed; None for the ensemble."""
    return None if self.run is None else self.seeds[self.run]

  @property
  def selection(self) -> dict:
    """What was loaded, for result files: run and seed, or the ensemble."""
    if self.run is None:
      return {'ensemble': True, 'num_runs': self.num_runs,
              'seeds': self.seeds}
    return {'run': self.run, 'seed': self.seed, 'num_runs': self.num_runs}

  def describe(self) -> str:
    """The selection in words, for titles and console lines."""
    if self.run is None:
      return (f'ensemble of {self.num_runs} runs (seeds {self.seeds[0]}..'
              f'{self.seeds[-1]})')
    return f'run {self.run} (seed {self.seed})'

  @functools.cached_property
  def variables(self) -> dict:
    """The chosen run's variables; for the ensemble every run's (run axis)."""
    if self.run is None:
      return self.all_variables
    return runs.take(self.all_variables, self.run)

  @functools.cached_property
  def _over_runs(self):
    # Every run's logits of one batch in one program: (runs, N, classes).
    return jax.vmap(self.logits_fn, in_axes=(0, None))

  @functools.cached_property
  def _runs_fn(self):
    # Examples first, so that `batched_logits` can pad and slice them.
    return jax.jit(lambda v, images: jnp.moveaxis(
        self._over_runs(v, images), 0, 1))

  @functools.cached_property
  def _ensemble_fn(self):
    return jax.jit(lambda v, images: self._over_runs(v, images).mean(0))

  def apply(self, images):
    """Logits of one batch of uint8 images: the run's, or the runs' mean."""
    if self.run is None:
      return self._ensemble_fn(self.all_variables, images)
    return self.logits_fn(self.variables, images)

  def logits(self, images: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Logits of any number of images (see `batched_logits`)."""
    return batched_logits(self.apply, images, batch_size)

  def per_run_logits(self, images: np.ndarray,
                     batch_size: int = 256) -> np.ndarray:
    """Every run's logits of `images`, (num_runs, N, num_classes)."""
    logits = batched_logits(
        lambda batch: self._runs_fn(self.all_variables, batch), images,
        batch_size)
    return logits.transpose(1, 0, 2)


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


def weights(state) -> dict:
  """{step, params, batch_stats} of a TrainState (or of such a dict): what
  inference needs, and all that a released checkpoint holds."""
  if isinstance(state, dict):
    return {k: state[k] for k in ('step', 'params', 'batch_stats')}
  return {'step': state.step, 'params': state.params,
          'batch_stats': state.batch_stats}


def _class_names(config, stored_metadata) -> tuple[str, ...] | None:
  names = stored_metadata.get('class_names')
  if names is None:  # Checkpoints written before they recorded them.
    return datasets.class_names(config.data, config.model.num_classes)
  return tuple(names) if len(names) == config.model.num_classes else None


def check_run(config, workdir: str, run: int, ensemble: bool) -> None:
  """Raises ValueError unless `run` (or `ensemble`) is a choice `config` has."""
  if 'num_runs' not in config:
    raise ValueError(
        f'{os.path.join(workdir, CONFIG_FILE)} has no num_runs: {workdir} was '
        'written before checkpoints held several runs, and cannot be loaded '
        'by this version; train it again')
  if isinstance(run, bool) or not isinstance(run, int):
    raise ValueError(f'run {run!r} is not a run number')
  if ensemble and run != 0:
    raise ValueError(f'choose one run (--run={run}) or the ensemble '
                     '(--ensemble), not both')
  if not 0 <= run < config.num_runs:
    raise ValueError(
        f'no run {run} in {workdir}: it holds num_runs={config.num_runs} '
        f'runs, 0..{config.num_runs - 1}')


def load(workdir: str, checkpoint='latest', run: int = 0,
         ensemble: bool = False) -> Loaded:
  """Loads a checkpoint of the runs in `workdir` for inference.

  Args:
    workdir: a --workdir of resnet_jax.main, with config.json and
      checkpoints/, or a release of one run (experiments/release.py).
    checkpoint: 'latest' (the newest that reads back intact), 'best' (the
      best validation accuracy among the checkpoints saved with one) or a
      step number.
    run: which of the workdir's config.num_runs runs (seed config.seed +
      run) classifies.
    ensemble: instead of one run, all of them: the mean of their logits.

  Raises:
    ValueError: one-line reasons: no such workdir, no config.json (or one
      from before runs), no such run or checkpoint, a checkpoint of another
      model, data needed but missing.
  """
  checkpoint = parse_checkpoint(checkpoint)
  config = read_config(workdir)
  check_run(config, workdir, run, ensemble)
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
    target = exp.abstract_state()
    if stored.get(WEIGHTS_ONLY):
      # Orbax restores a tree of the saved structure: without opt_state.
      target = weights(target)
    state = weights(checkpointer.restore(target, step=step))
  return Loaded(
      config=config, model=exp.model,
      all_variables={'params': state['params'],
                     'batch_stats': state['batch_stats']},
      run=None if ensemble else run,
      step=int(state['step'][0]), image_shape=exp.image_shape, mean=exp.mean,
      std=exp.std, class_names=_class_names(config, stored),
      logits_fn=exp.logits_fn)
