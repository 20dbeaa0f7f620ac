"""Whole splits in host memory, as uint8 images and int32 labels.

Data comes from TFDS ('cifar10', 'cifar100') or an image folder
`<root>/<split>/<class>/*.{jpg,jpeg,png}` ('image_folder'). CIFAR-sized splits
(50,000 32x32 images are 150 MB) are decoded once per process and every batch
is a gather from them (batching.py). Splits are named as in TFDS: 'train',
'train[:45000]', 'train[10%:20%]'. TFDS splits are sliced as they are; an
image folder's base split, in no meaningful order on disk, is first put in the
order `default_rng(split_shuffle_seed)`. TensorFlow is imported only to read
TFDS data (the `tfds` extra installs it), and is kept off the GPUs, which
belong to JAX.
"""

import dataclasses
import errno
import functools
import hashlib
import io
import os
import random
import re
import socket
import stat
import threading
import urllib.parse
import urllib.request

from absl import logging
import numpy as np
from PIL import Image

from resnet_jax import utils

TFDS_DATASETS = ('cifar10', 'cifar100')
IMAGE_FOLDER = 'image_folder'
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png')
SPLIT_FIELDS = ('train_split', 'eval_split', 'test_split')
# Unprepared, TFDS names CIFAR-10's classes '0'..'9'; these are its archive's.
CIFAR10_CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog',
                       'frog', 'horse', 'ship', 'truck')
# What a workdir holds (checkpoints.py's folder, workdir.py's holder
# file): such a folder inside an image folder is never a split or a class.
WORKDIR_MARKERS = ('checkpoints', '.trainer')
_REACHABILITY_TIMEOUT_S = 3.0  # check_available's wait for the download host.
_FOLDER_HELP = 'a folder <root>/<split>/<class>/*.jpg|jpeg|png'
# A checkpoint's metadata (and a release's record) under this key is for
# readers, never compared: the normalisation, which the recipe and data decide.
RECORDED = 'recorded'


class DatasetUnavailableError(ValueError):
  """The configured data is missing; the message says how to provide it."""


@dataclasses.dataclass(frozen=True, eq=False)
class InMemoryDataset:
  """A whole split in host memory. The arrays may be read-only views."""
  images: np.ndarray  # uint8 (N, H, W, C)
  labels: np.ndarray  # int32 (N,)
  class_names: tuple[str, ...]
  # The split and its source, changing when the data does: a checkpoint
  # records it to refuse a resume on other data.
  source: str = ''
  # (base split, start, stop): these rows of the base, in its sliced order.
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

  def check_fits(self, image_shape, num_classes: int, name: str) -> None:
    """Raises ValueError unless a model of `image_shape` and `num_classes`
    fits this split. The network pools globally: images of another size would
    run, and give figures of a task the model was never trained on."""
    if self.num_classes != num_classes:
      raise ValueError(f'{name} has {self.num_classes} classes, the model '
                       f'{num_classes}')
    if tuple(self.images.shape[1:]) != tuple(image_shape):
      shape = lambda s: 'x'.join(str(int(n)) for n in s)
      raise ValueError(f'{name} has images of {shape(self.images.shape[1:])}, '
                       f'the model takes {shape(image_shape)} (the training '
                       "split's)")


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
      if value is not None and self.percent:  # To the closest, as TFDS.
        return int(round(value * num_examples / 100))
      if value is not None and abs(value) > num_examples:
        raise ValueError(f'split bound {value} is out of range for a split of '
                         f'{num_examples} examples')
      return value
    return slice(bound(self.start), bound(self.stop))


_SPLIT_RE = re.compile(
    r'(?P<base>\w[\w-]*)(\[(?P<start>-?\d+%?)?:(?P<stop>-?\d+%?)?\])?')


def parse_split(split: str) -> tuple[str, SplitSlice]:
  """'train[:45000]' -> ('train', SplitSlice(None, 45000)); see module doc."""
  match = _SPLIT_RE.fullmatch(split.strip()) if isinstance(split, str) else None
  if not match:
    raise ValueError(f'malformed split {split!r}: expected a name, optionally '
                     "sliced, e.g. 'train', 'train[:45000]', 'train[10%:20%]'")
  bounds = [match.group('start'), match.group('stop')]
  units = {b.endswith('%') for b in bounds if b is not None}
  if len(units) > 1:
    raise ValueError(f'malformed split {split!r}: both bounds must be in '
                     'examples or both in percent')
  start, stop = (None if b is None else int(b.rstrip('%')) for b in bounds)
  if units == {True} and any(abs(b or 0) > 100 for b in (start, stop)):
    raise ValueError(f'malformed split {split!r}: percentages must be within '
                     '-100%..100%')
  return match.group('base'), SplitSlice(start, stop, units == {True})


def local_dir(path: str | None) -> str | None:
  """`path` made absolute (the cache's key, and what a run records); URLs
  such as gs://... are left alone."""
  if not path or '://' in path:
    return path or None
  return os.path.abspath(utils.expand_path(path))


# ----------------------------------------------------------------------------
# TFDS.


def _tfds_missing(error: ImportError) -> DatasetUnavailableError:
  return DatasetUnavailableError(  # One line, as the command line prints it.
      f'{", ".join(TFDS_DATASETS)} come from TensorFlow Datasets, which is not '
      f"installed (no module {error.name!r}): pip install 'resnet_jax[tfds]' "
      '(an image folder needs no TensorFlow)')


@functools.cache
def _import_tfds():
  """Imports TensorFlow Datasets, with TensorFlow kept off every GPU. The base
  install has neither (the `tfds` extra): then one line says so."""
  # TF only reads records here: no C++ start-up banners.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  os.environ.setdefault('TF_ENABLE_ONEDNN_OPTS', '0')
  try:
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise _tfds_missing(e) from e
  try:
    # Else TF reserves most of the GPU memory that JAX needs.
    tf.config.set_visible_devices([], 'GPU')
  except RuntimeError:  # TF was initialised already: fine without a GPU.
    if tf.config.get_visible_devices('GPU'):
      raise
  try:
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise _tfds_missing(e) from e
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
  """The sorted folders (or files) of `directory`, hidden ones ('.DS_Store',
  macOS's '._x.png', '.ipynb_checkpoints') out: they are never data."""
  return sorted(
      name for name in os.listdir(directory) if not name.startswith('.')
      and os.path.isdir(os.path.join(directory, name)) == want_dir)


def _image_files(class_dir: str) -> list[str]:
  return [name for name in _visible(class_dir, want_dir=False)
          if name.lower().endswith(IMAGE_EXTENSIONS)]


def _image_folder_classes(root: str) -> tuple[str, ...]:
  """The sorted class folders of all the splits together, as tfds.ImageFolder
  numbered them: a class missing from one split moves no label in another."""
  names = set()
  for split in _visible(root, want_dir=True):
    split_dir = os.path.join(root, split)
    classes = _visible(split_dir, want_dir=True)
    for directory in [split_dir, *(os.path.join(split_dir, c)
                                   for c in classes)]:
      for marker in WORKDIR_MARKERS:
        if os.path.lexists(os.path.join(directory, marker)):
          raise DatasetUnavailableError(
              f'{directory} holds a workdir (its {marker}): a --workdir '
              f'inside the image folder {root} is read as a split or class '
              f'of it; move the workdir out of {root}')
    names.update(classes)
  return tuple(sorted(names))


def _image_folder_root(config) -> str:
  root = local_dir(config.data_dir)
  if not root:
    raise DatasetUnavailableError(
        "config.data.name='image_folder' needs config.data.data_dir=<root>, "
        + _FOLDER_HELP)
  if not os.path.isdir(root):
    raise DatasetUnavailableError(
        f'image folder {root} does not exist; set config.data.data_dir to '
        + _FOLDER_HELP)
  return root


def _image_folder_split(config, base: str):
  """(root, split folder, all class names) of a split whose every class
  folder has images."""
  root = _image_folder_root(config)
  class_names = _image_folder_classes(root)
  split_dir = os.path.join(root, base)
  if not os.path.isdir(split_dir):
    fields = [f'config.data.{field}' for field in SPLIT_FIELDS
              if config.get(field) and parse_split(config[field])[0] == base]
    raise DatasetUnavailableError(
        f'image folder {root} has no {base!r} split (no {split_dir}); create '
        f"it, or set {' / '.join(fields or ['the split field'])}='' to run "
        'without it')
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
  return root, split_dir, class_names


# Pillow modes whose convert('RGB') is exact: the twin's bytes, looked up
# (palette), repeated (grey, bilevel 0/255), alpha or padding dropped, or by
# the standard formulas (CMYK with K, JPEG's YCbCr), as TF's decoders do.
_RGB_MODES = ('1', 'L', 'LA', 'P', 'PA', 'RGB', 'RGBA', 'RGBX', 'CMYK',
              'YCbCr')
# 16-bit grey in either byte order, and the 32-bit 'I' into which PNG and
# PPM/PGM widen 16-bit samples (PGM's maxval scaled to 65535): the twin is
# the high byte, as decode_png(channels=3) and libpng's strip_16 give it.
_GREY16_MODES = ('I;16', 'I;16L', 'I;16B', 'I;16N')
_GREY16_FORMATS = ('PNG', 'PPM')


def read_regular_file(path: str) -> bytes:
  """The bytes of `path`, a regular file or a symlink to one.

  Opened without blocking and checked before reading, so that nothing a user
  passes (a FIFO, /dev/zero, a terminal, a directory) is waited on or read
  forever.

  Raises:
    OSError: `path` is missing, unreadable or not a regular file; its
      strerror says which in a few words.
  """
  not_regular = 'not a regular file (a FIFO, device or socket)'
  try:
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
  except OSError as e:
    if e.errno == errno.ENXIO:  # A socket: it cannot be opened.
      raise OSError(errno.EINVAL, not_regular, path) from None
    raise
  try:
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
      raise OSError(errno.EISDIR if stat.S_ISDIR(mode) else errno.EINVAL,
                    'is a directory' if stat.S_ISDIR(mode) else not_regular,
                    path)
    with os.fdopen(fd, 'rb', closefd=False) as f:
      return f.read()
  finally:
    os.close(fd)


def decode(data: bytes, formats=('JPEG', 'PNG')) -> np.ndarray | str:
  """uint8 RGB pixels (H, W, 3) of an image file's bytes, else why not.

  The one decoder (image folders and predict's files), decoding as TF did:
  Pillow's libjpeg uses the accurate integer IDCT (TF's decode_jpeg with
  dct_method='INTEGER_ACCURATE'); every other mode becomes its 8-bit RGB
  twin as in decode_png(channels=3) (see _RGB_MODES, _GREY16_MODES); modes
  without one (float, 32-bit, premultiplied alpha, LAB, HSV) are refused.
  The EXIF orientation is not applied.
  """
  try:
    with Image.open(io.BytesIO(data), formats=formats) as image:
      if image.mode in _RGB_MODES:
        return np.asarray(image if image.mode == 'RGB' else
                          image.convert('RGB'))
      if image.mode in _GREY16_MODES or (image.mode == 'I' and
                                         image.format in _GREY16_FORMATS):
        grey = (np.asarray(image).astype(np.uint32) >> 8).astype(np.uint8)
        return np.repeat(grey[..., None], 3, axis=-1)
      return (f'pixels of mode {image.mode} ({image.format}) have no exact '
              '8-bit RGB form; save the image as 8-bit RGB')
  except Image.UnidentifiedImageError:
    return ('not a JPEG or PNG image' if formats == ('JPEG', 'PNG') else
            'not an image (Pillow does not recognise it)')
  except Exception as e:  # pylint: disable=broad-except
    # Damage shows as OSError, SyntaxError, ValueError... depending on where.
    return getattr(e, 'strerror', None) or str(e) or type(e).__name__


def decode_image(path: str, formats=('JPEG', 'PNG')) -> np.ndarray | str:
  """`decode` of the file at `path` (read_regular_file), else why not."""
  try:
    return decode(read_regular_file(path), formats)
  except OSError as e:
    return e.strerror or str(e)


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


def _load_image_folder_base(root: str, base: str, class_names: tuple,
                            folder_state: tuple):
  del folder_state  # Only part of the cache key: a changed folder reloads.
  split_dir = os.path.join(root, base)
  paths, labels = [], []
  for name in _visible(split_dir, want_dir=True):
    files = _image_files(os.path.join(split_dir, name))
    paths += [os.path.join(split_dir, name, f) for f in files]
    labels += [class_names.index(name)] * len(files)
  # One by one: threads were slower (Pillow holds the GIL). ~4 s for 50,000.
  # Each file is read once, for its pixels and the fingerprint.
  listing, files, images = hashlib.sha256(), hashlib.sha256(), []
  for path in paths:
    try:
      data = read_regular_file(path)
    except OSError as e:
      images.append(e.strerror or str(e))
      continue
    entry = f'{os.path.relpath(path, root)}\t{len(data)}\n'.encode()
    listing.update(entry)
    files.update(entry)
    files.update(data)
    images.append(decode(data))
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
  # tfds.ImageFolder's order, which earlier runs sliced: train[:45000] keeps
  # meaning the same images.
  order = list(range(len(paths)))
  random.Random(base).shuffle(order)
  files = files.hexdigest()[:16]
  pixels = hashlib.sha256()  # For records of pixels (see same_data).
  for image in images:
    pixels.update(image)
  _PIXELS_OF_FILES[files] = pixels.hexdigest()[:16]
  source = (f'image folder {base!r}: {len(paths)} files, sha256 of names and '
            f'sizes {listing.hexdigest()[:16]}{_FILES}{files}')
  return (np.stack([images[i] for i in order]),
          np.asarray(labels, np.int32)[order], class_names, source)


# An image folder's source ends with the sha256 of its files: each one's
# path below the root (class folder and name), size and bytes, which the user
# controls; no library's version changes it. Runs recorded before it hold the
# names and sizes only (the first releases), or those and the sha256 of the
# pixels decoded (which a Pillow or libjpeg upgrade could change).
_FILES = ', of files '
_PIXELS = ', of pixels '
# The pixels' digest of each folder loaded here, by its files' digest.
_PIXELS_OF_FILES: dict[str, str] = {}
_warned_names_only = set()


def same_data(recorded: str | None, source: str) -> bool:
  """Whether `source` (InMemoryDataset.source) is the data a run recorded.

  New records match exactly: the same split of the same files. An image
  folder's older records keep working: one of pixels matches while the
  names, sizes and pixels as decoded here do; one of names and sizes only
  matches while they do, with a warning (once per record) that it cannot
  tell a change that keeps them, such as same-size files swapped between
  classes.
  """
  if recorded is None or recorded == source:
    return recorded is not None
  head, _, files = source.partition(_FILES)
  if not files:
    return False
  if recorded.startswith(head + _PIXELS):
    return recorded == head + _PIXELS + _PIXELS_OF_FILES.get(files, '?')
  if recorded != head:
    return False
  if recorded not in _warned_names_only:
    _warned_names_only.add(recorded)
    logging.warning(
        'the data is recorded by its file names and sizes only (%s): files '
        'changed or swapped between classes that keep them are not told '
        "apart; a run trained again records the files' contents", recorded)
  return True


# ----------------------------------------------------------------------------
# Loading.


@functools.lru_cache(maxsize=8)
def _cached_base(loader, *key):
  """A base split decoded once per process, read-only: its slices share it."""
  images, labels, class_names, source = loader(*key)
  images.flags.writeable = labels.flags.writeable = False
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
    root, split_dir, names = _image_folder_split(config, base)
    images, labels, class_names, source = _cached_base(
        _load_image_folder_base, root, base, names, _folder_state(split_dir))
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
  if start >= stop:
    raise ValueError(f'split {split!r} is empty')
  return InMemoryDataset(images[rows], labels[rows], class_names,
                         f'{split} of {source}', (base, start, stop))


def class_names(config, num_classes: int) -> tuple[str, ...] | None:
  """The class names in label order; None where unknown here or not
  `num_classes` (the model's). TFDS: from the prepared data_dir (CIFAR-10's
  are known without); image folder: its class folders, which must be here."""
  names, root = None, local_dir(config.data_dir)
  if config.name == IMAGE_FOLDER and root and os.path.isdir(root):
    names = _image_folder_classes(root)
  elif config.name in TFDS_DATASETS:
    try:
      names = tuple(_tfds_builder(config.name, config.data_dir)
                    .info.features['label'].names)
    except Exception:  # pylint: disable=broad-except
      names = ()  # No names is no reason to refuse to classify.
    if names == tuple(str(i) for i in range(len(names))):  # Unprepared.
      names = CIFAR10_CLASS_NAMES if config.name == 'cifar10' else None
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
  """Whether a TCP connection opens within the timeout, name lookup included
  (which the socket's timeout does not bound: a daemon thread does)."""
  result = []

  def connect():
    try:
      socket.create_connection(address, timeout=_REACHABILITY_TIMEOUT_S).close()
      result.append(True)
    except OSError:
      pass

  thread = threading.Thread(target=connect, daemon=True)
  thread.start()
  thread.join(_REACHABILITY_TIMEOUT_S)
  return bool(result)


def _source_files(builder) -> list[str]:
  return [info.filename for info in (builder.url_infos or {}).values()]


def _unavailable_error(name: str, builder,
                       reason: str) -> DatasetUnavailableError:
  root = builder.data_dir_root
  files = ', '.join(_source_files(builder)) or 'the source archive'
  return DatasetUnavailableError(  # One line, as the command line prints it.
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

  TFDS: the dataset is prepared in data_dir, or `download` is set and the
  source archive is in the manual download dir or its host is reachable
  (never TFDS's minutes of retries). Image folder: the train split has
  classes with images. Malformed split names fail here too.
  """
  _check_name(config)
  for field in SPLIT_FIELDS:
    if config.get(field):
      parse_split(config[field])
  if config.name == IMAGE_FOLDER:
    _image_folder_split(config, parse_split(config.train_split)[0])
    return
  builder = _tfds_builder(config.name, config.data_dir)
  if builder.is_prepared():
    return
  if not config.download:
    raise _unavailable_error(config.name, builder, 'config.data.download=False')
  # TFDS takes the archives from <data_dir>/downloads/manual/ without network.
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
  total, total_sq = np.zeros((2, channels), np.float64)
  # In chunks: CIFAR whole in float64 would take 1.2 GB.
  for start in range(0, ds.num_examples, 4096):
    chunk = ds.images[start:start + 4096].reshape(-1, channels).astype(
        np.float64)
    total += chunk.sum(0)
    total_sq += np.square(chunk).sum(0)
  count = ds.images.size // channels
  mean = total / count
  std = np.sqrt(np.maximum(total_sq / count - np.square(mean), 0))
  return mean.astype(np.float32), std.astype(np.float32)
