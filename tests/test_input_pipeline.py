"""The host input pipeline: split names, loading, and the seeded batch order."""

import itertools
import os
import pathlib
import socket
import subprocess
import sys
import threading
import time

from hypothesis import given
from hypothesis import strategies as st
import ml_collections
import numpy as np
import pytest

from resnet_jax import input_pipeline as ip


def data_config(**overrides) -> ml_collections.ConfigDict:
  fields = dict(name='cifar10', data_dir=None, train_split='train[:45000]',
                eval_split='train[45000:]', test_split='test', download=False,
                split_shuffle_seed=0)
  return ml_collections.ConfigDict({**fields, **overrides})


def indexed_dataset(n: int, num_classes: int = 3) -> ip.InMemoryDataset:
  """Image i holds i (in two bytes), so each batch row can be traced back."""
  images = np.zeros((n, 2, 2, 2), np.uint8)
  images[..., 0] = (np.arange(n) // 256)[:, None, None]
  images[..., 1] = (np.arange(n) % 256)[:, None, None]
  labels = (np.arange(n) % num_classes).astype(np.int32)
  return ip.InMemoryDataset(images, labels,
                            tuple(f'c{i}' for i in range(num_classes)))


def ids(batch) -> np.ndarray:
  high, low = batch['image'][:, 0, 0, 0], batch['image'][:, 0, 0, 1]
  return high.astype(int) * 256 + low


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
  assert ip.parse_split(split) == (base, ip.SplitSlice(start, stop, percent))


@pytest.mark.parametrize('split', [
    '', 'train[', 'train[5]', 'train[1:2:3]', 'train[10%:500]', 'train[:200%]',
    'train+test', 'train[a:b]', 'train[:45000] x',
])
def test_parse_split_rejects_malformed(split):
  with pytest.raises(ValueError, match='malformed split'):
    ip.parse_split(split)


def test_split_slices_resolve_like_tfds():
  rows = np.arange(50_000)
  resolve = lambda split: rows[ip.parse_split(split)[1].resolve(len(rows))]
  np.testing.assert_array_equal(resolve('train[:45000]'), rows[:45000])
  np.testing.assert_array_equal(resolve('train[45000:]'), rows[45000:])
  np.testing.assert_array_equal(resolve('train[:-5000]'), rows[:45000])
  np.testing.assert_array_equal(resolve('train[10%:20%]'), rows[5000:10000])
  with pytest.raises(ValueError, match='out of range'):
    resolve('train[:60000]')


# ----------------------------------------------------------------------------
# Training order.


def test_steps_per_epoch_drops_the_last_partial_batch():
  assert ip.steps_per_epoch(45_000, 128) == 351
  with pytest.raises(ValueError, match='exceeds'):
    ip.steps_per_epoch(5, 8)


def test_train_batch_is_a_pure_function_of_seed_and_step():
  ds = indexed_dataset(100)
  batch = lambda seed, step: ip.train_batch(ds, seed=seed, step=step,
                                            global_batch_size=10)
  first = batch(0, 3)
  assert first['image'].dtype == np.uint8 and first['image'].shape == (10, 2,
                                                                       2, 2)
  assert first['label'].dtype == np.int32
  np.testing.assert_array_equal(first['label'], ids(first) % 3)
  np.testing.assert_array_equal(ids(batch(0, 3)), ids(first))
  assert not np.array_equal(ids(batch(0, 4)), ids(first))
  assert not np.array_equal(ids(batch(1, 3)), ids(first))


def test_restored_run_sees_the_batches_of_an_uninterrupted_run():
  ds = indexed_dataset(50)
  common = dict(seed=7, global_batch_size=8)  # 6 steps per epoch.
  uninterrupted = list(itertools.islice(
      ip.train_batches(ds, start_step=0, **common), 20))
  restored = itertools.islice(ip.train_batches(ds, start_step=9, **common), 11)
  for expected, actual in zip(uninterrupted[9:], restored, strict=True):
    np.testing.assert_array_equal(ids(actual), ids(expected))


def test_each_epoch_is_a_permutation_of_the_examples():
  ds = indexed_dataset(24)
  epochs = [
      np.concatenate([ids(ip.train_batch(ds, seed=0, step=step,
                                         global_batch_size=8))
                      for step in range(3 * epoch, 3 * epoch + 3)])
      for epoch in range(3)]
  for order in epochs:
    np.testing.assert_array_equal(np.sort(order), np.arange(24))
  assert not np.array_equal(epochs[0], epochs[1])


def test_an_epoch_with_a_partial_batch_repeats_no_example():
  ds = indexed_dataset(26)  # 3 batches of 8; 2 examples sit out each epoch.
  order = np.concatenate([ids(ip.train_batch(ds, seed=0, step=step,
                                             global_batch_size=8))
                          for step in range(3)])
  assert len(set(order)) == 24


@pytest.mark.parametrize('process_count', [2, 4])
def test_process_slices_concatenate_to_the_global_batch(process_count):
  ds = indexed_dataset(100)
  for step in (0, 5, 13):  # 13 is in the second epoch.
    whole = ip.train_batch(ds, seed=3, step=step, global_batch_size=16)
    parts = [ip.train_batch(ds, seed=3, step=step, global_batch_size=16,
                            process_index=p, process_count=process_count)
             for p in range(process_count)]
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          np.concatenate([part[key] for part in parts]), whole[key])


def test_batch_not_divisible_by_processes_is_rejected():
  with pytest.raises(ValueError, match='multiple of the 3 processes'):
    ip.train_batch(indexed_dataset(100), seed=0, step=0, global_batch_size=16,
                   process_count=3)
  with pytest.raises(ValueError, match='multiple of the 3 processes'):
    next(ip.eval_batches(indexed_dataset(10), global_batch_size=16,
                         process_count=3))


# ----------------------------------------------------------------------------
# Evaluation.


@given(n=st.integers(1, 60), per_process=st.integers(1, 9),
       process_count=st.integers(1, 4))
def test_eval_batches_cover_every_example_once(n, per_process, process_count):
  ds = indexed_dataset(n)
  batches = [list(ip.eval_batches(ds, global_batch_size=per_process *
                                  process_count, process_index=p,
                                  process_count=process_count))
             for p in range(process_count)]
  assert len({len(b) for b in batches}) == 1  # The eval step is a collective.
  seen = []
  for batch in itertools.chain(*batches):
    assert batch['image'].shape[0] == per_process
    assert batch['mask'].dtype == np.float32
    real = batch['mask'] == 1
    assert np.all(batch['mask'][~real] == 0)
    assert not batch['image'][~real].any() and not batch['label'][~real].any()
    np.testing.assert_array_equal(batch['label'][real], ids(batch)[real] % 3)
    seen.extend(ids(batch)[real])
  np.testing.assert_array_equal(np.sort(seen), np.arange(n))


def test_eval_batches_example_37_over_2_processes():
  ds = indexed_dataset(37)
  shards = [list(ip.eval_batches(ds, global_batch_size=8, process_index=p,
                                 process_count=2)) for p in range(2)]
  # Shards of 18 and 19 examples in batches of 4: 5 batches each.
  assert [len(s) for s in shards] == [5, 5]
  assert [sum(b['mask'].sum() for b in s) for s in shards] == [18, 19]


# ----------------------------------------------------------------------------
# Image folders.


def write_images(split_dir: pathlib.Path, counts: dict[str, int],
                 first_id: int = 0, ext: str = 'png') -> dict[int, str]:
  """Writes counts[class] 32x32 images, each filled with its own id."""
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  classes = {}
  for name, count in counts.items():
    (split_dir / name).mkdir(parents=True)
    for _ in range(count):
      image_id = first_id + len(classes)
      image = np.full((32, 32, 3), [image_id, 100, 200], np.uint8)
      encode = tf.io.encode_png if ext == 'png' else tf.io.encode_jpeg
      tf.io.write_file(str(split_dir / name / f'{image_id:04d}.{ext}'),
                       encode(image))
      classes[image_id] = name
  return classes


@pytest.fixture(name='folder')
def folder_fixture(tmp_path):
  """A 'train' split of 3 classes, 4 images each, and no 'test' split."""
  classes = write_images(tmp_path / 'train', {'cat': 4, 'ant': 4, 'bee': 4})
  return data_config(name='image_folder', data_dir=str(tmp_path)), classes


def test_image_folder_loads_pixels_labels_and_sorted_class_names(folder):
  config, classes = folder
  ip.check_available(config)
  ds = ip.load_split(config, 'train')
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
      ip.load_split(cfg, split).images[:, 0, 0, 0])
  head, tail = pixel_ids('train[:5]'), pixel_ids('train[5:]')
  assert sorted(head + tail) == list(range(12))
  assert pixel_ids('train[:5]') == head
  reshuffled = data_config(**{**config.to_dict(), 'split_shuffle_seed': 1})
  assert sorted(pixel_ids('train[:5]', reshuffled)) != sorted(head)


def test_image_folder_decodes_each_split_once(folder):
  config, _ = folder
  ip.load_split(config, 'train[:5]')
  for path in pathlib.Path(config.data_dir).glob('train/*/*.png'):
    path.unlink()
  assert ip.load_split(config, 'train[5:]').num_examples == 7


def test_image_folder_without_test_split(folder):
  config, _ = folder
  assert ip.has_split(config, 'train[:5]')
  assert not ip.has_split(config, 'test')
  with pytest.raises(ip.DatasetUnavailableError,
                     match=r"no 'test' split.*config.data.test_split=''"):
    ip.load_split(config, 'test')


def test_image_folder_rejects_bad_slices(folder):
  config, _ = folder
  with pytest.raises(ValueError, match='out of range'):
    ip.load_split(config, 'train[:13]')
  with pytest.raises(ValueError, match='empty'):
    ip.load_split(config, 'train[5:5]')


def test_image_folder_with_an_empty_class_is_rejected(tmp_path):
  write_images(tmp_path / 'train', {'ant': 2})
  (tmp_path / 'train' / 'bee').mkdir()
  config = data_config(name='image_folder', data_dir=str(tmp_path))
  for action in (ip.check_available, lambda c: ip.load_split(c, 'train')):
    with pytest.raises(ip.DatasetUnavailableError, match='bee has no images'):
      action(config)


def test_image_folder_without_classes_is_rejected(tmp_path):
  (tmp_path / 'train').mkdir()
  config = data_config(name='image_folder', data_dir=str(tmp_path))
  with pytest.raises(ip.DatasetUnavailableError, match='no class subfolders'):
    ip.check_available(config)


def test_missing_image_folder_is_rejected(tmp_path):
  config = data_config(name='image_folder', data_dir=str(tmp_path / 'nope'))
  with pytest.raises(ip.DatasetUnavailableError, match='does not exist'):
    ip.check_available(config)


def test_image_folder_mixes_jpeg_and_png(tmp_path):
  classes = write_images(tmp_path / 'train', {'a': 2})
  classes |= write_images(tmp_path / 'train', {'b': 2}, first_id=50, ext='jpg')
  ds = ip.load_split(data_config(name='image_folder', data_dir=str(tmp_path)),
                     'train')
  assert ds.class_names == ('a', 'b')
  for image, label in zip(ds.images, ds.labels):
    # Ids are far apart and JPEG keeps a flat colour within a few levels.
    image_id = min(classes, key=lambda i: abs(i - int(image[0, 0, 0])))
    assert ds.class_names[label] == classes[image_id]
    assert np.abs(image.astype(int) - [image_id, 100, 200]).max() <= 4


def test_unknown_dataset_is_rejected():
  with pytest.raises(ValueError, match='unknown dataset'):
    ip.check_available(data_config(name='mnist'))


# ----------------------------------------------------------------------------
# TFDS.


def test_tfds_under_mock_data(tmp_path):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  config = data_config(data_dir=str(tmp_path))  # Empty, and download=False.
  with tfds.testing.mock_data(num_examples=50):
    ip.check_available(config)
    assert ip.has_split(config, 'test')
    train = ip.load_split(config, 'train[:40]')
    held_out = ip.load_split(config, 'train[40:]')
  assert train.images.shape == (40, 32, 32, 3)
  assert train.images.dtype == np.uint8
  assert train.labels.dtype == np.int32
  assert train.labels.min() >= 0 and train.labels.max() < 10
  assert train.num_classes == 10  # (The mock's class names are '0'..'9'.)
  assert held_out.num_examples == 10


def test_unprepared_tfds_without_download_fails_fast(tmp_path):
  start = time.monotonic()
  with pytest.raises(ip.DatasetUnavailableError) as error:
    ip.check_available(data_config(data_dir=str(tmp_path)))
  assert time.monotonic() - start < 30
  message = str(error.value)
  assert '\n' not in message  # The command line prints it as one line.
  assert str(tmp_path) in message and 'tfds build cifar10' in message
  assert "config.data.name='image_folder'" in message
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
  monkeypatch.setattr(ip, '_REACHABILITY_TIMEOUT_S', 0.5)
  start = time.monotonic()
  try:
    with pytest.raises(ip.DatasetUnavailableError,
                       match='www.cs.toronto.edu:443 is not reachable'):
      ip.check_available(data_config(data_dir=str(tmp_path), download=True))
  finally:
    release.set()
  assert time.monotonic() - start < 10


def test_tensorflow_is_imported_only_to_load_data():
  code = ('import sys, resnet_jax.input_pipeline; '
          "assert 'tensorflow' not in sys.modules")
  subprocess.run([sys.executable, '-c', code], check=True,
                 env={**os.environ, 'PYTHONPATH': str(
                     pathlib.Path(__file__).parents[1])})


# ----------------------------------------------------------------------------
# Statistics and prefetching.


def test_channel_stats_match_numpy():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5000, 2, 3, 3), dtype=np.uint8)  # 2 chunks.
  ds = ip.InMemoryDataset(images, np.zeros(5000, np.int32), ('x',))
  mean, std = ip.measure_channel_stats(ds)
  assert mean.dtype == std.dtype == np.float32
  np.testing.assert_allclose(mean, images.mean((0, 1, 2)), rtol=1e-6)
  np.testing.assert_allclose(std, images.std((0, 1, 2)), rtol=1e-6)


def test_dataset_requires_uint8_images_and_int32_labels():
  with pytest.raises(ValueError, match='uint8'):
    ip.InMemoryDataset(np.zeros((2, 1, 1, 3), np.float32),
                       np.zeros(2, np.int32), ('x',))
  with pytest.raises(ValueError, match='int32'):
    ip.InMemoryDataset(np.zeros((2, 1, 1, 3), np.uint8),
                       np.zeros(2, np.int64), ('x',))


def test_prefetch_keeps_order_and_puts_ahead():
  put = []

  def put_fn(item):
    put.append(item)
    return item * 10

  received = []
  for value in ip.prefetch(iter(range(6)), put_fn, size=3):
    received.append(value)
    k = len(received) - 1  # While item k is in use, k+1 and k+2 are put.
    assert put == list(range(min(k + 3, 6)))
  assert received == [0, 10, 20, 30, 40, 50]
  with pytest.raises(ValueError):
    next(ip.prefetch(iter([]), put_fn, size=0))
