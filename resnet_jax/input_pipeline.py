"""The host side of the input pipeline: whole splits in memory, seeded order.

The datasets are CIFAR-sized (50,000 32x32 images are 150 MB as uint8), so a
split is decoded once into host memory and every batch is a gather from it.
The host hands out raw uint8 images and int32 labels; cropping, flipping and
normalisation run on the device, inside the train step.

The training order is a pure function of (seed, step): epoch e is the
permutation `default_rng([seed, e])` of the examples, and step s takes the
rows of its global batch from it. Nothing depends on iterator state or on the
number of processes, so a run restored at step k sees exactly the batches of
an uninterrupted run, and P processes together see the batches of one (each
takes a contiguous 1/P of every global batch). The last partial batch of an
epoch is dropped, so every step has a full batch.

Evaluation covers every example exactly once: each process takes a contiguous
shard of the split and pads its last batches, marking real rows with
`mask` 1 and padding with 0; all processes yield the same number of batches
because the eval step is a collective.

Data comes from TFDS ('cifar10', 'cifar100') or from an image folder
`<root>/<split>/<class>/*.{jpg,jpeg,png}` ('image_folder'). Splits are named as
in TFDS: 'train', 'test', 'train[:45000]', 'train[45000:]', 'train[10%:20%]'.
An image folder's on-disk order is arbitrary (often class by class), so its
base split is put in a fixed order, `default_rng(split_shuffle_seed)`, before
slicing; TFDS splits are sliced as they are, the standard 45k/5k protocol.

TensorFlow is imported only to load TFDS data, and is kept off the GPUs, which
belong to JAX.
"""

import collections
from collections.abc import Callable, Iterable, Iterator
import dataclasses
import functools
import itertools
import os
import re
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np

TFDS_DATASETS = ('cifar10', 'cifar100')
IMAGE_FOLDER = 'image_folder'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')  # What tfds.ImageFolder reads.
SPLIT_FIELDS = ('train_split', 'eval_split', 'test_split')

# How long check_available waits for the download host before giving up.
_REACHABILITY_TIMEOUT_S = 3.0


class DatasetUnavailableError(ValueError):
  """The configured data is missing; the message says how to provide it."""


@dataclasses.dataclass(frozen=True, eq=False)
class InMemoryDataset:
  """A whole split in host memory. The arrays may be read-only views."""
  images: np.ndarray  # uint8 (N, H, W, C)
  labels: np.ndarray  # int32 (N,)
  class_names: tuple[str, ...]

  def __post_init__(self):
    if self.images.dtype != np.uint8 or self.images.ndim != 4:
      raise ValueError('images must be uint8 (N, H, W, C), got '
                       f'{self.images.dtype} {self.images.shape}')
    if self.labels.dtype != np.int32 or self.labels.shape != (
        len(self.images),):
      raise ValueError(f'labels must be int32 ({len(self.images)},), got '
                       f'{self.labels.dtype} {self.labels.shape}')

  @property
  def num_examples(self) -> int:
    return len(self.labels)

  @property
  def num_classes(self) -> int:
    return len(self.class_names)


# ----------------------------------------------------------------------------
# Split names.


@dataclasses.dataclass(frozen=True)
class SplitSlice:
  """The `[start:stop]` of a split name, in examples or in percent."""
  start: int | None = None
  stop: int | None = None
  percent: bool = False

  def resolve(self, num_examples: int) -> slice:
    """The slice of a base split of `num_examples`, in examples."""
    def bound(value):
      if value is None:
        return None
      if self.percent:  # Rounded to the closest example, as TFDS does.
        return int(round(value * num_examples / 100))
      if abs(value) > num_examples:
        raise ValueError(f'split bound {value} is out of range for a split of '
                         f'{num_examples} examples')
      return value
    return slice(bound(self.start), bound(self.stop))


_SPLIT_RE = re.compile(
    r'(?P<base>\w[\w-]*)(\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?')


def parse_split(split: str) -> tuple[str, SplitSlice]:
  """'train[:45000]' -> ('train', SplitSlice(None, 45000)).

  Accepts a base name, optionally sliced in examples ('train[45000:]',
  'train[:-5000]') or in percent ('train[10%:20%]'), both bounds in one unit.
  """
  match = _SPLIT_RE.fullmatch(split.strip()) if isinstance(split, str) else None
  if not match:
    raise ValueError(f'malformed split {split!r}: expected a name, optionally '
                     "sliced, e.g. 'train', 'train[:45000]', 'train[10%:20%]'")
  bounds = [match.group('start'), match.group('stop')]
  units = {b.endswith('%') for b in bounds if b is not None}
  if len(units) > 1:
    raise ValueError(f'malformed split {split!r}: both bounds must be in '
                     'examples or both in percent')
  percent = units == {True}
  start, stop = (None if b is None else int(b.rstrip('%')) for b in bounds)
  if percent and any(b is not None and abs(b) > 100 for b in (start, stop)):
    raise ValueError(f'malformed split {split!r}: percentages must be within '
                     '-100%..100%')
  return match.group('base'), SplitSlice(start, stop, percent)


# ----------------------------------------------------------------------------
# Loading.


def _config_fields_naming(config, base: str) -> list[str]:
  return [f'config.data.{field}' for field in SPLIT_FIELDS
          if config.get(field) and parse_split(config.get(field))[0] == base]


@functools.cache
def _import_tfds():
  """Imports TensorFlow Datasets, with TensorFlow kept off every GPU."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  try:
    # Without this TF reserves most of the GPU memory that JAX needs.
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:
    # TF was initialised before we imported it; fine if it has no GPU anyway.
    if tf.config.get_visible_devices('GPU'):
      raise
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  return tfds


def _is_mocked(builder_cls) -> bool:
  # tfds.testing.mock_data (or any test double) replaces the builder's readers
  # with functions from outside tensorflow_datasets.core; the data then comes
  # from the mock, whatever is on disk.
  return any(not getattr(getattr(builder_cls, method), '__module__',
                         '').startswith('tensorflow_datasets.core')
             for method in ('as_dataset', 'download_and_prepare'))


def _local_dir(path: str | None) -> str | None:
  # Absolute, so that the cache sees one folder under one name; URLs such as
  # gs://... are left alone.
  if not path or '://' in path:
    return path or None
  return os.path.abspath(os.path.expanduser(path))


def _tfds_builder(name: str, data_dir: str | None):
  return _import_tfds().builder(name, data_dir=_local_dir(data_dir))


def _image_folder_root(config) -> str:
  if not config.data_dir:
    raise DatasetUnavailableError(
        "config.data.name='image_folder' needs config.data.data_dir=<root>, "
        'a folder <root>/<split>/<class>/*.jpg|jpeg|png')
  root = _local_dir(config.data_dir)
  if not os.path.isdir(root):
    raise DatasetUnavailableError(
        f'image folder {root} does not exist; set config.data.data_dir to a '
        'folder <root>/<split>/<class>/*.jpg|jpeg|png')
  return root


def _image_folder_split_dir(config, root: str, base: str) -> str:
  split_dir = os.path.join(root, base)
  if not os.path.isdir(split_dir):
    fields = _config_fields_naming(config, base) or ['the split field']
    raise DatasetUnavailableError(
        f'image folder {root} has no {base!r} split (no {split_dir}); create '
        f"it, or set {' / '.join(fields)}='' to run without it")
  return split_dir


def _check_image_folder_classes(split_dir: str) -> None:
  # tfds.ImageFolder would silently skip an empty class or split.
  classes = sorted(c for c in os.listdir(split_dir)
                   if os.path.isdir(os.path.join(split_dir, c)))
  if not classes:
    raise DatasetUnavailableError(
        f'image folder split {split_dir} has no class subfolders; expected '
        f'{split_dir}/<class>/*.jpg|jpeg|png')
  for name in classes:
    files = os.listdir(os.path.join(split_dir, name))
    if not any(f.lower().endswith(IMAGE_EXTENSIONS) for f in files):
      raise DatasetUnavailableError(
          f'class folder {os.path.join(split_dir, name)} has no images '
          f"({'/'.join(IMAGE_EXTENSIONS)}); add some or remove the folder")


def _to_numpy(dataset, where: str):
  """Concatenates a (image, label) tf.data.Dataset into uint8/int32 arrays."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  images, labels = [], []
  # Chunks, not batch_size=-1: TFDS sizes that single batch from the split
  # info, which mock_data leaves empty (TF then aborts the process).
  try:
    for image, label in _import_tfds().as_numpy(dataset.batch(4096)):
      images.append(image)
      labels.append(label)
  except tf.errors.InvalidArgumentError as e:
    raise ValueError(f'cannot stack the images of {where}: they must all have '
                     f'the same height, width and channels ({e})') from e
  if not images:
    raise DatasetUnavailableError(f'{where} has no examples')
  return (np.concatenate(images).astype(np.uint8, copy=False),
          np.concatenate(labels).astype(np.int32))


def _load_tfds_base(name: str, data_dir: str | None, base: str,
                    download: bool):
  builder = _tfds_builder(name, data_dir)
  mocked = _is_mocked(type(builder))
  if not mocked and not builder.is_prepared():
    if not download:
      raise _unavailable_error(name, builder, 'config.data.download=False')
    builder.download_and_prepare()
  if not mocked and base not in builder.info.splits:
    raise DatasetUnavailableError(
        f'{name} has no split {base!r}; it has '
        f"{', '.join(builder.info.splits)}")
  dataset = builder.as_dataset(split=base, shuffle_files=False,
                               as_supervised=True)
  images, labels = _to_numpy(dataset, f'{name} {base!r}')
  return images, labels, tuple(builder.info.features['label'].names)


def _decode_image(data):
  """Decodes a JPEG or PNG to uint8 RGB, JPEGs as PIL and libjpeg do."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  # TF's default JPEG IDCT is the fast, inexact one: on the CIFAR-10 JPEGs it
  # shifts the red and blue means by over 1/255 against every other decoder.
  return tf.cond(
      tf.io.is_jpeg(data),
      lambda: tf.io.decode_jpeg(data, channels=3,
                                dct_method='INTEGER_ACCURATE'),
      lambda: tf.io.decode_png(data, channels=3))


def _load_image_folder_base(root: str, base: str):
  _check_image_folder_classes(os.path.join(root, base))
  tfds = _import_tfds()
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  builder = tfds.ImageFolder(root)
  dataset = builder.as_dataset(
      split=base, shuffle_files=False, as_supervised=True,
      decoders={'image': tfds.decode.SkipDecoding()})
  dataset = dataset.map(lambda data, label: (_decode_image(data), label),
                        num_parallel_calls=tf.data.AUTOTUNE)
  images, labels = _to_numpy(dataset, os.path.join(root, base))
  return images, labels, tuple(builder.info.features['label'].names)


@functools.lru_cache(maxsize=8)
def _cached_base(loader: Callable[..., tuple], *key):
  """Decodes a base split once per process; slices share the result."""
  images, labels, class_names = loader(*key)
  # Read-only, so that no caller can change what later callers get.
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels, class_names


def _check_name(config) -> None:
  if config.name not in TFDS_DATASETS + (IMAGE_FOLDER,):
    raise ValueError(f'unknown dataset config.data.name={config.name!r}; use '
                     f"one of {', '.join(TFDS_DATASETS + (IMAGE_FOLDER,))}")


def has_split(config, split: str) -> bool:
  """Whether the base of `split` exists (any slice of it is not checked)."""
  _check_name(config)
  base, _ = parse_split(split)
  if config.name == IMAGE_FOLDER:
    return os.path.isdir(os.path.join(_image_folder_root(config), base))
  builder = _tfds_builder(config.name, config.data_dir)
  splits = builder.info.splits
  # A mock serves any split; an unprepared dataset may not know its splits.
  return _is_mocked(type(builder)) or not splits or base in splits


def load_split(config, split: str) -> InMemoryDataset:
  """Loads a split, e.g. 'train[:45000]', into memory (see module doc)."""
  _check_name(config)
  base, split_slice = parse_split(split)
  if config.name == IMAGE_FOLDER:
    root = _image_folder_root(config)
    _image_folder_split_dir(config, root, base)
    images, labels, class_names = _cached_base(_load_image_folder_base, root,
                                               base)
    order = np.random.default_rng(config.split_shuffle_seed).permutation(
        len(labels))
    rows = order[split_slice.resolve(len(labels))]
  else:
    key = (config.name, _local_dir(config.data_dir), base,
           bool(config.download))
    if _is_mocked(_import_tfds().builder_cls(config.name)):
      # Each mock makes its own data: caching would leak it between tests.
      images, labels, class_names = _load_tfds_base(*key)
    else:
      images, labels, class_names = _cached_base(_load_tfds_base, *key)
    rows = split_slice.resolve(len(labels))
  images, labels = images[rows], labels[rows]
  if not len(labels):
    raise ValueError(f'split {split!r} is empty')
  return InMemoryDataset(images, labels, class_names)


# ----------------------------------------------------------------------------
# Availability, checked before any work starts.


def _download_address(builder) -> tuple[str, int]:
  """Where the download goes first: the proxy if any, else the data's host."""
  urls = list(getattr(builder, 'url_infos', None) or {})
  url = urllib.parse.urlsplit(urls[0] if urls else builder.info.homepage)
  proxy = urllib.request.getproxies().get(url.scheme)
  if proxy and not urllib.request.proxy_bypass(url.hostname or ''):
    url = urllib.parse.urlsplit(proxy)
  return url.hostname, url.port or (443 if url.scheme == 'https' else 80)


def _reachable(address: tuple[str, int]) -> bool:
  """Whether a TCP connection opens within the timeout."""
  result = []

  def connect():
    try:
      socket.create_connection(address, timeout=_REACHABILITY_TIMEOUT_S).close()
      result.append(True)
    except OSError:
      pass

  # The socket timeout does not cover name resolution, which can stall far
  # longer; a daemon thread bounds the whole attempt.
  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(_REACHABILITY_TIMEOUT_S)
  return bool(result)


def _manual_files_present(builder) -> bool:
  # TFDS takes a download from <data_dir>/downloads/manual/ when the file
  # there has the expected name, and then needs no network.
  names = [info.filename for info in (builder.url_infos or {}).values()]
  manual = os.path.join(builder.data_dir_root, 'downloads', 'manual')
  return bool(names) and all(
      os.path.exists(os.path.join(manual, n)) for n in names)


def _unavailable_error(name: str, builder,
                       reason: str) -> DatasetUnavailableError:
  # One line: the command line prints it as `error: <message>`.
  root = builder.data_dir_root
  files = ', '.join(i.filename for i in (builder.url_infos or {}).values())
  return DatasetUnavailableError(
      f'{name} is not prepared in data_dir {root} and cannot be downloaded '
      f'({reason}). To provide it: run `tfds build {name} --data_dir=DIR` on a '
      'machine with internet, copy DIR here and set config.data.data_dir=DIR; '
      f'or put {files or "the source archive"} in {root}/downloads/manual/ '
      '(the TFDS manual download dir) and set config.data.download=True; or '
      "use an image folder: config.data.name='image_folder', "
      'config.data.data_dir=<root> holding <root>/<split>/<class>/*.jpg|png.')


def check_available(config) -> None:
  """Raises within seconds if training could not get its data.

  TFDS: the dataset must be prepared in data_dir, or `download` set and the
  download host reachable (never TFDS's minutes of retries). Image folder: the
  folder and the train split's classes must exist. Malformed split names fail
  here too.
  """
  _check_name(config)
  for field in SPLIT_FIELDS:
    if config.get(field):
      parse_split(config.get(field))
  if config.name == IMAGE_FOLDER:
    root = _image_folder_root(config)
    base = parse_split(config.train_split)[0]
    _check_image_folder_classes(_image_folder_split_dir(config, root, base))
    return
  builder = _tfds_builder(config.name, config.data_dir)
  if _is_mocked(type(builder)) or builder.is_prepared():
    return
  if not config.download:
    raise _unavailable_error(config.name, builder, 'config.data.download=False')
  if _manual_files_present(builder):
    return
  host, port = _download_address(builder)
  if not _reachable((host, port)):
    raise _unavailable_error(
        config.name, builder, f'{host}:{port} is not reachable within '
        f'{_REACHABILITY_TIMEOUT_S:g} s')


def measure_channel_stats(ds: InMemoryDataset) -> tuple[np.ndarray, np.ndarray]:
  """Per-channel mean and std over all pixels, in 0..255 units (float32)."""
  channels = ds.images.shape[-1]
  total = np.zeros(channels, np.float64)
  total_sq = np.zeros(channels, np.float64)
  # Chunks bound the float64 temporaries (the whole of CIFAR would be 1.2 GB).
  for start in range(0, ds.num_examples, 4096):
    chunk = ds.images[start:start + 4096].reshape(-1, channels)
    chunk = chunk.astype(np.float64)
    total += chunk.sum(0)
    total_sq += np.square(chunk).sum(0)
  count = ds.images.size // channels
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0))
  return mean.astype(np.float32), std.astype(np.float32)


# ----------------------------------------------------------------------------
# Batches.


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full batches per epoch (the last partial batch is dropped)."""
  if global_batch_size <= 0:
    raise ValueError(f'global batch size must be positive, got '
                     f'{global_batch_size}')
  steps = num_examples // global_batch_size
  if not steps:
    raise ValueError(f'global batch size {global_batch_size} exceeds the '
                     f'{num_examples} training examples')
  return steps


def _per_process(global_batch_size: int, process_index: int,
                 process_count: int) -> int:
  if not 0 <= process_index < process_count:
    raise ValueError(f'process index {process_index} is not in '
                     f'0..{process_count - 1}')
  if global_batch_size <= 0 or global_batch_size % process_count:
    raise ValueError(f'global batch size {global_batch_size} must be a '
                     f'positive multiple of the {process_count} processes')
  return global_batch_size // process_count


@functools.lru_cache(maxsize=4)
def _epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  order.flags.writeable = False  # Shared by every caller through the cache.
  return order


def train_rows(num_examples: int, *, seed: int, step: int,
               global_batch_size: int, process_index: int = 0,
               process_count: int = 1) -> np.ndarray:
  """Which examples make this process's part of the training batch of `step`.

  A pure function of its arguments: each epoch is a permutation drawn from
  (seed, epoch), cut into consecutive global batches; the processes' parts,
  concatenated in process order, are the global batch.
  """
  per_process = _per_process(global_batch_size, process_index, process_count)
  if step < 0:
    raise ValueError(f'step must be >= 0, got {step}')
  spe = steps_per_epoch(num_examples, global_batch_size)
  order = _epoch_order(seed, step // spe, num_examples)
  start = (step % spe) * global_batch_size + process_index * per_process
  return order[start:start + per_process]


def train_batch(ds: InMemoryDataset, *, seed: int, step: int,
                global_batch_size: int, process_index: int = 0,
                process_count: int = 1) -> dict[str, np.ndarray]:
  """This process's part of the global training batch of `step` (see train_rows)."""
  rows = train_rows(ds.num_examples, seed=seed, step=step,
                    global_batch_size=global_batch_size,
                    process_index=process_index, process_count=process_count)
  return {'image': ds.images[rows], 'label': ds.labels[rows]}


def train_batches(ds: InMemoryDataset, *, seed: int, start_step: int,
                  global_batch_size: int, process_index: int = 0,
                  process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """`train_batch` for start_step, start_step + 1, ... without end."""
  step = start_step
  while True:
    yield train_batch(ds, seed=seed, step=step,
                      global_batch_size=global_batch_size,
                      process_index=process_index, process_count=process_count)
    step += 1


def eval_batches(ds: InMemoryDataset, *, global_batch_size: int,
                 process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Every example once over all processes, in padded, masked batches."""
  per_process = _per_process(global_batch_size, process_index, process_count)
  n = ds.num_examples
  # Contiguous shards whose sizes differ by at most one, as
  # tfds.split_for_jax_process makes them.
  shard_start = process_index * n // process_count
  shard_stop = (process_index + 1) * n // process_count
  largest_shard = -(-n // process_count)
  num_batches = -(-largest_shard // per_process)
  for i in range(num_batches):
    start = min(shard_start + i * per_process, shard_stop)
    stop = min(start + per_process, shard_stop)
    real = stop - start
    image = np.zeros((per_process,) + ds.images.shape[1:], np.uint8)
    label = np.zeros(per_process, np.int32)
    mask = np.zeros(per_process, np.float32)
    image[:real], label[:real], mask[:real] = (
        ds.images[start:stop], ds.labels[start:stop], 1)
    yield {'image': image, 'label': label, 'mask': mask}


def prefetch(iterator: Iterable, put_fn: Callable, size: int = 2) -> Iterator:
  """Yields put_fn(item) for each item, applying it `size` items ahead.

  put_fn is typically a host-to-device transfer, which JAX runs
  asynchronously: the next batches travel while the device computes.
  """
  if size < 1:
    raise ValueError(f'prefetch size must be >= 1, got {size}')
  iterator = iter(iterator)
  queue = collections.deque()

  def enqueue(count):
    for item in itertools.islice(iterator, count):
      queue.append(put_fn(item))

  enqueue(size)
  while queue:
    yield queue.popleft()
    enqueue(1)
