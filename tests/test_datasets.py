"""Loading splits: split names, image folders, TFDS, availability."""

import hashlib
import os
import pathlib
import re
import socket
import subprocess
import sys
import threading
import time

import fake_cifar
import jpeg_copy
import ml_collections
import numpy as np
from PIL import Image
import pytest

from resnet_jax.data import datasets

REPO = pathlib.Path(__file__).resolve().parents[1]


def data_config(**overrides) -> ml_collections.ConfigDict:
  fields = dict(name='cifar10', data_dir=None, train_split='train[:45000]',
                eval_split='train[45000:]', test_split='test', download=False,
                split_shuffle_seed=0)
  return ml_collections.ConfigDict({**fields, **overrides})


def run_python(code: str) -> None:
  """Runs `code` in a fresh interpreter, from the repository root."""
  subprocess.run([sys.executable, '-c', code], check=True, cwd=REPO,
                 env={**os.environ, 'PYTHONPATH': str(REPO)})


# ----------------------------------------------------------------------------
# Split names.


@pytest.mark.parametrize('split, base, start, stop, percent', [
    ('train', 'train', None, None, False),
    ('test', 'test', None, None, False),
    ('train[:45000]', 'train', None, 45000, False),
    ('train[45000:]', 'train', 45000, None, False),
    ('train[:-5000]', 'train', None, -5000, False),
    ('train[10%:20%]', 'train', 10, 20, True),
    ('validation[:]', 'validation', None, None, False),
])
def test_parse_split_accepts_tfds_forms(split, base, start, stop, percent):
  assert datasets.parse_split(split) == (
      base, datasets.SplitSlice(start, stop, percent))


@pytest.mark.parametrize('split', [
    '', 'train[', 'train[5]', 'train[1:2:3]', 'train[10%:500]', 'train[:200%]',
    'train+test', 'train[a:b]', 'train[:45000] x',
])
def test_parse_split_rejects_malformed(split):
  with pytest.raises(ValueError, match='malformed split'):
    datasets.parse_split(split)


def test_split_slices_resolve_like_tfds():
  rows = np.arange(50_000)
  resolve = lambda split: rows[
      datasets.parse_split(split)[1].resolve(len(rows))]
  np.testing.assert_array_equal(resolve('train[:45000]'), rows[:45000])
  np.testing.assert_array_equal(resolve('train[45000:]'), rows[45000:])
  np.testing.assert_array_equal(resolve('train[:-5000]'), rows[:45000])
  np.testing.assert_array_equal(resolve('train[10%:20%]'), rows[5000:10000])
  with pytest.raises(ValueError, match='out of range'):
    resolve('train[:60000]')


# ----------------------------------------------------------------------------
# Image folders.


def write_images(split_dir: pathlib.Path, counts: dict[str, int],
                 first_id: int = 0, ext: str = 'png') -> dict[int, str]:
  """Writes counts[class] 32x32 images, each filled with its own id."""
  classes = {}
  for name, count in counts.items():
    (split_dir / name).mkdir(parents=True)
    for _ in range(count):
      image_id = first_id + len(classes)
      image = np.full((32, 32, 3), [image_id, 100, 200], np.uint8)
      Image.fromarray(image).save(split_dir / name / f'{image_id:04d}.{ext}')
      classes[image_id] = name
  return classes


@pytest.fixture(name='folder')
def folder_fixture(tmp_path):
  """A 'train' split of 3 classes, 4 images each, and no 'test' split."""
  classes = write_images(tmp_path / 'train', {'cat': 4, 'ant': 4, 'bee': 4})
  return data_config(name='image_folder', data_dir=str(tmp_path)), classes


def test_image_folder_loads_pixels_labels_and_sorted_class_names(folder):
  config, classes = folder
  datasets.check_available(config)
  ds = datasets.load_split(config, 'train')
  assert ds.class_names == ('ant', 'bee', 'cat')
  assert ds.images.shape == (12, 32, 32, 3) and ds.images.dtype == np.uint8
  assert ds.labels.dtype == np.int32
  image_ids = ds.images[:, 0, 0, 0]
  assert sorted(image_ids) == sorted(classes)
  for image, image_id, label in zip(ds.images, image_ids, ds.labels):
    np.testing.assert_array_equal(image, np.full_like(image,
                                                      [image_id, 100, 200]))
    assert ds.class_names[label] == classes[image_id]


def test_image_folder_slices_after_a_fixed_shuffle(folder):
  config, _ = folder
  pixel_ids = lambda split, cfg=config: list(
      datasets.load_split(cfg, split).images[:, 0, 0, 0])
  head, tail = pixel_ids('train[:5]'), pixel_ids('train[5:]')
  assert sorted(head + tail) == list(range(12))
  assert pixel_ids('train[:5]') == head
  reshuffled = data_config(**{**config.to_dict(), 'split_shuffle_seed': 1})
  assert sorted(pixel_ids('train[:5]', reshuffled)) != sorted(head)


def test_image_folder_decodes_each_split_once_until_it_changes(
    folder, monkeypatch):
  config, _ = folder
  decoded = []
  decode = datasets.decode
  monkeypatch.setattr(datasets, 'decode',
                      lambda data: decoded.append(data) or decode(data))
  datasets.load_split(config, 'train[:5]')
  assert datasets.load_split(config, 'train[5:]').num_examples == 7
  assert len(decoded) == 12  # Once for both slices.
  # A changed folder (here one image fewer) is read again, never stale.
  next(pathlib.Path(config.data_dir).glob('train/*/*.png')).unlink()
  assert datasets.load_split(config, 'train[5:]').num_examples == 6
  assert len(decoded) == 12 + 11


def test_a_class_added_to_another_split_relabels_a_loaded_split(tmp_path):
  write_images(tmp_path / 'train', {'b': 1, 'c': 1})
  config = data_config(name='image_folder', data_dir=str(tmp_path))
  assert datasets.load_split(config, 'train').class_names == ('b', 'c')
  # The labels index the classes of all the splits: 'a' moves them.
  write_images(tmp_path / 'test', {'a': 1}, first_id=10)
  relabelled = datasets.load_split(config, 'train')
  assert relabelled.class_names == ('a', 'b', 'c')
  assert sorted(relabelled.labels) == [1, 2]


def _uncompressed(path: pathlib.Path) -> pathlib.Path:
  """The PNG at `path` saved again uncompressed: its size fixed by its shape."""
  Image.open(path).save(path, compress_level=0)
  return path


def _changed_in_place(path: pathlib.Path) -> None:
  """One pixel of the uncompressed PNG at `path` changed, its name and size
  kept."""
  image = np.asarray(Image.open(path)).copy()
  size = path.stat().st_size
  image[5, 5, 1] += 1
  Image.fromarray(image).save(path, compress_level=0)
  assert path.stat().st_size == size


def _old_records(config, split: str) -> tuple[str, str]:
  """What earlier versions recorded for `split` of the folder: its files'
  names and sizes, then also the sha256 of its decoded pixels (computed here
  as they did, independently of datasets.py)."""
  root = pathlib.Path(config.data_dir)
  paths = sorted((root / 'train').glob('*/*.png'))
  listing = hashlib.sha256(''.join(
      f'{p.relative_to(root)}\t{p.stat().st_size}\n' for p in paths).encode())
  pixels = hashlib.sha256()
  for path in paths:
    pixels.update(np.asarray(Image.open(path).convert('RGB')))
  names = (f"{split} of image folder 'train': {len(paths)} files, sha256 of "
           f'names and sizes {listing.hexdigest()[:16]}')
  return names, f'{names}, of pixels {pixels.hexdigest()[:16]}'


def test_an_image_folder_source_names_its_files_sizes_and_bytes(folder):
  config, _ = folder
  path = _uncompressed(next(pathlib.Path(config.data_dir).glob('train/cat/*')))
  source = datasets.load_split(config, 'train[:5]').source
  names, _ = _old_records(config, 'train[:5]')
  assert re.fullmatch(re.escape(names) + ', of files [0-9a-f]{16}', source)
  # One pixel changed, the file's name and size kept: another source.
  _changed_in_place(path)
  changed = datasets.load_split(config, 'train[:5]').source
  assert changed != source
  assert datasets.same_data(source, source)
  assert not datasets.same_data(source, changed)
  assert not datasets.same_data(changed.replace('12 files', '13 files'),
                                changed)


def test_the_source_does_not_depend_on_the_decoder(folder, monkeypatch):
  config, _ = folder
  before = datasets.load_split(config, 'train')
  # Another Pillow or libjpeg: other pixels from the same files. A new time
  # on one file makes the folder load again (the cache's key).
  decode = datasets.decode
  monkeypatch.setattr(datasets, 'decode',
                      lambda data, *a: 255 - decode(data, *a))
  os.utime(next(pathlib.Path(config.data_dir).glob('train/*/*.png')),
           (1, 1))
  after = datasets.load_split(config, 'train')
  np.testing.assert_array_equal(after.images, 255 - before.images)
  assert after.source == before.source
  assert datasets.same_data(before.source, after.source)


def test_records_of_earlier_versions_still_match_unchanged_data(
    folder, caplog):
  config, _ = folder
  path = _uncompressed(next(pathlib.Path(config.data_dir).glob('train/*/*')))
  names, pixels = _old_records(config, 'train[:5]')
  source = datasets.load_split(config, 'train[:5]').source
  assert datasets.same_data(pixels, source)
  assert datasets.same_data(names, source)
  assert 'file names and sizes only' in caplog.text  # It cannot tell all.
  assert not datasets.same_data(pixels.replace('train[:5]', 'train[:6]'),
                                source)
  # A pixel changed in place: the pixels' record tells, the names' cannot.
  _changed_in_place(path)
  changed = datasets.load_split(config, 'train[:5]').source
  assert not datasets.same_data(pixels, changed)
  assert datasets.same_data(names, changed)


def test_files_of_one_size_swapped_between_classes_are_other_data(
    folder, caplog):
  config, _ = folder
  root = pathlib.Path(config.data_dir) / 'train'
  ant, cat = sorted(root.glob('ant/*.png'))[0], sorted(root.glob('cat/*'))[0]
  for path in (ant, cat):
    _uncompressed(path)
  assert ant.stat().st_size == cat.stat().st_size
  names, _ = _old_records(config, 'train')
  source = datasets.load_split(config, 'train').source
  ant_bytes, cat_bytes = ant.read_bytes(), cat.read_bytes()
  ant.write_bytes(cat_bytes)
  cat.write_bytes(ant_bytes)
  swapped = datasets.load_split(config, 'train').source
  assert not datasets.same_data(source, swapped)
  # The oldest records (the first releases') cannot tell, and say so.
  caplog.clear()
  assert datasets.same_data(names, swapped)
  assert len(caplog.records) == 1
  assert caplog.records[0].levelname == 'WARNING'
  assert caplog.records[0].getMessage() == (
      f'the data is recorded by its file names and sizes only ({names}): '
      'files changed or swapped between classes that keep them are not '
      'told apart; a run trained again records the files\' contents')


def test_image_folder_without_test_split(folder):
  config, _ = folder
  assert datasets.has_split(config, 'train[:5]')
  assert not datasets.has_split(config, 'test')
  with pytest.raises(datasets.DatasetUnavailableError,
                     match=r"no 'test' split.*config.data.test_split=''"):
    datasets.load_split(config, 'test')


def test_image_folder_rejects_bad_slices(folder):
  config, _ = folder
  with pytest.raises(ValueError, match='out of range'):
    datasets.load_split(config, 'train[:13]')
  with pytest.raises(ValueError, match='empty'):
    datasets.load_split(config, 'train[5:5]')


def test_image_folder_with_an_empty_class_is_rejected(tmp_path):
  write_images(tmp_path / 'train', {'ant': 2})
  (tmp_path / 'train' / 'bee').mkdir()
  config = data_config(name='image_folder', data_dir=str(tmp_path))
  for action in (datasets.check_available,
                 lambda c: datasets.load_split(c, 'train')):
    with pytest.raises(datasets.DatasetUnavailableError,
                       match='bee has no images'):
      action(config)


def test_image_folder_without_classes_is_rejected(tmp_path):
  (tmp_path / 'train').mkdir()
  config = data_config(name='image_folder', data_dir=str(tmp_path))
  with pytest.raises(datasets.DatasetUnavailableError,
                     match='no class subfolders'):
    datasets.check_available(config)


def test_missing_image_folder_is_rejected(tmp_path):
  config = data_config(name='image_folder', data_dir=str(tmp_path / 'nope'))
  with pytest.raises(datasets.DatasetUnavailableError, match='does not exist'):
    datasets.check_available(config)


def test_image_folder_mixes_jpeg_and_png(tmp_path):
  classes = write_images(tmp_path / 'train', {'a': 2})
  classes |= write_images(tmp_path / 'train', {'b': 2}, first_id=50, ext='jpg')
  ds = datasets.load_split(
      data_config(name='image_folder', data_dir=str(tmp_path)), 'train')
  assert ds.class_names == ('a', 'b')
  for image, label in zip(ds.images, ds.labels):
    # Ids are far apart and JPEG keeps a flat colour within a few levels.
    image_id = min(classes, key=lambda i: abs(i - int(image[0, 0, 0])))
    assert ds.class_names[label] == classes[image_id]
    assert np.abs(image.astype(int) - [image_id, 100, 200]).max() <= 4


def test_unknown_dataset_is_rejected():
  with pytest.raises(ValueError, match='unknown dataset'):
    datasets.check_available(data_config(name='mnist'))


def test_image_folder_ignores_hidden_files_and_other_extensions(folder):
  config, classes = folder
  train = pathlib.Path(config.data_dir) / 'train'
  (train / 'cat' / '._0000.png').write_bytes(b'\x00\x05\x16\x07macOS')
  (train / 'cat' / '.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')
  (train / '.DS_Store').write_bytes(b'\x00\x00\x00\x01Bud1')
  (train / 'cat' / 'notes.txt').write_text('not an image')
  write_images(train / '.ipynb_checkpoints', {'dog': 1})  # A hidden class.
  write_images(pathlib.Path(config.data_dir) / '.cache', {'eel': 1})
  datasets.check_available(config)
  ds = datasets.load_split(config, 'train')
  assert ds.class_names == ('ant', 'bee', 'cat')
  assert sorted(ds.images[:, 0, 0, 0]) == sorted(classes)


def truncated(path: pathlib.Path, image_format: str) -> None:
  noise = np.random.default_rng(0).integers(0, 256, (32, 32, 3), np.uint8)
  Image.fromarray(noise).save(path, image_format)
  path.write_bytes(path.read_bytes()[:path.stat().st_size // 2])


@pytest.mark.parametrize('name, make', [
    ('empty.png', lambda path: path.write_bytes(b'')),
    ('truncated.png', lambda path: truncated(path, 'PNG')),
    ('truncated.jpg', lambda path: truncated(path, 'JPEG')),
    ('text.png', lambda path: path.write_text('not a picture')),
    ('gif.png', lambda path: Image.new('RGB', (32, 32)).save(path, 'GIF')),
    ('dangling.jpg', lambda path: path.symlink_to(path.parent / 'gone.jpg')),
    # Cannot be opened (as a file without read permission, for any user
    # but root, who runs CI).
    ('loop.png', lambda path: path.symlink_to(path.name)),
])
def test_image_folder_with_an_undecodable_image_is_rejected(folder, name,
                                                            make):
  config, _ = folder
  bad = pathlib.Path(config.data_dir) / 'train' / 'bee' / name
  make(bad)
  with pytest.raises(datasets.DatasetUnavailableError) as error:
    datasets.load_split(config, 'train[:5]')
  message = str(error.value)
  assert message.startswith(f'cannot decode image {bad} (') and (
      '\n' not in message and 'more images' not in message), message


def test_image_folder_names_the_first_bad_image_and_counts_the_rest(folder):
  config, _ = folder
  train = pathlib.Path(config.data_dir) / 'train'
  for path in (train / 'cat' / 'x.png', train / 'ant' / 'z.jpeg',
               train / 'bee' / 'y.jpg'):
    path.write_bytes(b'')
  with pytest.raises(datasets.DatasetUnavailableError,
                     match=(f'^cannot decode image {train}/ant/z.jpeg '
                            rf'\(not a JPEG or PNG image\) nor 2 more images '
                            f'of {train};')):
    datasets.load_split(config, 'train')


def test_image_folder_with_images_of_two_sizes_is_rejected(folder):
  config, _ = folder
  train = pathlib.Path(config.data_dir) / 'train'
  Image.new('RGB', (24, 16)).save(train / 'bee' / 'wide.png')
  Image.new('RGB', (24, 16)).save(train / 'cat' / 'wide.png')
  with pytest.raises(datasets.DatasetUnavailableError) as error:
    datasets.load_split(config, 'train')
  message = str(error.value)
  assert '\n' not in message
  assert (f'found 32x32 ({train}/ant/0004.png), 16x24 ({train}/bee/wide.png)'
          in message), message


# ----------------------------------------------------------------------------
# Pillow decodes as TensorFlow did.


def tf_image_folder(root: pathlib.Path, split: str):
  """A split as the loader read it before Pillow: tfds.ImageFolder, TF decode.

  Images, labels and class names, in tfds.ImageFolder's order.
  """
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  builder = tfds.ImageFolder(str(root))
  dataset = builder.as_dataset(
      split=split, shuffle_files=False, as_supervised=True,
      decoders={'image': tfds.decode.SkipDecoding()})

  def decode(data, label):
    return tf.cond(
        tf.io.is_jpeg(data),
        lambda: tf.io.decode_jpeg(data, channels=3,
                                  dct_method='INTEGER_ACCURATE'),
        lambda: tf.io.decode_png(data, channels=3)), label

  images, labels = tfds.as_numpy(
      dataset.map(decode).batch(1 << 20).get_single_element())
  return images, labels, tuple(builder.info.features['label'].names)


def test_real_jpegs_load_as_tensorflow_decoded_them_in_the_same_order(
    tmp_path):
  root = jpeg_copy.image_folder(tmp_path, per_class=100)
  # And a grey JPEG: libjpeg repeats the grey into R, G and B.
  grey = np.random.default_rng(0).integers(0, 256, (32, 32), np.uint8)
  Image.fromarray(grey).save(root / 'train' / 'cat' / 'grey.jpg', quality=75)
  want_images, want_labels, want_names = tf_image_folder(root, 'train')
  assert len(want_labels) == 1001
  config = data_config(name='image_folder', data_dir=str(root),
                       split_shuffle_seed=3)
  # A slice picks the images it picked when tfds.ImageFolder read the folder.
  rows = np.random.default_rng(3).permutation(1001)[:900]
  got = datasets.load_split(config, 'train[:900]')
  assert got.class_names == want_names
  np.testing.assert_array_equal(got.labels, want_labels[rows])
  np.testing.assert_array_equal(got.images, want_images[rows])


def test_pngs_of_every_colour_mode_decode_as_tensorflow_decodes_them(
    tmp_path):
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(0)
  rgba = rng.integers(0, 256, (8, 8, 4), np.uint8)
  images = {
      'rgb': Image.fromarray(rgba[..., :3]),
      'grey': Image.fromarray(rgba[..., 0]),
      'grey16': Image.fromarray(
          rng.integers(0, 1 << 16, (8, 8)).astype(np.uint16)),
      'grey_alpha': Image.fromarray(rgba[..., :2].copy(), 'LA'),
      'rgba': Image.fromarray(rgba),  # Alpha is dropped, not composited.
      'palette': Image.fromarray(rgba[..., :3]).quantize(16),
      'palette_transparent': Image.fromarray(rgba[..., :3]).quantize(16),
  }
  for name, image in images.items():
    (tmp_path / 'train' / name).mkdir(parents=True)
    image.save(tmp_path / 'train' / name / 'image.png',
               transparency=0 if name == 'palette_transparent' else None)
  ds = datasets.load_split(
      data_config(name='image_folder', data_dir=str(tmp_path)), 'train')
  assert ds.class_names == tuple(sorted(images))
  for image, label in zip(ds.images, ds.labels):
    data = (tmp_path / 'train' / ds.class_names[label] / 'image.png')
    want = tf.io.decode_png(data.read_bytes(), channels=3).numpy()
    np.testing.assert_array_equal(image, want, err_msg=str(data))
  assert Image.open(tmp_path / 'train' / 'grey16' / 'image.png').mode == 'I;16'


# ----------------------------------------------------------------------------
# TFDS.


def test_a_prepared_tfds_dataset_loads_as_written(cifar10_dir):
  config = data_config(data_dir=cifar10_dir)  # download=False.
  datasets.check_available(config)
  assert datasets.has_split(config, 'test')
  assert not datasets.has_split(config, 'validation')
  train = datasets.load_split(config, 'train[:40]')
  held_out = datasets.load_split(config, 'train[40:]')
  test = datasets.load_split(config, 'test')
  assert train.class_names == fake_cifar.CLASS_NAMES  # From the archive.
  assert (train.num_examples, held_out.num_examples, test.num_examples) == (
      40, 60, 100)
  for split, parts in (('train', (train, held_out)), ('test', (test,))):
    images = np.concatenate([part.images for part in parts])
    labels = np.concatenate([part.labels for part in parts])
    assert images.dtype == np.uint8 and labels.dtype == np.int32
    want_images, want_labels = fake_cifar.examples(split)
    ids = fake_cifar.image_ids(images)
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(want_labels)))
    np.testing.assert_array_equal(images, want_images[ids])
    np.testing.assert_array_equal(labels, want_labels[ids])


def test_a_missing_tfds_split_is_named(cifar10_dir):
  with pytest.raises(datasets.DatasetUnavailableError,
                     match="cifar10 has no split 'validation'; it has "):
    datasets.load_split(data_config(data_dir=cifar10_dir), 'validation[:10]')
  with pytest.raises(ValueError, match='out of range'):
    datasets.load_split(data_config(data_dir=cifar10_dir), 'train[:101]')


def test_an_unprepared_tfds_dataset_is_not_loaded_without_download(tmp_path):
  with pytest.raises(datasets.DatasetUnavailableError, match='tfds build'):
    datasets.load_split(data_config(data_dir=str(tmp_path)), 'train')
  assert datasets.has_split(data_config(data_dir=str(tmp_path)), 'anything')


def test_unprepared_tfds_without_download_fails_fast(tmp_path):
  start = time.monotonic()
  with pytest.raises(datasets.DatasetUnavailableError) as error:
    datasets.check_available(data_config(data_dir=str(tmp_path)))
  assert time.monotonic() - start < 30
  message = str(error.value)
  assert '\n' not in message  # The command line prints it as one line.
  assert str(tmp_path) in message and 'tfds build cifar10' in message
  assert '--config.data.name=image_folder' in message
  assert 'downloads/manual' in message


def test_unreachable_download_host_fails_fast(tmp_path, monkeypatch):
  """Even a connection that never answers fails within the timeout."""
  release = threading.Event()

  def stall(*args, **kwargs):
    del args, kwargs
    release.wait(60)
    raise OSError('stalled')

  for proxy in ('https_proxy', 'HTTPS_PROXY', 'http_proxy', 'HTTP_PROXY'):
    monkeypatch.delenv(proxy, raising=False)
  monkeypatch.setattr(socket, 'create_connection', stall)
  monkeypatch.setattr(datasets, '_REACHABILITY_TIMEOUT_S', 0.5)
  start = time.monotonic()
  try:
    with pytest.raises(datasets.DatasetUnavailableError,
                       match='www.cs.toronto.edu:443 is not reachable'):
      datasets.check_available(data_config(data_dir=str(tmp_path),
                                           download=True))
  finally:
    release.set()
  assert time.monotonic() - start < 10


def test_unprepared_tfds_with_download_offline_fails_within_seconds(tmp_path):
  # Here, or wherever the download host cannot be reached; where it can be,
  # the check passes (as fast). Timed: the check itself. TFDS's first import
  # (seconds, more on a busy machine) is done before the clock starts, by
  # the same check without downloads, which refuses at once.
  with pytest.raises(datasets.DatasetUnavailableError):
    datasets.check_available(data_config(data_dir=str(tmp_path),
                                         download=False))
  start = time.monotonic()
  try:
    datasets.check_available(data_config(data_dir=str(tmp_path),
                                         download=True))
  except datasets.DatasetUnavailableError as e:
    assert 'is not reachable within 3 s' in str(e)
  assert time.monotonic() - start < 5


def test_a_manual_download_counts_as_available(tmp_path):
  manual = tmp_path / 'downloads' / 'manual'
  manual.mkdir(parents=True)
  (manual / 'cifar-10-binary.tar.gz').write_bytes(b'')
  datasets.check_available(data_config(data_dir=str(tmp_path), download=True))


def test_tensorflow_is_imported_only_to_load_tfds_data(tmp_path):
  write_images(tmp_path / 'train', {'a': 2, 'b': 1})
  load = (f'config = ml_collections.ConfigDict(dict(name="image_folder", '
          f'data_dir={str(tmp_path)!r}, train_split="train[:2]", '
          'eval_split="", test_split="", split_shuffle_seed=0)); '
          'datasets.check_available(config); '
          'assert datasets.load_split(config, "train[:2]").num_examples == 2; '
          'assert datasets.class_names(config, 2) == ("a", "b"); ')
  modules = 'from resnet_jax.data import batching, datasets; '
  # Without TensorFlow at all: importing it would raise.
  run_python("import sys; sys.modules['tensorflow'] = None; "
             "sys.modules['tensorflow_datasets'] = None; "
             'import ml_collections; ' + modules + load)
  run_python('import sys, ml_collections; ' + modules + load +
             "assert 'tensorflow' not in sys.modules, 'tensorflow imported'")


# ----------------------------------------------------------------------------
# Class names.


def test_class_names_of_an_image_folder_are_its_sorted_class_folders(
    tmp_path):
  write_images(tmp_path / 'train', {'b': 1, 'a': 1})
  write_images(tmp_path / 'test', {'c': 1}, first_id=10)
  write_images(tmp_path / '.trash', {'z': 1}, first_id=20)
  config = data_config(name='image_folder', data_dir=str(tmp_path))
  assert datasets.class_names(config, 3) == ('a', 'b', 'c')
  # The labels index the classes of all the splits together.
  assert datasets.load_split(config, 'train').class_names == ('a', 'b', 'c')
  assert datasets.class_names(config, 10) is None  # Not the model's classes.
  assert datasets.class_names(
      data_config(name='image_folder', data_dir=str(tmp_path / 'no')),
      3) is None


def test_class_names_of_tfds_datasets(tmp_path, cifar10_dir):
  assert datasets.class_names(data_config(data_dir=cifar10_dir),
                              10) == fake_cifar.CLASS_NAMES
  # Unprepared, TFDS numbers the classes; CIFAR-10's names are known anyway.
  assert datasets.class_names(data_config(data_dir=str(tmp_path)),
                              10) == datasets.CIFAR10_CLASS_NAMES
  assert datasets.class_names(
      data_config(name='cifar100', data_dir=str(tmp_path)), 100) is None
  assert datasets.class_names(data_config(name='mnist'), 10) is None


# ----------------------------------------------------------------------------
# Statistics.


def test_channel_stats_match_numpy():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5000, 2, 3, 3), dtype=np.uint8)  # 2 chunks.
  ds = datasets.InMemoryDataset(images, np.zeros(5000, np.int32), ('x',))
  mean, std = datasets.measure_channel_stats(ds)
  assert mean.dtype == std.dtype == np.float32
  np.testing.assert_allclose(mean, images.mean((0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, images.std((0, 1, 2)), rtol=1e-6)


def test_dataset_requires_uint8_images_and_int32_labels():
  with pytest.raises(ValueError, match='uint8'):
    datasets.InMemoryDataset(np.zeros((2, 1, 1, 3), np.float32),
                             np.zeros(2, np.int32), ('x',))
  with pytest.raises(ValueError, match='int32'):
    datasets.InMemoryDataset(np.zeros((2, 1, 1, 3), np.uint8),
                             np.zeros(2, np.int64), ('x',))


