"""A small CIFAR-10 prepared by TFDS's own cifar10 builder, offline.

Tests that need TFDS data point `config.data.data_dir` at `data_dir()` (or
set TFDS_DATA_DIR, as trainer_process.run_cli does): the library then takes
its real path, `tfds.builder('cifar10', data_dir).is_prepared()`,
`info.splits`, `as_dataset`, on real prepared files, 100 train and 100 test
examples.

How it is made: the contents of CIFAR-10's binary archive
(cifar-10-batches-bin/: data_batch_1..5.bin, test_batch.bin,
batches.meta.txt, in CIFAR's format: per example one label byte, then 3072
bytes of the image, channel-major) are written to a folder, and the real
builder's `download_and_prepare` runs with the download manager's
`download_and_extract` returning that folder, as TFDS's own builder tests do
(tfds.testing.DatasetBuilderTestCase). The builder then parses the files,
reads the class names and writes TFRecords and dataset_info.json like a real
`tfds build`. (An archive in <data_dir>/downloads/manual/ cannot stand in
for the download: TFDS checks it against the registered size and sha256 of
the real one, and only `register_checksums`, which rewrites the checksum
file inside the installed package, turns that off.)

Image i of a split carries its id in its first two bytes (see `image_ids`),
so that a test can match what it loads with what was written: TFDS stores
the examples in its own shuffled order.

`image_folder()` writes the same CIFAR-10 examples as PNG files of an image
folder: the trainer reads it without importing TensorFlow, which takes ~15 s
of each process on a small CPU, for the tests whose subject is not TFDS.

`build(data_dir, 'cifar100')` and `data_dir('cifar100')` do the same for
CIFAR-100 (its binary archive: cifar-100-binary/train.bin, test.bin, one
coarse and one fine label byte per example, and the two label name files),
with the fine labels of `examples(split, 100)`.
"""

import atexit
import functools
import os
import shutil
import tempfile
from unittest import mock

import numpy as np
from PIL import Image

NUM_EXAMPLES = {'train': 100, 'test': 100}
CLASS_NAMES = ('airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog',
               'horse', 'ship', 'truck')
# CIFAR-100's fine classes, as named here (the real names do not matter).
CIFAR100_CLASS_NAMES = tuple(f'class_{i:02d}' for i in range(100))


def examples(split: str,
             num_classes: int = 10) -> tuple[np.ndarray, np.ndarray]:
  """The uint8 images (N, 32, 32, 3) and labels of a split, as written."""
  n = NUM_EXAMPLES[split]
  rng = np.random.default_rng(list(NUM_EXAMPLES).index(split))
  images = rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
  images[:, 0, 0, 0], images[:, 0, 0, 1] = np.divmod(np.arange(n), 256)
  return images, rng.integers(0, num_classes, n).astype(np.int32)


def _records(images: np.ndarray, *labels: np.ndarray) -> np.ndarray:
  """CIFAR's binary records: the label bytes, then the image channel-major."""
  return np.concatenate(
      [*(label.astype(np.uint8)[:, None] for label in labels),
       images.transpose(0, 3, 1, 2).reshape(len(images), -1)], axis=1)


def _write_cifar100_binary(folder: str) -> None:
  files = os.path.join(folder, 'cifar-100-binary')
  os.makedirs(files)
  for name, names in (('fine_label_names.txt', CIFAR100_CLASS_NAMES),
                      ('coarse_label_names.txt',
                       [f'superclass_{i:02d}' for i in range(20)])):
    with open(os.path.join(files, name), 'w') as f:
      f.write('\n'.join(names) + '\n')
  for split in NUM_EXAMPLES:
    images, labels = examples(split, 100)
    _records(images, labels // 5, labels).tofile(
        os.path.join(files, f'{split}.bin'))


def image_ids(images: np.ndarray) -> np.ndarray:
  """Which example of its split each image is (see `examples`)."""
  return images[:, 0, 0, 0].astype(int) * 256 + images[:, 0, 0, 1]


def _write_cifar_binary(folder: str) -> None:
  batches = os.path.join(folder, 'cifar-10-batches-bin')
  os.makedirs(batches)
  with open(os.path.join(batches, 'batches.meta.txt'), 'w') as f:
    f.write('\n'.join(CLASS_NAMES) + '\n\n')
  train_images, train_labels = examples('train')
  files = {f'data_batch_{i + 1}.bin': (images, labels) for i, (images, labels)
           in enumerate(zip(np.array_split(train_images, 5),
                            np.array_split(train_labels, 5)))}
  files['test_batch.bin'] = examples('test')
  for name, (images, labels) in files.items():
    _records(images, labels).tofile(os.path.join(batches, name))


def build(data_dir: str, name: str = 'cifar10') -> str:
  """Prepares the small CIFAR-10 (or 'cifar100') in `data_dir` (module doc)."""
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
  tfds.disable_progress_bar()  # Pages of bars in a failing test's output.
  source = tempfile.mkdtemp(prefix='cifar-10-binary-')
  try:
    {'cifar10': _write_cifar_binary,
     'cifar100': _write_cifar100_binary}[name](source)
    with mock.patch.object(tfds.download.DownloadManager,
                           'download_and_extract', return_value=source):
      tfds.builder(name, data_dir=data_dir).download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              compute_stats=tfds.download.ComputeStatsMode.SKIP))
  finally:
    shutil.rmtree(source)
  return data_dir


@functools.cache
def data_dir(name: str = 'cifar10') -> str:
  """One prepared data_dir per test process, removed when it exits."""
  path = tempfile.mkdtemp(prefix=f'fake_{name}_')
  atexit.register(shutil.rmtree, path, ignore_errors=True)
  return build(path, name)


@functools.cache
def image_folder() -> str:
  """CIFAR-10's examples as <root>/<split>/<class>/<i>.png, one per process."""
  root = tempfile.mkdtemp(prefix='fake_cifar10_images_')
  atexit.register(shutil.rmtree, root, ignore_errors=True)
  for split in NUM_EXAMPLES:
    images, labels = examples(split)
    for i, (image, label) in enumerate(zip(images, labels)):
      folder = os.path.join(root, split, CLASS_NAMES[label])
      os.makedirs(folder, exist_ok=True)
      Image.fromarray(image).save(os.path.join(folder, f'{i:03d}.png'))
  return root


def image_folder_flags() -> tuple[str, str]:
  """The trainer's flags that read `image_folder()` instead of TFDS."""
  return ('--config.data.name=image_folder',
          f'--config.data.data_dir={image_folder()}')


def image_folder_config(config):
  """`config` reading `image_folder()`, as `image_folder_flags()` set it."""
  config.data.update(name='image_folder', data_dir=image_folder())
  return config
