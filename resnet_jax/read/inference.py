"""A trained run loaded for inference (no Orbax, Optax or Matplotlib for a
release), and evaluated (`evaluate_split`: evaluate's and a release's check).

`load` rebuilds the model from a workdir's (or a release's) config.json and
restores one checkpoint of one run, or of all for their ensemble (the mean
of the runs' logits); its logits are of uint8 pixels, normalised as in
training. Loading writes nothing, so a run can be inspected while it trains.
"""

import dataclasses
import functools
import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from resnet_jax import utils
from resnet_jax.data import datasets
from resnet_jax.read import release_format
from resnet_jax.read import report
from resnet_jax.run import classifier
from resnet_jax.run import config_checks
from resnet_jax.run import runs

CHECKPOINT_CHOICES = ('latest', 'best')
SPLIT_ALIASES = {'validation': 'eval_split', 'test': 'test_split'}


@dataclasses.dataclass(frozen=True, eq=False)
class Loaded(classifier.Classifier):
  """One checkpoint of a workdir's runs, ready to classify images.

  `run` is None for the ensemble. `logits_fn(variables, images)`: one run's
  variables, uint8 images (N, *image_shape) -> float32 logits. `class_names`
  is None where they cannot be known here.
  """
  config: ml_collections.ConfigDict
  # Every run's {'params': ..., 'batch_stats': ...}, leading run axis.
  all_variables: dict
  run: int | None
  step: int
  class_names: tuple[str, ...] | None
  # What the training split was when the run trained (its checkpoint's
  # record, datasets.InMemoryDataset.source); None where none was recorded.
  train_data: str | None = None

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
    # A loop over the runs (written out on a CPU, as in training): vmapped,
    # XLA turns the runs' convolutions into grouped ones, which XLA:CPU runs
    # slowly (3 ResNet-20 runs' ensemble of 2,000 images on 2 cores: 305.6 s
    # vmapped, 29.9 s looped).
    return runs.over_runs(self.logits_fn, self.num_runs, in_axes=(0, None),
                          unroll=jax.default_backend() == 'cpu')

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
    """Logits of uint8 images (N, H, W, C), or of one image (H, W, C)."""
    images = np.asarray(images)
    if images.shape == self.image_shape:
      images = images[None]
    if images.dtype != np.uint8 or images.shape[1:] != self.image_shape:
      raise ValueError(
          f'images must be uint8 pixels of shape (N, '
          f'{", ".join(map(str, self.image_shape))}), got {images.dtype} '
          f'{images.shape}')
    return batched_logits(self.apply, images, batch_size)

  def per_run_logits(self, images: np.ndarray,
                     batch_size: int = 256) -> np.ndarray:
    """Every run's logits of `images`, (num_runs, N, num_classes)."""
    logits = batched_logits(
        lambda batch: self._runs_fn(self.all_variables, batch), images,
        batch_size)
    return logits.transpose(1, 0, 2)

  def probabilities(self, images: np.ndarray,
                    batch_size: int = 256) -> np.ndarray:
    """Class probabilities (softmax of `logits`), (N, num_classes)."""
    return np.asarray(jax.nn.softmax(self.logits(images, batch_size)))

  def predict(self, images: np.ndarray, batch_size: int = 256) -> list[str]:
    """The most probable class of each image: its name (or index)."""
    names = report.display_names(self.class_names, self.num_classes)
    return [names[i] for i in self.logits(images, batch_size).argmax(-1)]


def batched_logits(apply_fn, images: np.ndarray, batch_size: int) -> np.ndarray:
  """`apply_fn` over `images` in batches, the last zero-padded (so that a
  jitted `apply_fn` compiles once)."""
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
  return np.concatenate(outputs).astype(np.float32, copy=False)


def _check_train_data(recorded: str | None, train_ds, consequence: str):
  """Raises if the training split is not the data the run recorded."""
  if recorded and not datasets.same_data(recorded, train_ds.source):
    raise ValueError(
        f'the training data changed since the run trained: it was '
        f'{recorded}; it is now {train_ds.source}. {consequence}; restore '
        'the data as it was, or point --data_dir at a copy of it')


def examples_trained_on(loaded: 'Loaded', ds: datasets.InMemoryDataset
                        ) -> int:
  """How many examples of `ds` the run trained on (0 for held-out data).

  Refuses a slice of training data that changed since: an image folder is
  shuffled before slicing, so `train[90%:]` would hold other images.
  """
  data = loaded.config.data
  if ds.rows is None or ds.rows[0] != datasets.parse_split(
      data.train_split)[0]:
    return 0
  train_ds = datasets.load_split(data, data.train_split)  # Decoded already.
  _check_train_data(
      loaded.train_data, train_ds,
      f'{ds.source.partition(" of ")[0]!r} is a slice of it, so it would not '
      'hold the examples it held then (training ones may be among them)')
  return ds.shared_examples(train_ds)


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


def check_run(config, workdir: str, run: int, ensemble: bool) -> None:
  """Raises ValueError unless `run` (or `ensemble`) is a choice `config` has."""
  if isinstance(run, bool) or not isinstance(run, int):
    raise ValueError(f'run {run!r} is not a run number')
  if ensemble and run != 0:
    raise ValueError(f'choose one run (--run={run}) or the ensemble '
                     '(--ensemble), not both')
  if not 0 <= run < config.num_runs:
    raise ValueError(
        f'no run {run} in {workdir}: it holds num_runs={config.num_runs} '
        f'runs, 0..{config.num_runs - 1}')


def _check_shapes(variables: dict, expected: dict, workdir: str) -> None:
  """Raises ValueError unless `variables` has `expected`'s tree and shapes."""
  def shapes(tree):
    return {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  got, want = shapes(variables), shapes(expected)
  if got != want:
    differ = sorted(set(got.items()) ^ set(want.items()))[:3]
    raise ValueError(f'the weights of {workdir} are not of the model its '
                     f'config.json describes (first differences: {differ})')


def load(workdir: str, checkpoint='latest', run: int = 0,
         ensemble: bool = False, data_dir: str | None = None,
         config: ml_collections.ConfigDict | None = None) -> Loaded:
  """Loads a checkpoint of the runs in `workdir` (or a release) for inference.

  `checkpoint`: 'latest' (the newest that reads back intact), 'best' (by
  validation accuracy) or a step. `data_dir`: where the dataset is, if not
  where config.json says (read only for checkpoints older than the recorded
  normalisation). `config`: config.json as config_checks.read_config read
  and validated it, where the caller has (evaluate: to check the run and the
  split before loading). Any failure is a one-line ValueError.
  """
  checkpoint = parse_checkpoint(checkpoint)
  # A release: one weights file, no checkpoints; its config.json is checked
  # against the release's record before it is read.
  released, stored = release_format.read(workdir) or (None, None)
  if config is None:
    config = config_checks.read_config(workdir, data_dir)
  check_run(config, workdir, run, ensemble)
  if released is not None:
    if checkpoint not in (*CHECKPOINT_CHOICES, stored['step']):
      raise ValueError(f'{workdir} is a release of step {stored["step"]} '
                       f'only; --checkpoint={checkpoint} is not in it')
  else:
    # Orbax and the training side: for a workdir's checkpoints only.
    # pylint: disable=g-import-not-at-top
    from resnet_jax.run import checkpoints, experiment, parallel
    directory = os.path.join(os.path.abspath(workdir), 'checkpoints')
    if not os.path.isdir(directory):
      raise ValueError(f'no checkpoint in {workdir}: {directory} does not '
                       'exist')
    with checkpoints.Checkpointer(directory, metadata={},
                                  read_only=True) as reader:
      step = _choose_step(reader, checkpoint)
      stored = reader.stored_metadata(step)
    if stored is None:
      raise ValueError(f'cannot read the run metadata of any checkpoint in '
                       f'{directory}')
  training = stored.get('training') or {}
  normalization = (stored.get(datasets.RECORDED) or {}).get('normalization')
  train_ds = None
  if normalization is None and config.data.normalization == 'measured':
    # Recorded by no checkpoint before: measured again, on the same data.
    train_ds = datasets.load_split(config.data, config.data.train_split)
    _check_train_data(training.get('train_data'), train_ds,
                      'The run measured its normalisation on it, and that '
                      'cannot be measured again')
  image_shape = stored['image_shape']
  if released is not None:  # The model alone: no optimizer, no schedule.
    net = classifier.build(config, image_shape, train_ds=train_ds,
                           normalization=normalization)
    _check_shapes(released, net.variable_shapes(), workdir)
    variables = jax.tree.map(lambda x: np.asarray(x)[None], released)
    step = stored['step']
  else:
    net = experiment.build(
        config, dp=parallel.DataParallel('jit'), train_ds=train_ds,
        image_shape=image_shape, normalization=normalization)
    # The checkpoints must be of the model (and recipe) config.json
    # describes: the checkpointer compares its metadata before restoring.
    metadata = net.checkpoint_metadata(training=False)
    if training:
      metadata['training'] = experiment.recipe(config)
    with checkpoints.Checkpointer(directory, metadata=metadata,
                                  read_only=True) as checkpointer:
      state = checkpointer.restore(net.abstract_state(), step=step)
    variables = {'params': state.params, 'batch_stats': state.batch_stats}
    step = state.step[0]
  return Loaded(
      model=net.model, image_shape=net.image_shape, mean=net.mean,
      std=net.std, config=config, all_variables=variables,
      run=None if ensemble else run, step=int(step),
      class_names=_class_names(config, stored),
      train_data=training.get('train_data'))


def resolve_split(config, split: str) -> str:
  """The split string to load: the alias's config field, or `split` itself.

  'test' and 'validation' name the run's test_split and eval_split; where the
  run has none (the releases trained with test_split=''), they name the
  dataset's own split of that name, e.g. an image folder's test/ folder.
  """
  split = (split or '').strip()
  if not split:
    raise ValueError("--split is empty: use 'validation', 'test' or a split "
                     "of the dataset such as 'train[45000:]'")
  if split in SPLIT_ALIASES:
    field = SPLIT_ALIASES[split]
    resolved = config.data.get(field)
    if not resolved and datasets.has_split(config.data, split):
      return split
    if not resolved:
      # What does work on this run: its other held-out split, if any.
      others = [alias for alias, other in SPLIT_ALIASES.items()
                if alias != split and config.data.get(other)]
      hint = (f'--split={others[0]} (its '
              f'{config.data.get(SPLIT_ALIASES[others[0]])!r}) evaluates '
              'held-out images' if others else
              f'it has no held-out split: pass a split of {config.data.name} '
              f'it did not train on (it trained on '
              f'{config.data.train_split!r})')
      raise ValueError(f'this run has no {split} split '
                       f'(config.data.{field} is empty) and '
                       f'{config.data.name} has none named {split!r}; {hint}')
    return resolved
  datasets.parse_split(split)  # A malformed name fails here, in words.
  if not datasets.has_split(config.data, split):
    raise ValueError(f'{config.data.name} has no split {split!r}')
  return split


def evaluate_images(apply_fn, images, labels, *, batch_size: int,
                    class_names=None, tta: bool = False) -> tuple[dict, object]:
  """Classifies every image once; returns (summary, plain logits).

  `apply_fn(batch)` maps a batch of uint8 images to logits; `summary` is
  report.classification_summary of the plain logits, plus under 'tta' that
  of the averaged logits of each image and its flip.
  """
  logits = batched_logits(apply_fn, images, batch_size)
  summary = report.classification_summary(labels, logits, class_names)
  if tta:
    flip_logits = batched_logits(  # (N, H, W, C): W mirrored.
        apply_fn, images[:, :, ::-1], batch_size)
    summary['tta'] = {
        'transform': 'mean of the logits of the image and its horizontal flip',
        **report.classification_summary(labels, (logits + flip_logits) / 2,
                                        class_names),
    }
  return summary, logits


def evaluate_split(loaded: Loaded, split: str, tta: bool = False) -> tuple:
  """(the split, evaluate_images' summary and logits, how many of its examples
  the run trained on) of `split` (resolve_split's): the one evaluation, of
  the evaluate command and of a release's CPU check."""
  data = loaded.config.data
  try:
    # TFDS: fails fast offline. An image folder needs this split's folder
    # only (load_split checks it), not the train/ that check_available wants.
    if data.name != datasets.IMAGE_FOLDER:
      datasets.check_available(data)
    ds = datasets.load_split(data, split)
  except datasets.DatasetUnavailableError as e:
    # The advice for a trainer's config does not fit here: say the flag.
    raise ValueError(f'{e}; if the run\'s data is elsewhere on this machine, '
                     'pass --data_dir=DIR') from None
  ds.check_fits(loaded.image_shape, loaded.num_classes, f'split {split!r}')
  # Refuses a slice of training data that changed; counts training images.
  trained_on = examples_trained_on(loaded, ds)
  summary, logits = evaluate_images(
      loaded.apply, ds.images, ds.labels,
      batch_size=loaded.config.eval_batch_size,
      class_names=loaded.class_names or ds.class_names, tta=tta)
  return ds, summary, logits, trained_on
