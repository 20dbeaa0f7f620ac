"""The offline error's advice works when followed to the letter."""

import re

import numpy as np
from PIL import Image

from configs import smoke
from resnet_jax.data import datasets
from resnet_jax.run import experiment


def _image_folder_without_test_split(root, classes=10, per_class=3):
  rng = np.random.default_rng(0)
  for c in range(classes):
    folder = root / 'train' / f'class{c}'
    folder.mkdir(parents=True)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
          folder / f'{i}.png')
  return root


def test_the_image_folder_flags_of_the_offline_error_load_the_data(tmp_path):
  config = smoke.get_config()
  config.data.update(data_dir=str(tmp_path / 'no_tfds'), download=False)
  try:
    datasets.check_available(config.data)
  except datasets.DatasetUnavailableError as e:
    message = str(e)
  else:
    raise AssertionError('an unprepared dataset was accepted')
  advice, = [part for part in message.split('; or ')
             if '--config.data.name=image_folder' in part]
  flags = re.findall(r'--config\.data\.(\w+)=(\S*)', advice)
  assert [name for name, _ in flags] == ['name', 'data_dir', 'test_split']
  # Those flags as the command line would set them, on a folder of images
  # without a test split (as the JPEG copy of CIFAR-10).
  root = _image_folder_without_test_split(tmp_path / 'images')
  config.data.update({name: value.rstrip('.').replace('<root>', str(root))
                      for name, value in flags})
  datasets.check_available(config.data)
  train_ds, eval_ds, test_ds = experiment.load_splits(config)
  assert (train_ds.num_examples, eval_ds.num_examples, test_ds) == (27, 3, None)
