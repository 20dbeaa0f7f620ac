"""The trainer end to end: the command line, resuming, real images, failures."""

import json
import os
import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

import fake_cifar
import jpeg_copy
from trainer_process import cli_command, error_line, restore_params, run_cli
from configs import smoke
from resnet_jax.core import schedules, steps
from resnet_jax.run import checkpoints, experiment
from resnet_jax.run import train, workdir
from resnet_jax.run.metric_writer import scalars

REPO = pathlib.Path(__file__).resolve().parents[1]

@pytest.mark.slow
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


def test_two_calls_at_most_in_flight_and_their_time_counted(
    tmp_path, monkeypatch):
  # Each step also holds the device for `hold` seconds (a callback inside
  # the compiled step sleeps), which the host does not wait for. A sleep
  # lasts at least that long however busy the machine is, so the rates'
  # bound below does not depend on its load (a computation timed beforehand
  # did: a busier machine during that timing made the bound too loose or
  # too tight).
  hold = 0.25

  def sleep(loss):
    time.sleep(hold)
    return loss

  def slow_step(state, batch, rng, **kwargs):
    state, metrics = train_step(state, batch, rng, **kwargs)
    loss = jax.pure_callback(sleep, jax.ShapeDtypeStruct((), jnp.float32),
                             metrics['loss'])
    return state, dict(metrics, loss=loss)

  sums, behind = [], []  # Each call's metric sums; calls that found more.

  def watched_steps(self, state, batches, first_step):
    # Before this call: the one before last must have finished, so that a
    # preempted run saves within two calls.
    if len(sums) > 1 and not all(
        x.is_ready() for x in jax.tree.leaves(sums[-2])):
      behind.append(first_step)
    state, metrics = experiment_train_steps(self, state, batches, first_step)
    sums.append(metrics)
    return state, metrics

  train_step = steps.train_step
  experiment_train_steps = experiment.Experiment.train_steps
  monkeypatch.setattr(steps, 'train_step', slow_step)
  monkeypatch.setattr(experiment.Experiment, 'train_steps', watched_steps)
  config = smoke.get_config()
  config.data.data_dir = fake_cifar.data_dir()
  config.update(parallelism='jit', num_train_steps=9, log_every_steps=4,
                eval_every_steps=8, checkpoint_every_steps=8)
  summary = train.train_and_evaluate(config, str(tmp_path))
  assert len(sums) == 9 and not behind
  # 8 steps after the first (compilation), each `hold` seconds at least: the
  # rates count the time the devices took.
  assert summary['train_images_per_second'] < 1.2 * config.batch_size / hold
  assert 0 < scalars(str(tmp_path))['steps_per_second', 8] < 1.2 / hold


def test_an_unprepared_dataset_fails_fast_with_instructions(tmp_path):
  # Downloads go through a proxy on a local port nothing listens on: the
  # download host is unreachable whether or not this machine has a network.
  with socket.socket() as closed:
    closed.bind(('127.0.0.1', 0))
    proxy = f'http://127.0.0.1:{closed.getsockname()[1]}'
  start = time.time()
  result = run_cli('--config=configs/smoke.py', f'--workdir={tmp_path}/run',
                   f'--config.data.data_dir={tmp_path}/no_data', mocked=False,
                   env={'https_proxy': proxy, 'HTTPS_PROXY': proxy,
                        'no_proxy': '', 'NO_PROXY': ''})
  assert time.time() - start < 60
  assert result.returncode == 1, result.stderr[-2000:]
  last_line = error_line(result)
  assert last_line.startswith('error: ') and 'image_folder' in last_line
  assert f'127.0.0.1:{proxy.rsplit(":", 1)[1]} is not reachable' in last_line
  assert not (tmp_path / 'run' / 'checkpoints').exists()


@pytest.mark.slow
def test_a_small_resnet_learns_real_images_in_float32_and_bfloat16(tmp_path):
  root = jpeg_copy.image_folder(tmp_path / 'images', per_class=300)
  accuracy = {}
  for dtype in ('float32', 'bfloat16'):
    config = smoke.get_config()
    config.data.update(name='image_folder', data_dir=str(root),
                       train_split='train[:2500]', eval_split='train[2500:]',
                       test_split='')
    config.model.dtype = dtype
    config.update(parallelism='jit', batch_size=64, eval_batch_size=100,
                  num_train_steps=150, log_every_steps=50,
                  eval_every_steps=150, checkpoint_every_steps=150)
    summary = train.train_and_evaluate(config, str(tmp_path / dtype))
    assert summary['eval_examples'] == 500
    accuracy[dtype] = summary['final_val_accuracy']
  # Chance is 10% (+-1.3% over 500 held-out images the model never trained
  # on); after 150 steps (4 epochs) float32 reached 35.8%, bfloat16 34.6%
  # (AMD EPYC, JAX 0.12.1; 300 steps took twice the time).
  assert accuracy['float32'] > 0.25, accuracy
  # bfloat16 computation (float32 parameters and statistics) learns as well:
  # the same data and steps, within the noise of 500 images.
  assert abs(accuracy['bfloat16'] - accuracy['float32']) < 0.05, accuracy

# A run long enough to be interrupted in many places: 12 steps (5 per epoch of
# the 90 training images of fake_cifar.py), logs every 3, evaluations every 6,
# checkpoints every 4, the two newest kept.
RECOVERY_FLAGS = ('--config=configs/smoke.py', '--config.num_train_steps=12',
                  '--config.log_every_steps=3', '--config.eval_every_steps=6',
                  '--config.checkpoint_every_steps=4')
# Timings and the like, which differ between any two runs.
NOT_REPRODUCIBLE = ('wall_seconds', 'total_wall_seconds',
                    'train_images_per_second', 'steps_this_run')
SCALAR_TAGS = ('train_loss', 'train_accuracy', 'learning_rate', 'val_loss',
               'val_accuracy', 'test_loss', 'test_accuracy')
# Every (tag, step) the recovery run logs: a resumed run must log them all.
EXPECTED_SCALARS = sorted(
    [(tag, step) for step in (3, 6, 9, 12)
     for tag in ('train_loss', 'train_accuracy', 'learning_rate')] +
    [(tag, step) for step in (6, 12) for tag in ('val_loss', 'val_accuracy')] +
    [('test_loss', 12), ('test_accuracy', 12)])


@pytest.fixture(scope='session')
def compilation_cache(tmp_path_factory):
  return f'--config.compilation_cache_dir={tmp_path_factory.mktemp("xla")}'


def recovery_flags(workdir, compilation_cache, *extra):
  """The recovery run's command line, on fake_cifar's images as an image
  folder: the subject is the trainer, not TFDS, whose TensorFlow import took
  half of each run's 34 s."""
  return (*RECOVERY_FLAGS, *fake_cifar.image_folder_flags(),
          f'--workdir={workdir}', compilation_cache, *extra)


def recovery_run(workdir, compilation_cache, *extra, fault=None):
  return run_cli(*recovery_flags(workdir, compilation_cache, *extra),
                 fault=fault)


def recovery_config(**overrides):
  """The recovery run's config (recovery_flags' model and data)."""
  config = fake_cifar.image_folder_config(smoke.get_config())
  config.update(overrides)
  return config


def outcome(workdir, **overrides):
  """What must not depend on interruptions: final state, summary, curves."""
  config = recovery_config(**overrides)
  summary = json.loads((workdir / 'summary.json').read_text())
  return (restore_params(workdir, config),
          {k: v for k, v in summary.items() if k not in NOT_REPRODUCIBLE},
          {k: v for k, v in scalars(workdir).items() if k[0] in SCALAR_TAGS})


def assert_same_outcome(got, want):
  jax.tree.map(np.testing.assert_array_equal, got[0], want[0])
  assert got[1] == want[1]
  assert sorted(got[2]) == EXPECTED_SCALARS  # None missing, none extra.
  assert got[2] == want[2]


def event_files(workdir) -> set[pathlib.Path]:
  """The event files of a workdir and of its runs' folders."""
  return set(pathlib.Path(workdir).rglob('events.out.tfevents.*'))


def logged_since(workdir, before: set[pathlib.Path]) -> dict:
  """{(tag, step): value} that the event files not in `before` hold.

  What a resumed process logged itself: the interrupted one's files, which
  the workdir's scalars also read, cannot stand in for steps it forgot.
  """
  new = sorted(set(pathlib.Path(workdir).glob('events.out.tfevents.*')) -
               before)
  assert len(new) == 1, new
  with tempfile.TemporaryDirectory() as scratch:
    shutil.copy(new[0], scratch)
    return {k: v for k, v in scalars(scratch).items() if k[0] in SCALAR_TAGS}


def assert_resume_logged_the_rest(workdir, before, resumed_at, want,
                                  expected=EXPECTED_SCALARS):
  """The resumed process logged every expected (tag, step) after the step it
  resumed at (and the test metrics, logged at the end), as `want` has them.
  """
  logged = logged_since(workdir, before)
  needed = {k for k in expected if k[1] > resumed_at or k[0].startswith(
      'test_')}
  assert needed <= logged.keys(), sorted(needed - logged.keys())
  assert logged == {k: want[k] for k in logged}


@pytest.fixture(scope='session')
def uninterrupted(tmp_path_factory, compilation_cache):
  workdir = tmp_path_factory.mktemp('uninterrupted')
  result = recovery_run(workdir, compilation_cache)
  assert result.returncode == 0, result.stderr[-3000:]
  assert int(outcome(workdir)[0][0]) == 12
  assert sorted(outcome(workdir)[2]) == EXPECTED_SCALARS
  return workdir


@pytest.mark.slow
@pytest.mark.parametrize('fault, latest_before_resume', [
    ('kill@batch:3', None),  # Before the first checkpoint.
    # Checkpoint 8 fully written but not yet complete: resumed from 6 (the
    # best validation, saved between checkpoints), after logs of later steps.
    ('kill@save:8', 6),
    ('kill@eval:2', 8),  # In the last evaluation, before the last save.
    ('kill@summary', 12),  # After the last checkpoint.
])
def test_kill_9_anywhere_then_rerun_ends_bit_identical(
    tmp_path, uninterrupted, compilation_cache, fault, latest_before_resume):
  killed = recovery_run(tmp_path, compilation_cache, fault=fault)
  assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
  steps = sorted(int(p.name) for p in (tmp_path / 'checkpoints').glob('*')
                 if p.name.isdigit()) if (tmp_path / 'checkpoints').exists() else []
  assert (steps[-1] if steps else None) == latest_before_resume
  if fault.startswith('kill@save'):  # The half-written step is there...
    assert list((tmp_path / 'checkpoints').glob('8.orbax-checkpoint-tmp*'))
  before = event_files(tmp_path)

  resumed = recovery_run(tmp_path, compilation_cache)

  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert_same_outcome(outcome(tmp_path), outcome(uninterrupted))
  assert_resume_logged_the_rest(tmp_path, before, latest_before_resume or 0,
                                outcome(uninterrupted)[2])
  # ...and is never read: it is deleted on resume.
  assert not list((tmp_path / 'checkpoints').glob('*tmp*'))


@pytest.mark.slow
def test_ctrl_c_saves_the_step_reached_and_a_rerun_resumes_there(
    tmp_path, uninterrupted, compilation_cache):
  # At an evaluation step: evaluated after resuming. SIGTERM takes the same
  # path and exits 143 (test_runs_and_steps_per_call_resume_bit_identical,
  # between checkpoints and evaluations; tests/test_multiprocess.py).
  interrupted = recovery_run(tmp_path, compilation_cache, fault='int@batch:6')

  assert interrupted.returncode == 128 + signal.SIGINT, (
      interrupted.stderr[-3000:])
  assert 'Traceback' not in interrupted.stderr
  message = [line for line in interrupted.stderr.splitlines()
             if 'interrupted: saved a checkpoint at step' in line]
  assert len(message) == 1
  assert 'at step 6 ' in message[0], message[0]
  seconds = float(message[0].split(' s after SIGINT')[0].split()[-1])
  assert 0 <= seconds < 60
  assert checkpoints.Checkpointer(
      tmp_path / 'checkpoints', keep=2,
      metadata={}).latest_step() == 6
  assert int(restore_params(tmp_path, recovery_config())[0]) == 6
  before = event_files(tmp_path)

  resumed = recovery_run(tmp_path, compilation_cache)

  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Resuming from the checkpoint of step 6.' in resumed.stderr
  assert_same_outcome(outcome(tmp_path), outcome(uninterrupted))
  assert_resume_logged_the_rest(tmp_path, before, 6,
                                outcome(uninterrupted)[2])
  # The wall time of the run counts the interrupted process's too.
  summary = json.loads((tmp_path / 'summary.json').read_text())
  assert summary['total_wall_seconds'] > summary['wall_seconds'] > 0
  # Step 6, validated after resuming, is ranked with its checkpoint (saved
  # again with its accuracy) as the uninterrupted run ranked it.
  with checkpoints.Checkpointer(tmp_path / 'checkpoints', metadata={},
                                read_only=True) as reader:
    assert reader.best_step() == summary['best_val_step']


# Two runs, two steps per call: calls end at the logs, evaluations and
# checkpoints, and a signal stops the loop at the end of a call.
RUNS_FLAGS = ('--config.num_runs=2', '--config.steps_per_call=2')


@pytest.fixture(scope='session')
def uninterrupted_runs(tmp_path_factory, compilation_cache):
  workdir = tmp_path_factory.mktemp('uninterrupted_runs')
  result = recovery_run(workdir, compilation_cache, *RUNS_FLAGS)
  assert result.returncode == 0, result.stderr[-3000:]
  return workdir


@pytest.mark.slow
def test_runs_and_steps_per_call_resume_bit_identical(
    tmp_path, uninterrupted_runs, compilation_cache):
  # SIGTERM between checkpoints and evaluations, in a call of two steps.
  stopped = recovery_run(tmp_path, compilation_cache, *RUNS_FLAGS,
                         fault='term@batch:5')
  assert stopped.returncode == 128 + signal.SIGTERM, stopped.stderr[-3000:]
  reached = checkpoints.Checkpointer(
      tmp_path / 'checkpoints', keep=2, metadata={}).latest_step()
  assert reached and reached < 12
  before = event_files(tmp_path)

  resumed = recovery_run(tmp_path, compilation_cache, *RUNS_FLAGS)

  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert_same_outcome(outcome(tmp_path, num_runs=2),
                      outcome(uninterrupted_runs, num_runs=2))
  assert_resume_logged_the_rest(tmp_path, before, reached,
                                outcome(uninterrupted_runs, num_runs=2)[2])
  # Each run's own curves, none missing: every tag but the runs' common
  # learning rate, the resumed steps logged again by the resumed process.
  per_run = [k for k in EXPECTED_SCALARS if k[0] != 'learning_rate']
  for run in range(2):
    folder = f'run_{run}'
    want = scalars(uninterrupted_runs / folder)
    assert sorted(want) == per_run
    assert scalars(tmp_path / folder) == want
    assert_resume_logged_the_rest(tmp_path / folder, before, reached, want,
                                  expected=per_run)


@pytest.mark.slow
def test_a_damaged_latest_checkpoint_is_set_aside_and_training_redone(
    tmp_path, uninterrupted, compilation_cache):
  workdir = tmp_path / 'run'
  shutil.copytree(uninterrupted, workdir)
  (workdir / 'summary.json').unlink()
  # Overwrite the middle of checkpoint 12's largest array file.
  array_file = max((p for p in (workdir / 'checkpoints' / '12').rglob('*')
                    if p.is_file()), key=lambda p: p.stat().st_size)
  data = bytearray(array_file.read_bytes())
  data[len(data) // 2:len(data) // 2 + 16] = b'\x55' * 16
  array_file.write_bytes(bytes(data))
  before = event_files(workdir)  # The copied run logged every step.

  resumed = recovery_run(workdir, compilation_cache)

  assert resumed.returncode == 0, resumed.stderr[-3000:]
  assert 'Checkpoint 12 in ' in resumed.stderr and 'unreadable' in resumed.stderr
  assert 'Resuming from the checkpoint of step 8.' in resumed.stderr
  aside, = (workdir / checkpoints.UNREADABLE_DIR).iterdir()
  assert aside.name.startswith('12-')
  assert_same_outcome(outcome(workdir), outcome(uninterrupted))
  assert_resume_logged_the_rest(workdir, before, 8, outcome(uninterrupted)[2])


@pytest.mark.slow
def test_a_diverging_loss_stops_naming_the_step_and_saves_nothing_after(
    tmp_path, monkeypatch):
  config = smoke.get_config()
  # Eight steps at a sane rate, checkpoints at 4 and 8, then an absurd rate
  # (beyond what a config may ask for: the schedule itself is replaced).
  monkeypatch.setattr(schedules, 'create_learning_rate_fn',
                      lambda *args: lambda step: jnp.where(step < 8, 0.01,
                                                           1e30))
  config.update(num_train_steps=16, checkpoint_every_steps=4,
                eval_every_steps=4, log_every_steps=4)
  config.data.data_dir = fake_cifar.data_dir()
  with pytest.raises(train.NonFiniteLossError) as error:
    train.train_and_evaluate(config, str(tmp_path))

  message = str(error.value)
  match = re.match(r'the training loss is (nan|inf) at step (\d+);', message)
  assert match and 8 < int(match.group(2)) <= 12, message
  assert 'the newest checkpoint, step 8, is intact' in message
  assert sorted(os.listdir(tmp_path / 'checkpoints')) == ['4', '8']
  step, params, batch_stats, opt_state = restore_params(tmp_path, config)
  assert int(step) == 8
  for leaf in jax.tree.leaves((params, batch_stats, opt_state)):
    assert np.all(np.isfinite(leaf))


def test_the_first_non_finite_loss_is_the_step_and_run_named():
  checkpointer = checkpoints.Checkpointer(
      'unused', keep=1, metadata={})
  # Two calls of two steps each, two runs: leaves (steps, runs).
  window = [{'loss': np.float32([[2.3, 2.4], [2.2, 2.1]])},
            {'loss': np.float32([[2.0, np.inf], [np.nan, 1.9]])}]

  with pytest.raises(train.NonFiniteLossError,
                     match=r'^the training loss is inf at step 12 \(run 1\); '
                           r'.*no checkpoint was written'):
    train._checked_sums(window, 10, checkpointer)
  steps = train._checked_sums(window[:1], 10, checkpointer)
  assert [list(s['loss']) for s in steps] == [[np.float32(2.3),
                                               np.float32(2.4)],
                                              [np.float32(2.2),
                                               np.float32(2.1)]]


def test_calls_end_where_something_is_due():
  due = lambda step: step % 10 == 0 or step == 25
  calls = list(train.call_lengths(3, 32, 4, due))
  assert calls == [(3, 4), (7, 3), (10, 4), (14, 4), (18, 2), (20, 4),
                   (24, 1), (25, 4), (29, 1), (30, 2)]
  assert list(train.call_lengths(3, 32, 1, due)) == [
      (step, 1) for step in range(3, 32)]


@pytest.mark.slow
def test_a_second_trainer_on_a_busy_workdir_is_refused_naming_the_first(
    tmp_path, compilation_cache):
  command, env = cli_command(*recovery_flags(
      tmp_path, compilation_cache, '--config.num_train_steps=400'))
  first = subprocess.Popen(command, cwd=REPO, env=env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                           text=True)
  try:
    deadline = time.time() + 120
    while not (tmp_path / 'checkpoints' / '4').exists():  # It is training.
      assert first.poll() is None and time.time() < deadline
      time.sleep(0.2)
    start = time.time()
    second = recovery_run(tmp_path, compilation_cache,
                          '--config.num_train_steps=400')
    assert second.returncode == 1
    assert error_line(second) == (
        f'error: --workdir={tmp_path} is in use by another trainer (pid '
        f'{first.pid} on {socket.gethostname()}, started '
        + error_line(second).split(', started ')[1])
    assert time.time() - start < 60
    assert 'Traceback' not in second.stderr
    # It stopped before training, and the first is still the holder.
    assert 'Training steps' not in second.stderr
    holder = json.loads((tmp_path / workdir.HOLDER_FILE).read_text())
    assert holder['pid'] == first.pid
  finally:
    first.terminate()
    first.communicate(timeout=120)
  # The first was undisturbed: SIGTERM saved its step and it can resume.
  assert first.returncode == 128 + signal.SIGTERM
  assert not list((tmp_path / 'checkpoints').glob('*tmp*'))


@pytest.mark.slow
def test_a_failed_checkpoint_write_ends_the_run_in_one_line(tmp_path):
  (tmp_path / 'checkpoints').write_text('not a folder')
  (tmp_path / workdir.HOLDER_FILE).write_text('{}')  # The trainer's run.
  start = time.time()
  result = run_cli('--config=configs/smoke.py', f'--workdir={tmp_path}',
                   timeout=120)
  assert result.returncode == 1
  assert error_line(result).startswith('error: writing checkpoint ')
  assert 'Not a directory' in error_line(result)
  assert 'Traceback' not in result.stderr
  assert time.time() - start < 60


def _image_folder(root, per_class):
  # Uncompressed PNGs: every file has the same size.
  rng = np.random.default_rng(per_class)
  for label in range(10):
    (root / 'train' / f'c{label}').mkdir(parents=True, exist_ok=True)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
          root / 'train' / f'c{label}' / f'{i}.png', compress_level=0)
  return root


def _swap(a, b):
  a.rename(a.with_suffix('.tmp'))
  b.rename(a)
  a.with_suffix('.tmp').rename(b)


@pytest.mark.slow
@pytest.mark.parametrize('change, now', [
    # One more image in every class.
    (lambda images: _image_folder(images, per_class=9), '90 files'),
    # A cat and a dog of the same byte size swapped: only the pixels differ.
    (lambda images: _swap(images / 'train/c3/0.png',
                          images / 'train/c5/0.png'), '80 files'),
], ids=['added', 'swapped'])
def test_a_resume_on_changed_data_is_refused(tmp_path, change, now):
  images = _image_folder(tmp_path / 'images', per_class=8)
  config = smoke.get_config()
  config.data.update(name='image_folder', data_dir=str(images), test_split='')
  config.parallelism = 'jit'
  workdir = str(tmp_path / 'run')
  assert train.train_and_evaluate(config, workdir, stop_at_step=3) is None
  change(images)

  with pytest.raises(checkpoints.IncompatibleCheckpointError,
                     match=r'training.train_data: checkpoint "train\[:90%\] '
                     r'of image folder .*80 files.*, this run "train\[:90%\] '
                     rf'of image folder .*{now}'):
    train.train_and_evaluate(config, workdir)


# The trainer's command line as on a machine without TensorFlow (the GPU
# image): importing it fails, as it would there.
WITHOUT_TENSORFLOW = '''
import runpy, sys
sys.modules['tensorflow'] = None
sys.modules['tensorflow_datasets'] = None
sys.argv = ['resnet_jax.main'] + sys.argv[1:]
runpy.run_module('resnet_jax.main', run_name='__main__')
'''


@pytest.mark.slow
def test_an_image_folder_trains_on_a_machine_without_tensorflow(tmp_path):
  images = _image_folder(tmp_path / 'images', per_class=4)
  workdir = tmp_path / 'run'
  result = subprocess.run(
      [sys.executable, '-c', WITHOUT_TENSORFLOW, '--config=configs/smoke.py',
       f'--workdir={workdir}', '--config.data.name=image_folder',
       f'--config.data.data_dir={images}', '--config.data.test_split='],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  summary = json.loads((workdir / 'summary.json').read_text())
  assert summary['steps'] == 6 and summary['eval_examples'] == 4
  # Every logged (tag, step), written without TensorFlow.
  assert ('train_loss', 6) in scalars(workdir)
  assert ('val_accuracy', 6) in scalars(workdir)
  assert sorted(p.name for p in (workdir / 'checkpoints').iterdir()) == [
      '3', '6']
