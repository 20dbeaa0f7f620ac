"""What the trainer checks of its splits before it trains: every split's
image size, overlapping slices of one split."""

import json
import pathlib

import numpy as np
from PIL import Image
import pytest

from configs import smoke
from resnet_jax import evaluate
from resnet_jax.data import datasets
from resnet_jax.run import train
from resnet_jax.run import workdir as workdir_lib


def write_split(root: pathlib.Path, split: str, per_class: int,
                size: int = 32) -> None:
  rng = np.random.default_rng(len(split))
  for name in ('ant', 'bee'):
    (root / split / name).mkdir(parents=True)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(
          root / split / name / f'{i}.png')


def folder_config(root, **data):
  config = smoke.get_config()
  config.data.update({'name': 'image_folder', 'data_dir': str(root),
                      'test_split': '', **data})
  config.model.num_classes = 2
  config.update(parallelism='jit', batch_size=2, eval_batch_size=2)
  return config


def refusal(config, workdir) -> str:
  with pytest.raises(ValueError) as refused:
    train.train_and_evaluate(config, str(workdir))
  assert not workdir.exists()  # Refused before anything was written.
  return str(refused.value)


def test_a_test_split_of_another_image_size_is_refused_before_training(
    tmp_path):
  write_split(tmp_path / 'data', 'train', 4)
  write_split(tmp_path / 'data', 'test', 2, size=40)
  message = refusal(folder_config(tmp_path / 'data', test_split='test'),
                    tmp_path / 'run')
  assert message == ("config.data.test_split='test' has images of 40x40x3, "
                     "the model takes 32x32x3 (the training split's)")


@pytest.mark.parametrize('train_split, eval_split, shared', [
    ('train', 'train[90%:]', 1), ('train[:6]', 'train[4:]', 2),
    ('train[:75%]', 'train[5:]', 1)])
def test_overlapping_slices_of_one_split_are_refused(tmp_path, train_split,
                                                     eval_split, shared):
  write_split(tmp_path / 'data', 'train', 4)  # 8 images.
  message = refusal(folder_config(tmp_path / 'data', train_split=train_split,
                                  eval_split=eval_split), tmp_path / 'run')
  assert message.startswith(
      f'config.data.train_split={train_split!r} and config.data.eval_split='
      f"{eval_split!r} share {shared} examples of 'train': the run would be "
      'evaluated on images it trains on')


def test_a_workdir_inside_the_image_folder_is_refused(tmp_path):
  root = tmp_path / 'data'
  write_split(root, 'train', 4)
  config = folder_config(root)
  # The first run: workdir.check sees where it would go.
  with pytest.raises(ValueError, match=(
      r'--workdir=.*/data/run is inside the image folder .*/data '
      r'\(config.data.data_dir\): its files would be read as a split')):
    workdir_lib.check(str(root / 'run'), config.data)
  workdir_lib.check(str(tmp_path / 'run'), config.data)  # Beside it is fine.
  # A workdir already there (its checkpoints folder) is no split of the data.
  (root / 'run' / 'checkpoints').mkdir(parents=True)
  with pytest.raises(ValueError, match=(
      r'.*/data/run holds a workdir \(its checkpoints\): a --workdir inside '
      r'the image folder .*/data is read as a split or class of it')):
    datasets.load_split(config.data, 'train')


def test_a_workdir_inside_a_split_is_named_so_not_an_empty_class(tmp_path):
  root = tmp_path / 'data'
  write_split(root, 'train', 4)
  (root / 'train' / 'run' / 'checkpoints').mkdir(parents=True)
  with pytest.raises(datasets.DatasetUnavailableError,
                     match=r'/data/train/run holds a workdir '
                     r'\(its checkpoints\)'):
    datasets.check_available(folder_config(root).data)


def test_the_first_run_into_the_image_folder_is_refused(tmp_path):
  root = tmp_path / 'data'
  write_split(root, 'train', 4)
  message = refusal(folder_config(root), root / 'run')
  assert 'is inside the image folder' in message


@pytest.mark.slow
def test_a_run_records_where_its_data_is_wherever_it_started(tmp_path,
                                                             monkeypatch):
  write_split(tmp_path / 'data', 'train', 5)
  monkeypatch.chdir(tmp_path)
  config = folder_config('data')  # Relative, as typed on a command line.
  config.update(num_train_steps=2, eval_every_steps=2,
                checkpoint_every_steps=2)
  train.train_and_evaluate(config, str(tmp_path / 'run'))
  recorded = json.loads((tmp_path / 'run' / 'config.json').read_text())
  assert recorded['data']['data_dir'] == str(tmp_path / 'data')
  (tmp_path / 'elsewhere').mkdir()
  monkeypatch.chdir(tmp_path / 'elsewhere')
  result = evaluate.evaluate(str(tmp_path / 'run'), split='validation',
                             num_misclassified=0)
  assert result['num_examples'] == 1
