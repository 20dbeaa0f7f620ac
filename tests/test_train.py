"""The trainer end to end: the command line, resuming, real images, failures."""

import json
import os
import pathlib
import subprocess
import sys
import time
import zipfile

import jax
import numpy as np
import pytest
import tensorflow_datasets as tfds

from configs import smoke
from resnet_jax import checkpoints, models, optimizer, schedules, train, train_state

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN_ZIP = REPO.parent / 'shared' / 'data' / 'cifar10-jpeg75' / 'train.zip'
# .ci/run sets this, so that CI fails rather than skips without the images.
REQUIRE_REAL_DATA = os.environ.get('RESNET_JAX_REQUIRE_REAL_DATA') == '1'

# Runs the CLI as `python -m resnet_jax.main` would, inside TFDS's mock data.
MOCKED_MAIN = '''
import runpy, sys
import tensorflow_datasets as tfds
sys.argv = ['resnet_jax.main'] + sys.argv[1:]
with tfds.testing.mock_data(num_examples=100):
  runpy.run_module('resnet_jax.main', run_name='__main__')
'''


def run_cli(*args, mocked=True, timeout=300):
  command = [sys.executable, '-c', MOCKED_MAIN] if mocked else [
      sys.executable, '-m', 'resnet_jax.main']
  return subprocess.run(command + list(args), cwd=REPO, capture_output=True,
                        text=True, timeout=timeout)


def test_smoke_config_runs_end_to_end_through_the_command_line(tmp_path):
  result = run_cli('--config=configs/smoke.py', f'--workdir={tmp_path}')
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert summary['config'] == 'smoke' and summary['steps'] == 6
  assert summary['train_examples'] == 90 and summary['eval_examples'] == 10
  assert summary['test_examples'] == 100  # Every test example exactly once.
  assert 0 <= summary['test_accuracy'] <= 1
  assert summary['train_images_per_second'] > 0
  # Checkpoints every 3 steps and at the end, the last 2 kept.
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['3', '6']
  assert list(tmp_path.glob('events.out.tfevents.*'))
  assert 'train_loss=' in result.stderr and 'val_accuracy=' in result.stderr


def restore_params(workdir, config):
  model = models.create_model(config.model)
  tx = optimizer.create_optimizer(config.optimizer, schedules.create_learning_rate_fn(
      config.schedule, config.batch_size, config.num_train_steps))
  target = train_state.create_train_state(jax.random.key(0), model, tx,
                                          (32, 32, 3))
  checkpointer = checkpoints.Checkpointer(
      os.path.join(workdir, 'checkpoints'), save_every_steps=1, keep=1,
      metadata=train.checkpoint_metadata(config, (32, 32, 3)))
  state = checkpointer.restore(target)
  checkpointer.close()
  return jax.device_get((state.step, state.params, state.batch_stats,
                         state.opt_state))


def test_a_resumed_run_ends_bit_identical_to_an_uninterrupted_one(tmp_path):
  config = smoke.get_config()
  config.num_train_steps = 8
  config.checkpoint_every_steps = 100  # Only the interruption saves.
  straight, resumed = str(tmp_path / 'straight'), str(tmp_path / 'resumed')
  with tfds.testing.mock_data(num_examples=100):
    train.train_and_evaluate(config, straight)
    assert train.train_and_evaluate(config, resumed, stop_at_step=3) is None
    assert os.listdir(os.path.join(resumed, 'checkpoints')) == ['3']
    summary = train.train_and_evaluate(config, resumed)
  assert summary['steps_this_run'] == 5
  want, got = restore_params(straight, config), restore_params(resumed, config)
  assert int(got[0]) == 8
  jax.tree.map(np.testing.assert_array_equal, got, want)


def test_an_unprepared_dataset_fails_fast_with_instructions(tmp_path):
  start = time.time()
  result = run_cli('--config=configs/smoke.py', f'--workdir={tmp_path}/run',
                   f'--config.data.data_dir={tmp_path}/no_data', mocked=False)
  assert time.time() - start < 60
  assert result.returncode != 0
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith('error: ') and 'image_folder' in last_line
  assert not (tmp_path / 'run' / 'checkpoints').exists()


def extract_subset(zip_path, destination, per_class):
  """The first `per_class` images of each class, as an image folder."""
  taken = {}
  with zipfile.ZipFile(zip_path) as archive:
    for name in sorted(archive.namelist()):
      parts = name.split('/')
      if len(parts) == 3 and parts[2].endswith('.jpg'):
        if taken.setdefault(parts[1], 0) < per_class:
          taken[parts[1]] += 1
          archive.extract(name, destination)
  return destination


def test_a_small_resnet_learns_real_images(tmp_path):
  if not TRAIN_ZIP.exists():
    if REQUIRE_REAL_DATA:
      pytest.fail(f'{TRAIN_ZIP} is missing and RESNET_JAX_REQUIRE_REAL_DATA=1')
    pytest.skip(f'skipped: {TRAIN_ZIP} not found')
  root = extract_subset(TRAIN_ZIP, tmp_path / 'images', per_class=300)
  config = smoke.get_config()
  config.data.update(name='image_folder', data_dir=str(root),
                     train_split='train[:2500]', eval_split='train[2500:]',
                     test_split='')
  config.update(parallelism='jit', batch_size=64, eval_batch_size=100,
                num_train_steps=300, log_every_steps=100, eval_every_steps=300,
                checkpoint_every_steps=300)
  summary = train.train_and_evaluate(config, str(tmp_path / 'run'))
  assert summary['eval_examples'] == 500
  # Chance is 10%: 500 held-out images the model never trained on.
  assert summary['final_val_accuracy'] > 0.3
