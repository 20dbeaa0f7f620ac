"""Loading whole splits into host memory: TFDS's CIFAR or an image folder.

The datasets are CIFAR-sized (50,000 32x32 images are 150 MB as uint8), so a
split is decoded once into host memory, as uint8 images and int32 labels, and
every batch is a gather from it (batching.py).

Data comes from TFDS ('cifar10', 'cifar100') or from an image folder
`<root>/<split>/<class>/*.{jpg,jpeg,png}` ('image_folder'). Splits are named as
in TFDS: 'train', 'test', 'train[:45000]', 'train[45000:]', 'train[10%:20%]'.
TFDS splits are sliced as they are, the standard 45k/5k protocol. An image
folder's on-disk order is arbitrary (often class by class), so its base split
is put in a fixed order, `default_rng(split_shuffle_seed)`, before slicing.

Image folders are decoded with Pillow, exactly as TensorFlow decodes them
(JPEGs with the accurate integer IDCT). TensorFlow is imported only to read
TFDS data, and is then kept off the GPUs, which belong to JAX.
"""

from collections.abc import Callable
import dataclasses
import functools
import hashlib
import os
import random
import re
import socket
import threading
import urllib.parse
import urllib.request

import numpy as np
from PIL import Image

TFDS_DATASETS = ('cifar10', 'cifar100')
IMAGE_FOLDER = 'image_folder'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
SPLIT_FIELDS = ('train_split', 'eval_split', 'test_split')

# TFDS knows CIFAR-10's names only once the dataset is prepared (they come
# from the downloaded archive); unprepared, its builder says '0'..'9'. These
# are the archive's batches.meta.txt, in label order.
CIFAR10_CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                       'frog', 'horse', 'ship', 'truck')

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
  # What the examples are, for a checkpoint to tell whether a resume would
  # read other data: the split and a description of its source that changes
  # when the source does (see load_split).
  source: str = ''
  # Which rows of its base split these are, (base, start, stop), in the
  # order the base is sliced in: two splits overlap where their ranges do.
  rows: tuple[str, int, int] | None = None

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

  def shared_examples(self, other: 'InMemoryDataset') -> int:
    """How many examples this split and `other` share (slices of one base)."""
    if self.rows is None or other.rows is None or self.rows[0] != other.rows[0]:
      return 0
    return max(0, min(self.rows[2], other.rows[2]) -
               max(self.rows[1], other.rows[1]))


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


def _config_fields_naming(config, base: str) -> list[str]:
  return [f'config.data.{field}' for field in SPLIT_FIELDS
          if config.get(field) and parse_split(config.get(field))[0] == base]


def local_dir(path: str | None) -> str | None:
  """`path` made absolute (one folder, one name: the cache's key, and what a
  run records); URLs such as gs://... are left alone."""
  if not path or '://' in path:
    return path or None
  return os.path.abspath(os.path.expanduser(path))


# ----------------------------------------------------------------------------
# TFDS.


@functools.cache
def _import_tfds():
  """Imports TensorFlow Datasets, with TensorFlow kept off every GPU."""
  # TF only reads records here: silence its C++ start-up banners (oneDNN's
  # numerics notice among them; no TF computation is used).
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
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


def _tfds_builder(name: str, data_dir: str | None):
  return _import_tfds().builder(name, data_dir=local_dir(data_dir))


def _load_tfds_base(name: str, data_dir: str | None, base: str,
                    download: bool):
  builder = _tfds_builder(name, data_dir)
  if not builder.is_prepared():
    if not download:
      raise _unavailable_error(name, builder, 'config.data.download=False')
    builder.download_and_prepare()
  if base not in builder.info.splits:
    raise DatasetUnavailableError(
        f'{name} has no split {base!r}; it has '
        f"{', '.join(builder.info.splits)}")
  images, labels = _import_tfds().as_numpy(builder.as_dataset(
      split=base, batch_size=-1, shuffle_files=False, as_supervised=True))
  source = f'{name} {builder.info.version} {base!r}: {len(labels)} examples'
  return (images.astype(np.uint8, copy=False), labels.astype(np.int32),
          tuple(builder.info.features['label'].names), source)


# ----------------------------------------------------------------------------
# Image folders.


def _visible(directory: str, want_dir: bool) -> list[str]:
  """The sorted entries of `directory` that are (not) folders, hidden ones out.

  Hidden names ('.DS_Store', macOS's '._x.png', '.ipynb_checkpoints') are
  never data.
  """
  return sorted(
      name for name in os.listdir(directory) if not name.startswith('.')
      and os.path.isdir(os.path.join(directory, name)) == want_dir)


def _image_files(class_dir: str) -> list[str]:
  return [name for name in _visible(class_dir, want_dir=False)
          if name.lower().endswith(IMAGE_EXTENSIONS)]


# What a run's workdir holds (checkpoints.py's folder, workdir.py's holder
# file): a folder with one is a run put inside the image folder, never a
# split or a class.
WORKDIR_MARKERS = ('checkpoints', '.trainer')


def _check_not_a_run(directory: str, root: str) -> None:
  for marker in WORKDIR_MARKERS:
    if os.path.lexists(os.path.join(directory, marker)):
      raise DatasetUnavailableError(
          f'{directory} holds a run (its {marker}): a --workdir inside the '
          f'image folder {root} is read as a split or class of it; move the '
          f'run out of {root}')


def _image_folder_classes(root: str) -> tuple[str, ...]:
  # The labels are indices into the sorted class folders of all the splits
  # together (as tfds.ImageFolder numbered them), so that a class missing
  # from one split moves no label in another.
  names = set()
  for split in _visible(root, want_dir=True):
    _check_not_a_run(os.path.join(root, split), root)
    for name in _visible(os.path.join(root, split), want_dir=True):
      _check_not_a_run(os.path.join(root, split, name), root)
      names.add(name)
  return tuple(sorted(names))


def _image_folder_root(config) -> str:
  if not config.data_dir:
    raise DatasetUnavailableError(
        "config.data.name='image_folder' needs config.data.data_dir=<root>, "
        'a folder <root>/<split>/<class>/*.jpg|jpeg|png')
  root = local_dir(config.data_dir)
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


def _check_image_folder_classes(split_dir: str) -> list[str]:
  """The split's class folders, each of which must hold an image."""
  classes = _visible(split_dir, want_dir=True)
  if not classes:
    raise DatasetUnavailableError(
        f'image folder split {split_dir} has no class subfolders; expected '
        f'{split_dir}/<class>/*.jpg|jpeg|png')
  for name in classes:
    if not _image_files(os.path.join(split_dir, name)):
      raise DatasetUnavailableError(
          f'class folder {os.path.join(split_dir, name)} has no images '
          f"({'/'.join(IMAGE_EXTENSIONS)}); add some or remove the folder")
  return classes


def decode_image(path: str, formats=('JPEG', 'PNG')) -> np.ndarray | str:
  """uint8 RGB pixels (H, W, 3) of an image file, else why it cannot be read.

  The one decoder of the project: the image folders' (JPEG and PNG) and
  predict's (any of Pillow's `formats` with None), so that predict on a
  dataset's file classifies exactly the pixels training and evaluate used.
  Pillow's libjpeg uses the accurate integer IDCT, as TF's decode_jpeg with
  dct_method='INTEGER_ACCURATE' (TF's default, fast IDCT shifts the CIFAR-10
  JPEGs' red and blue means by over 1/255). Grey, palette and alpha images
  become RGB as in TF's decode_png(channels=3): grey repeated (16-bit grey
  cut to its high byte), the palette looked up, alpha dropped (not
  composited); like TF, the EXIF orientation is not applied.
  """
  try:
    with Image.open(path, formats=formats) as image:
      if image.mode == 'I;16':  # 16-bit grey, which TF cuts to its high byte.
        grey = (np.asarray(image) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
      return np.asarray(image if image.mode == 'RGB' else image.convert('RGB'))
  except Image.UnidentifiedImageError:
    return ('not a JPEG or PNG image' if formats == ('JPEG', 'PNG') else
            'not an image (Pillow does not recognise it)')
  except Exception as e:  # pylint: disable=broad-except
    # Damage shows as OSError, SyntaxError, ValueError... depending on where.
    return getattr(e, 'strerror', None) or str(e) or type(e).__name__


def _folder_state(split_dir: str) -> tuple:
  """What a decoded split depends on: its files' names, sizes and times."""
  state = []
  for class_dir, _, files in sorted(os.walk(split_dir)):
    for name in sorted(files):
      try:
        stat = os.stat(os.path.join(class_dir, name))
        state.append((class_dir, name, stat.st_size, stat.st_mtime_ns))
      except OSError:
        state.append((class_dir, name))  # Decoding will say what is wrong.
  return tuple(state)


def _load_image_folder_base(root: str, base: str, folder_state: tuple):
  del folder_state  # Only part of the cache key: a changed folder reloads.
  split_dir = os.path.join(root, base)
  class_names = _image_folder_classes(root)
  paths, labels = [], []
  for name in _check_image_folder_classes(split_dir):
    files = _image_files(os.path.join(split_dir, name))
    paths += [os.path.join(split_dir, name, f) for f in files]
    labels += [class_names.index(name)] * len(files)
  # One by one: threads made it slower. Pillow parses each file's headers in
  # Python, holding the GIL, which is most of the ~70 us a CIFAR JPEG takes;
  # 50,000 take about 4 s.
  images = [decode_image(path) for path in paths]
  bad = [(p, why) for p, why in zip(paths, images) if isinstance(why, str)]
  if bad:
    (path, why), more = bad[0], len(bad) - 1
    raise DatasetUnavailableError(
        f'cannot decode image {path} ({why})' + (
            f' nor {more} more image{"s" * (more > 1)} of {split_dir}'
            if more else '') + '; replace or remove the bad files')
  sizes = {}
  for path, image in zip(paths, images):
    sizes.setdefault(image.shape[:2], path)
  if len(sizes) > 1:
    raise DatasetUnavailableError(
        f'the images of {split_dir} must all have one size (height x width); '
        'found ' + ', '.join(
            f'{h}x{w} ({path})' for (h, w), path in sizes.items()))
  # tfds.ImageFolder's order (the class-by-class list shuffled by
  # random.Random(<split name>)), which earlier runs sliced: train[:45000]
  # keeps meaning the same images.
  order = list(range(len(paths)))
  random.Random(base).shuffle(order)
  # The file list and sizes (all that runs recorded before, see same_data),
  # then the pixels in the same order: adding, removing, renaming or
  # replacing an image, even by another of the same size, changes it. The
  # pixels' hash costs about 0.2 s for 50,000 CIFAR images.
  listing, pixels = hashlib.sha256(), hashlib.sha256()
  for path, image in zip(paths, images):
    listing.update(f'{os.path.relpath(path, root)}\t'
                   f'{os.path.getsize(path)}\n'.encode())
    pixels.update(image)
  source = (f'image folder {base!r}: {len(paths)} files, sha256 of names and '
            f'sizes {listing.hexdigest()[:16]}{_PIXELS}'
            f'{pixels.hexdigest()[:16]}')
  return (np.stack([images[i] for i in order]),
          np.asarray(labels, np.int32)[order], class_names, source)


_PIXELS = ', of pixels '


def same_data(recorded: str | None, source: str) -> bool:
  """Whether `source` (InMemoryDataset.source) is the data a run recorded.

  Runs recorded before the pixels were hashed name an image folder's file
  names and sizes only: those match when the names and sizes still do.
  """
  return recorded == source or (
      recorded is not None and _PIXELS not in recorded and
      source.startswith(recorded + _PIXELS))


# ----------------------------------------------------------------------------
# Loading.


@functools.lru_cache(maxsize=8)
def _cached_base(loader: Callable[..., tuple], *key):
  """Decodes a base split once per process; slices share the result."""
  images, labels, class_names, source = loader(*key)
  # Read-only, so that no caller can change what later callers get.
  images.flags.writeable = False
  labels.flags.writeable = False
  return images, labels, class_names, source


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
  splits = _tfds_builder(config.name, config.data_dir).info.splits
  return not splits or base in splits  # Unprepared, TFDS may not know them.


def load_split(config, split: str) -> InMemoryDataset:
  """Loads a split, e.g. 'train[:45000]', into memory (see module doc)."""
  _check_name(config)
  base, split_slice = parse_split(split)
  if config.name == IMAGE_FOLDER:
    root = _image_folder_root(config)
    _image_folder_split_dir(config, root, base)
    images, labels, class_names, source = _cached_base(
        _load_image_folder_base, root, base,
        _folder_state(os.path.join(root, base)))
    order = np.random.default_rng(config.split_shuffle_seed).permutation(
        len(labels))
  else:
    images, labels, class_names, source = _cached_base(
        _load_tfds_base, config.name, local_dir(config.data_dir), base,
        bool(config.download))
    order = None
  positions = split_slice.resolve(len(labels))
  rows = positions if order is None else order[positions]
  start, stop, _ = positions.indices(len(labels))
  images, labels = images[rows], labels[rows]
  if not len(labels):
    raise ValueError(f'split {split!r} is empty')
  return InMemoryDataset(images, labels, class_names,
                         source=f'{split} of {source}',
                         rows=(base, start, max(start, stop)))


def class_names(config, num_classes: int) -> tuple[str, ...] | None:
  """The class names in label order, or None where they are unknown here.

  cifar10 and cifar100: from TFDS's dataset info (the prepared data_dir);
  cifar10's are also known without the data. image_folder: the sorted class
  folders, so the folder must be here. None also when the names found are not
  `num_classes` (the model's number of classes).
  """
  if config.name == IMAGE_FOLDER:
    root = local_dir(config.data_dir)
    names = (_image_folder_classes(root) if root and os.path.isdir(root)
             else None)
  elif config.name in TFDS_DATASETS:
    try:
      names = tuple(_tfds_builder(config.name, config.data_dir)
                    .info.features['label'].names)
    except Exception:  # pylint: disable=broad-except
      names = ()  # No names is no reason to refuse to classify.
    if names == tuple(str(i) for i in range(len(names))):
      # Unprepared: TFDS has only numbers.
      names = CIFAR10_CLASS_NAMES if config.name == 'cifar10' else None
  else:
    names = None
  return names if names and len(names) == num_classes else None


# ----------------------------------------------------------------------------
# Availability, checked before any work starts.


def _download_address(builder) -> tuple[str, int]:
  """Where the download goes first: the proxy if any, else the data's host."""
  urls = list(builder.url_infos or {})
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


def _source_files(builder) -> list[str]:
  return [info.filename for info in (builder.url_infos or {}).values()]


def _unavailable_error(name: str, builder,
                       reason: str) -> DatasetUnavailableError:
  # One line: the command line prints it as `error: <message>`.
  root = builder.data_dir_root
  files = ', '.join(_source_files(builder)) or 'the source archive'
  return DatasetUnavailableError(
      f'{name} is not prepared in data_dir {root} and cannot be downloaded '
      f'({reason}). To provide it: run `tfds build {name} --data_dir=DIR` on a '
      'machine with internet, copy DIR here and add --config.data.data_dir=DIR; '
      f'or put {files} in {root}/downloads/manual/ (the TFDS manual download '
      'dir) and add --config.data.download=True; or train on a folder of '
      'images <root>/<split>/<class>/*.jpg|png by adding '
      '--config.data.name=image_folder --config.data.data_dir=<root> '
      '--config.data.test_split= (leave the last out if <root> has a test '
      'split folder).')


def check_available(config) -> None:
  """Raises within seconds if training could not get its data.

  TFDS: the dataset must be prepared in data_dir, or `download` set and the
  source archive in the manual download dir or its host reachable (never
  TFDS's minutes of retries). Image folder: the folder and the train split's
  classes must exist. Malformed split names fail here too.
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
  if builder.is_prepared():
    return
  if not config.download:
    raise _unavailable_error(config.name, builder, 'config.data.download=False')
  # TFDS takes the archive from <data_dir>/downloads/manual/ when it is there
  # under its expected name, and then needs no network.
  manual = os.path.join(builder.data_dir_root, 'downloads', 'manual')
  files = _source_files(builder)
  if files and all(os.path.exists(os.path.join(manual, f)) for f in files):
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
