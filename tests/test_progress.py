"""What the trainer tells its user while it works: data, compilation, progress.

The progress lines are host-side prints: they never wait for the devices, so
a run computes the same with them (monitoring.Progress).
"""

import pytest

import fake_cifar
from configs import smoke
from resnet_jax.run import monitoring
from resnet_jax.run import train


class _Clock:
  """A monotonic clock the test moves by hand."""

  def __init__(self):
    self.now = 1000.0

  def __call__(self):
    return self.now


@pytest.fixture(name='clock')
def fixture_clock(monkeypatch):
  clock = _Clock()
  monkeypatch.setattr(monitoring.time, 'monotonic', clock)
  return clock


def test_a_progress_line_gives_percentage_rate_and_both_etas(clock):
  watch = monitoring.Stopwatch()
  progress = monitoring.Progress(watch, last_step=64_000, total_steps=64_000,
                                 eval_every_steps=2_000)
  watch.step_done(1, None)
  clock.now += 299 / 4  # 4 steps/s from the first step to step 300.
  assert progress.line(300, 4.2) == (
      'step 300/64,000 (0.5%), 4.2 steps/s, 4h25m left; validation at step '
      '2,000 in 7m05s')
  assert progress.line(300).startswith('step 300/64,000 (0.5%), 4 steps/s')
  # The last validation is at the end; a stopped run says where it stops.
  assert progress.line(64_000, 4.0) == (
      'step 64,000/64,000 (100.0%), 4 steps/s, 0s left')
  stopping = monitoring.Progress(watch, 1_000, 64_000, None)
  assert 'left (stopping at step 1,000)' in stopping.line(300)
  assert 'validation' not in stopping.line(300)


def test_durations_read_naturally():
  assert [monitoring.duration(s) for s in (0.4, 42, 185, 3725, 90_000)] == [
      '0s', '42s', '3m05s', '1h02m', '25h00m']


def test_the_first_heartbeat_comes_30_s_after_the_first_step_then_rarely(
    clock, caplog):
  caplog.set_level('INFO')
  watch = monitoring.Stopwatch()
  progress = monitoring.Progress(watch, 10_000, 10_000, None)
  lines = lambda: [r.getMessage() for r in caplog.records  # noqa: E731
                   if r.getMessage().startswith('step ')]
  progress.heartbeat(0)  # No step finished: nothing to say.
  watch.step_done(1, None)
  clock.now += 29
  progress.heartbeat(50)
  assert not lines()
  clock.now += 2
  progress.heartbeat(60)
  assert lines() == ['step 60/10,000 (0.6%), 1.9 steps/s, 1h27m left']
  clock.now += monitoring.Progress.QUIET_S - 1
  progress.heartbeat(600)
  assert len(lines()) == 1
  progress.report(700, 2.0)  # A log resets the quiet time.
  clock.now += monitoring.Progress.QUIET_S - 1
  progress.heartbeat(800)
  assert len(lines()) == 2
  clock.now += 2
  progress.heartbeat(900)
  assert len(lines()) == 3


def _messages(caplog) -> list[str]:
  # The trainer's own lines, not the libraries'.
  return [r.getMessage() for r in caplog.records
          if '/resnet_jax/' in r.pathname.replace('\\', '/')]


@pytest.mark.slow  # Trains (compiles) a small run.
def test_the_trainer_says_what_it_does_and_that_a_finished_run_is_finished(
    tmp_path, monkeypatch, caplog):
  caplog.set_level('INFO')
  # Quiet from the first step on: the first call after it prints a line,
  # long before the first log (here only at the end).
  monkeypatch.setattr(monitoring.Progress, 'FIRST_QUIET_S', 0.0)
  config = smoke.get_config()
  config.data.data_dir = fake_cifar.data_dir()
  # No evaluations: their compilation would only make the test slower.
  config.data.update(eval_split='', test_split='')
  config.update(parallelism='jit', log_every_steps=1000)
  train.train_and_evaluate(config, str(tmp_path))
  messages = _messages(caplog)
  loading = messages.index(
      'Loading the data: cifar10 train[:90%] for training...')
  assert messages[loading + 1].startswith('Loaded the data in ')
  assert messages[loading + 1].endswith('s: 90 training examples.')
  initialising = messages.index('Initialising the model...')
  assert messages[initialising + 1].startswith('Initialised the model in ')
  compiling = messages.index('Compiling the training step...')
  assert messages[compiling + 1].startswith('Compiled the training step in ')
  progress = [m for m in messages if m.startswith('step ')]
  # A heartbeat before the end (steps 1..5 known done), then the end's log.
  assert progress[0].startswith(('step 1/6 (16.7%)', 'step 2/6 (33.3%)'))
  assert progress[-1].startswith('step 6/6 (100.0%), ')

  caplog.clear()
  train.train_and_evaluate(config, str(tmp_path))  # Finished: nothing to do.
  messages = _messages(caplog)
  assert ('The run is already finished (step 6 of 6): nothing to train; its '
          'summary.json is written again.') in messages
  assert not any(m.startswith('Training steps') for m in messages)
