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

from resnet_jax import augment
from resnet_jax import checkpoints
from resnet_jax import input_pipeline
from resnet_jax import models
from resnet_jax import optimizer
from resnet_jax import schedules
from resnet_jax import train
from resnet_jax import train_state

CONFIG_FILE = 'config.json'
CHECKPOINT_CHOICES = ('latest', 'best')

# TFDS knows CIFAR-10's names only once the dataset is prepared (they come
# from the downloaded archive); unprepared, its builder says '0'..'9'. These
# are the archive's batches.meta.txt, in label order.
CIFAR10_CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                       'frog', 'horse', 'ship', 'truck')


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


def normalization(config) -> tuple[np.ndarray, np.ndarray]:
  """The per-channel mean and std (0..255 units) the run normalised with.

  With `data.normalization='measured'` they are measured again from the
  training split, exactly as the trainer did, so that split must be present.
  """
  data = config.data
  if data.normalization != 'measured':
    return (np.asarray(data.mean, np.float32), np.asarray(data.std, np.float32))
  try:
    train_ds = input_pipeline.load_split(data, data.train_split)
  except input_pipeline.DatasetUnavailableError as e:
    raise ValueError(
        "this run used config.data.normalization='measured': its mean and std "
        f'are measured on the training split {data.train_split!r}, which '
        f'cannot be loaded here ({e})') from None
  return input_pipeline.measure_channel_stats(train_ds)


def _image_folder_class_names(data) -> tuple[str, ...] | None:
  # As tfds.ImageFolder names them (and so as the trainer's labels go): the
  # sorted class folders of all the splits together.
  root = os.path.abspath(os.path.expanduser(data.data_dir or ''))
  if not data.data_dir or not os.path.isdir(root):
    return None
  names = set()
  for split in os.listdir(root):
    split_dir = os.path.join(root, split)
    if os.path.isdir(split_dir):
      names.update(c for c in os.listdir(split_dir)
                   if os.path.isdir(os.path.join(split_dir, c)))
  return tuple(sorted(names)) or None


def _tfds_class_names(data) -> tuple[str, ...] | None:
  tfds = input_pipeline._import_tfds()  # pylint: disable=protected-access
  data_dir = data.data_dir or None
  if data_dir and '://' not in data_dir:
    data_dir = os.path.abspath(os.path.expanduser(data_dir))
  try:
    names = tuple(tfds.builder(data.name, data_dir=data_dir)
                  .info.features['label'].names)
  except Exception:  # pylint: disable=broad-except
    names = ()  # No names is no reason to refuse to classify.
  if names == tuple(str(i) for i in range(len(names))):
    # Unprepared (or mocked): TFDS has only numbers.
    return CIFAR10_CLASS_NAMES if data.name == 'cifar10' else None
  return names or None


def class_names(config) -> tuple[str, ...] | None:
  """The run's class names in label order, or None where they are unknown.

  cifar10 and cifar100: from TFDS's dataset info (the prepared data_dir);
  cifar10's are also known without the data. image_folder: the sorted class
  folder names, so the folder must be here. None also when the names found do
  not match the model's number of classes.
  """
  data = config.data
  if data.name == input_pipeline.IMAGE_FOLDER:
    names = _image_folder_class_names(data)
  elif data.name in input_pipeline.TFDS_DATASETS:
    names = _tfds_class_names(data)
  else:
    names = None
  if names is not None and len(names) != config.model.num_classes:
    return None
  return names


def make_logits_fn(model: models.ResNet, mean, std) -> Callable:
  """Jitted (variables, uint8 images) -> logits, as the eval step has them."""
  mean = np.asarray(mean, np.float32)
  std = np.asarray(std, np.float32)

  @jax.jit
  def logits_fn(variables, images):
    inputs = augment.normalize(images, mean, std)
    return model.apply(variables, inputs, train=False)

  return logits_fn


def _image_shape(reader: checkpoints.Checkpointer, step: int | None):
  """The image shape recorded with checkpoint `step` (None: the newest)."""
  candidates = [step] if step is not None else reversed(reader.all_steps())
  problems = []
  for candidate in candidates:
    try:
      metadata = reader.metadata(candidate)
      return tuple(int(n) for n in metadata['image_shape'])
    except Exception as e:  # pylint: disable=broad-except
      problems.append(f'step {candidate}: {type(e).__name__}: {e}')
  raise ValueError(f'cannot read the run metadata of the checkpoints in '
                   f'{reader.directory} ({"; ".join(problems)})')


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
  # Neither Checkpointer saves, so neither writes: save_every_steps and keep
  # only matter for saving.
  with checkpoints.Checkpointer(directory, save_every_steps=1, keep=1,
                                metadata={}) as reader:
    step = _choose_step(reader, checkpoint)
    image_shape = _image_shape(reader, step)

  model = models.create_model(config.model)
  tx = optimizer.create_optimizer(
      config.optimizer, schedules.create_learning_rate_fn(
          config.schedule, config.batch_size, config.num_train_steps))
  # Only the target's shapes, dtypes and placement matter to the restore:
  # eval_shape traces the initialisation without compiling or running it
  # (seconds saved on every load).
  device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
  target = jax.tree.map(
      lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device),
      jax.eval_shape(lambda: train_state.create_train_state(
          jax.random.key(0), model, tx, image_shape)))
  # The checkpoints must be of the model config.json describes: the
  # checkpointer compares its metadata before restoring anything.
  with checkpoints.Checkpointer(
      directory, save_every_steps=1, keep=1,
      metadata=train.checkpoint_metadata(config, image_shape)) as checkpointer:
    state = checkpointer.restore(target, step=step)
  mean, std = normalization(config)
  return Loaded(
      config=config, model=model,
      variables={'params': state.params, 'batch_stats': state.batch_stats},
      step=int(state.step), image_shape=image_shape, mean=mean, std=std,
      class_names=class_names(config),
      logits_fn=make_logits_fn(model, mean, std))

