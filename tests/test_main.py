"""The command line refuses bad input: one line, exit status 1, workdir as it was.

Each case runs `python -m resnet_jax.main` in a subprocess against a workdir
that already holds a finished run (or against a path that must stay absent),
and compares every file's size and mtime before and after.
"""

import os
import shutil

import numpy as np
from PIL import Image
import pytest

import fake_cifar
from trainer_process import REPO, error_line, run_cli, snapshot
from configs import smoke
from resnet_jax.run import train

SMOKE = '--config=configs/smoke.py'


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """A workdir with the checkpoints, logs and summary of a smoke run."""
  workdir = tmp_path_factory.mktemp('finished')
  config = smoke.get_config()
  config.data.data_dir = fake_cifar.data_dir()
  train.train_and_evaluate(config, str(workdir))
  return workdir


@pytest.fixture(scope='module')
def image_folder(tmp_path_factory):
  """Ten classes of three 32x32 PNGs: a dataset other than CIFAR-10."""
  root = tmp_path_factory.mktemp('images')
  rng = np.random.default_rng(0)
  for label in range(10):
    (root / 'train' / f'class{label}').mkdir(parents=True)
    for i in range(3):
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
          root / 'train' / f'class{label}' / f'{i}.png')
  return root


@pytest.fixture
def workdir(tmp_path, finished_run):
  copy = tmp_path / 'run'
  shutil.copytree(finished_run, copy)
  return copy


def assert_refused(result, *expected):
  # The README's status for bad input: 1, not merely non-zero (a crash or a
  # signal is non-zero too).
  assert result.returncode == 1, result.stderr[-2000:]
  line = error_line(result)
  assert line.startswith('error: '), result.stderr[-2000:]
  for text in expected:
    assert text in line, line
  # The error is the one line that says so.
  assert sum(l.startswith('error: ') for l in result.stderr.splitlines()) == 1


@pytest.mark.slow  # A command-line run per case.
@pytest.mark.parametrize('flags, expected', [
    (['--config.model.block=dense'],
     ["config.model.block='dense': must be one of ('basic', 'bottleneck')"]),
    (['--config.model.depth=21'],
     ['config.model.depth=21: ', '6n+2']),
    (['--config.data.name=imagenet'],
     ["config.data.name='imagenet': must be one of"]),
    (['--config.schedule.name=cosine'],
     ["config.schedule.name='cosine': must be one of"]),
    (['--config.batch_size=0'],
     ['config.batch_size=0: must be a positive integer']),
    (['--config.eval_batch_size=-8'],
     ['config.eval_batch_size=-8: must be a positive integer']),
    (['--config.num_train_steps=-5'],
     ['config.num_train_steps=-5: must be a positive integer']),
    # conftest gives every process 8 (virtual CPU) devices.
    (['--config.batch_size=20'],
     ['config.batch_size=20 does not divide over 8 devices',
      'use a multiple of 8']),
    (['--config.model.depth=14'],
     ['come from a different run', 'model.depth: checkpoint 8, this run 14']),
    (['--config.data.name=image_folder', '--config.data.data_dir={images}',
      '--config.data.test_split='],
     ['come from a different run',
      'dataset: checkpoint "cifar10", this run "image_folder"']),
    # Resuming with another recipe would give a result no single run gives.
    (['--config.batch_size=32'],
     ['come from a different run',
      'training.batch_size: checkpoint 16, this run 32']),
    (['--config.num_train_steps=12', '--config.schedule.base_learning_rate=0.2'],
     ['training.schedule.base_learning_rate: checkpoint 0.1, this run 0.2',
      'training.total_steps: checkpoint 6, this run 12']),
])
def test_bad_config_is_refused_and_the_workdir_left_as_it_was(
    workdir, image_folder, flags, expected):
  before = snapshot(workdir)

  result = run_cli(SMOKE, f'--workdir={workdir}',
                   *(f.format(images=image_folder) for f in flags))

  assert_refused(result, *expected)
  assert snapshot(workdir) == before


def test_a_release_is_not_trained_into(tmp_path):
  release = tmp_path / 'resnet20'
  shutil.copytree(REPO / 'resnet_jax' / 'pretrained' / 'resnet20', release)
  before = snapshot(release)
  result = run_cli(SMOKE, f'--workdir={release}')
  assert_refused(result, f'--workdir={release} is a release, not a workdir (it '
                 'holds README.md, config.json, release.json, '
                 'weights.safetensors): the trainer writes only into a new or '
                 'empty directory or into its own workdir')
  assert snapshot(release) == before


def test_a_missing_config_file_is_refused(tmp_path):
  result = run_cli('--config=configs/no_such.py', f'--workdir={tmp_path}/run')

  assert_refused(result, '--config=configs/no_such.py: no such file')
  assert snapshot(tmp_path / 'run') is None


def test_a_config_file_without_get_config_is_refused(tmp_path):
  config_file = tmp_path / 'not_a_config.py'
  config_file.write_text('depth = 20\n')

  result = run_cli(f'--config={config_file}', f'--workdir={tmp_path}/run')

  assert_refused(result, f'--config={config_file} has no get_config() function')
  assert snapshot(tmp_path / 'run') is None


def test_a_workdir_that_is_a_file_is_refused(tmp_path):
  path = tmp_path / 'notes.txt'
  path.write_text('not a directory')
  before = snapshot(path)

  result = run_cli(SMOKE, f'--workdir={path}')

  assert_refused(result, f'--workdir={path} exists and is not a directory')
  assert snapshot(path) == before


def test_a_workdir_that_cannot_be_written_is_refused(tmp_path):
  if os.geteuid() == 0:
    # Root writes anywhere chmod forbids; /proc/sys refuses even root.
    locked = '/proc/sys/resnet_jax_run'
    result = run_cli(SMOKE, f'--workdir={locked}')
    assert_refused(result, f'--workdir={locked} is not writable')
    assert not os.path.exists(locked)
    return
  locked = tmp_path / 'locked'
  locked.mkdir()
  locked.chmod(0o555)
  try:
    result = run_cli(SMOKE, f'--workdir={locked}/run')
  finally:
    locked.chmod(0o755)
  assert_refused(result, f'--workdir={locked}/run is not writable')
  assert snapshot(locked) == {'.': snapshot(locked)['.']}


def test_an_unprepared_dataset_offline_is_refused(tmp_path):
  result = run_cli(SMOKE, f'--workdir={tmp_path}/run',
                   f'--config.data.data_dir={tmp_path}/no_data',
                   '--config.data.download=False', mocked=False)

  assert_refused(result, 'cifar10 is not prepared in',
                 'config.data.download=False')
  assert snapshot(tmp_path / 'run') is None


def test_a_batch_that_does_not_divide_is_refused_before_the_data_loads(
    tmp_path):
  # The data is not there either: the layout's refusal comes first.
  result = run_cli(SMOKE, f'--workdir={tmp_path}/run', '--config.batch_size=20',
                   f'--config.data.data_dir={tmp_path}/no_data',
                   '--config.data.download=False', mocked=False)

  assert_refused(result, 'config.batch_size=20 does not divide over 8 devices')
  assert 'Loading the data' not in result.stderr
  assert snapshot(tmp_path / 'run') is None


@pytest.mark.parametrize('layout, expected', [
    ({}, 'has no class subfolders'),
    ({'cat': ['1.png'], 'dog': []}, '/dog has no images'),
])
def test_an_image_folder_without_classes_or_images_is_refused(
    tmp_path, layout, expected):
  split = tmp_path / 'images' / 'train'
  split.mkdir(parents=True)
  for name, files in layout.items():
    (split / name).mkdir()
    for file in files:
      (split / name / file).write_bytes(b'')
  result = run_cli(SMOKE, f'--workdir={tmp_path}/run',
                   '--config.data.name=image_folder',
                   f'--config.data.data_dir={tmp_path}/images',
                   '--config.data.test_split=', mocked=False)

  assert_refused(result, expected)
  assert snapshot(tmp_path / 'run') is None
