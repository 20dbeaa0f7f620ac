"""experiments/reproduce_table6.py: flags, commands, skipping, the tables.

No training: a fake trainer reads each command as resnet_jax.main does (the
same config flag) and writes the config.json and summary.json that the
trainer would for config.num_runs runs (seeds config.seed + i), or fails as it
would.
"""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

from absl import flags
from ml_collections import config_flags
import pytest

from experiments import reproduce_table6 as table6

REPO = table6.REPO
OVERRIDES = ['--config.data.name=image_folder',
             '--config.data.data_dir=/tmp/cifar10-jpeg75',
             '--config.data.test_split=']
TYPED = {'data.name': 'image_folder', 'data.data_dir': '/tmp/cifar10-jpeg75',
         'data.test_split': ''}
DEVICES = {'devices': 1, 'device_kind': 'cpu', 'platform': 'cpu',
           'process_count': 1, 'jax_version': '0.10.2'}


def _flags(monkeypatch, *args):
  """Parses the sweep's command line into table6.FLAGS."""
  argv = ['reproduce_table6', *args]
  monkeypatch.setattr(sys, 'argv', argv)  # config_flags reads overrides here.
  flag_values = flags.FlagValues()
  table6.define_flags(flag_values)
  flag_values(argv)
  monkeypatch.setattr(table6, 'FLAGS', flag_values)


def _trainer_config(command):
  """The config resnet_jax.main builds from `command`: its very flag."""
  argv = command[2:]  # ['resnet_jax.main', '--config=...', ...]
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values,
                                  sys_argv=argv)
  flags.DEFINE_string('workdir', None, '', flag_values=flag_values)
  flag_values(argv)
  return flag_values.config, flag_values.workdir


def _summary(val_accuracies, test_accuracies=None, first_seed=0, steps=702,
             **extra):
  """summary.json of runs of seeds first_seed, first_seed + 1, ..."""
  runs = [{'seed': first_seed + i, 'final_val_accuracy': a,
           'final_val_loss': 1.0} for i, a in enumerate(val_accuracies)]
  summary = {'config': 'resnet20', 'dataset': 'image_folder', 'steps': steps,
             'epochs': steps / 351, 'batch_size': 128,
             'train_examples': 45000, 'eval_examples': 5000,
             'final_val_accuracy': sum(val_accuracies) / len(runs),
             'final_val_loss': 1.0, 'num_runs': len(runs), 'runs': runs,
             'wall_seconds': 500.0, 'train_images_per_second': 200.5, **extra}
  if test_accuracies is not None:
    for run, accuracy in zip(runs, test_accuracies):
      run['test_accuracy'] = accuracy
    summary |= {'test_examples': 10000,
                'test_accuracy': sum(test_accuracies) / len(runs)}
  return summary


class FakeTrainer(table6.Trainer):
  """Writes what the trainer would; refuses another recipe's workdir."""

  def __init__(self, accuracies=None, fail=(), ends=None):
    # accuracies: {(depth, seed): validation accuracy}; fail: depths whose
    # loss becomes nan; ends: (exit status, log line) of every run instead,
    # where 143 and 130 send this process SIGTERM or SIGINT first, as a
    # preemption or a terminal's Ctrl-C reaches the sweep's handler.
    self.accuracies, self.fail, self.ends, self.calls = (
        accuracies or {}, fail, ends, [])

  def train(self, command, log_path):
    self.calls.append(command)
    if self.ends:
      code, line = self.ends
      with open(log_path, 'a') as log:
        log.write(f'{line}\n')
      if code in (143, 130):
        os.kill(os.getpid(), code - 128)
      return code
    config, workdir = _trainer_config(command)
    depth, seeds = config.model.depth, range(
        config.seed, config.seed + config.num_runs)
    config = json.loads(config.to_json_best_effort())
    with open(log_path, 'a') as log:
      previous = os.path.join(workdir, 'config.json')
      if os.path.exists(previous):  # Stands in for the checkpoint's metadata.
        with open(previous) as f:
          old = json.load(f)
        if old['num_epochs'] != config['num_epochs']:
          log.write(f'error: checkpoints in {workdir}/checkpoints come from '
                    'a different run (num_epochs); ...\n')
          return 1
      if depth in self.fail:
        log.write('error: the training loss is nan at step 5; ...\n')
        return 1
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(config, f)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(_summary([self.accuracies[depth, s] for s in seeds],
                         first_seed=seeds[0], **DEVICES), f)
    return 0


@pytest.fixture(name='signals')
def fixture_signals():
  """Restores the SIGTERM and SIGINT handlers that a test installs."""
  previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
  yield
  for s, handler in previous.items():
    signal.signal(s, handler)


def _write_job(root, depth, seeds, overrides, summary):
  """A depth done earlier with the config `overrides` give."""
  workdir = table6.workdir(root, depth, seeds)
  os.makedirs(workdir)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(table6.job_config(depth, seeds, overrides), f)
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(summary, f)


def test_the_command_of_one_depth_trains_every_seed():
  command = table6.build_command(32, range(1, 3), '/runs/t6/',
                                 {**TYPED, 'num_epochs': 2.0})
  assert command == [
      sys.executable, '-m', 'resnet_jax.main', '--config=configs/resnet32.py',
      '--workdir=/runs/t6/resnet32-seeds1-2', '--config.seed=1',
      '--config.num_runs=2', *OVERRIDES, '--config.num_epochs=2.0']
  assert table6.build_command(20, range(1), 'gs://b/t6', {})[4:] == [
      '--workdir=gs://b/t6/resnet20-seeds0-0', '--config.seed=0',
      '--config.num_runs=1']


def test_overrides_are_typed_and_reach_the_trainer_unchanged(monkeypatch):
  _flags(monkeypatch, '--num_epochs=0.5', '--config.data.mean=(1.5, 2, 3)',
         '--noconfig.data.on_device', '--config.optimizer.weight_decay=5e-4',
         '--config.schedule.decay_fractions=(0.25,)',
         '--config.steps_per_call=8', *OVERRIDES)
  overrides = table6.requested_overrides()
  assert overrides == {**TYPED, 'data.mean': (1.5, 2, 3),
                       'data.on_device': False, 'optimizer.weight_decay': 5e-4,
                       'schedule.decay_fractions': (0.25,),
                       'steps_per_call': 8, 'num_epochs': 0.5}
  # The trainer's flags read the command back into exactly the config that
  # the sweep expects in config.json (ResNet-110 has its own warm-up).
  config, workdir = _trainer_config(
      table6.build_command(110, range(3, 8), '/r', overrides))
  assert workdir == '/r/resnet110-seeds3-7'
  assert json.loads(config.to_json_best_effort()) == table6.job_config(
      110, range(3, 8), overrides)
  assert (config.seed, config.num_runs, config.model.depth, config.data.mean,
          config.data.on_device, config.steps_per_call) == (
              3, 5, 110, (1.5, 2, 3), False, 8)
  assert config.schedule.warmup_steps == 400  # configs/resnet110.py's.


@pytest.mark.parametrize('args, message', [
    (['--config.seed=3'], '--config.seed, --config.num_runs'),
    (['--config.num_runs=2'], '--config.seed, --config.num_runs'),
    (['--config.model.depth=56'], '--config.seed, --config.num_runs'),
    (['--depths=21'], r'--depths: there is no configs/resnet21.py'),
    (['--depths=20,20'], '--depths: give each value once'),
    (['--num_seeds=0'], '--first_seed, --num_seeds'),
    (['--first_seed=-1'], '--first_seed, --num_seeds'),
    (['--num_epochs=1', '--config.num_epochs=2'], '--num_epochs: give'),
    (['--num_epochs=0'], '--num_epochs: give'),
    (['--config=configs/resnet56.py'], '--config: each run uses')])
def test_bad_flags_are_refused_before_anything_runs(monkeypatch, tmp_path,
                                                    args, message):
  _flags(monkeypatch, f'--root={tmp_path}', *args)
  monkeypatch.setattr(table6, 'sweep', None)  # Nothing may run.
  with pytest.raises(ValueError, match=message):
    table6.main(['reproduce_table6'])
  assert not os.listdir(tmp_path)


def test_positional_arguments_are_refused(monkeypatch, tmp_path):
  _flags(monkeypatch, f'--root={tmp_path}')
  with pytest.raises(ValueError, match='unexpected arguments: 20'):
    table6.main(['reproduce_table6', '20'])


def test_the_command_line_fails_with_one_line():
  for args, error in (
      (['--config.data.nme=x'], "error: the config has no field 'nme' Did "
       'you mean "name" instead of "nme"?; check the --config.* overrides'),
      (['--config.seed=3'], 'error: --config.seed, --config.num_runs, '
       '--config.model.depth: set by --first_seed, --num_seeds, --depths')):
    result = subprocess.run(
        [sys.executable, '-m', 'experiments.reproduce_table6', *args],
        cwd=REPO, capture_output=True, text=True, check=False)
    assert (result.returncode, result.stderr.strip()) == (1, error)


def test_dry_run_prints_one_command_per_depth(monkeypatch, tmp_path, capsys):
  _flags(monkeypatch, f'--root={tmp_path}', '--depths=20,32',
         '--first_seed=2', '--num_seeds=3', '--dry_run',
         '--config.num_epochs=2')
  assert table6.main(['reproduce_table6']) == 0
  lines = capsys.readouterr().out.splitlines()
  assert [l.split()[4] for l in lines] == [
      f'--workdir={tmp_path}/resnet{d}-seeds2-4' for d in (20, 32)]
  assert lines[0].endswith('--config.seed=2 --config.num_runs=3 '
                           '--config.num_epochs=2.0')
  assert not os.listdir(tmp_path)


def test_mean_and_sample_std_by_hand():
  # Errors 10 and 8: mean 9, sample std sqrt(((10-9)^2 + (8-9)^2) / 1).
  assert table6.mean_std([10.0, 8.0]) == '9.00 ± 1.41'
  assert table6.mean_std([7.0, 6.0, 8.0]) == '7.00 ± 1.00'
  assert table6.mean_std([7.5]) == '7.50'  # One seed: no std.
  assert table6.mean_std([]) == '—'


def test_the_table_of_finished_runs(tmp_path):
  root, overrides = str(tmp_path), {**TYPED, 'num_epochs': 2.0}
  # Validation errors of seeds 0, 1: ResNet-20 10% and 8%; ResNet-32 7%, 5%.
  found = {20: [_summary([0.90, 0.92], **DEVICES)],
           32: [_summary([0.93, 0.95])], 44: []}
  markdown = table6.write_tables(found, range(2), root, overrides)

  assert ("**NOT the paper's 64k-iteration schedule**: 702 steps (2 epochs) "
          'at batch 128') in markdown
  assert '**Validation error**' in markdown
  assert '**Not the TFDS CIFAR-10**' in markdown
  assert ('| Data | `image_folder`: 45,000 training, 5,000 validation and 0 '
          'test images |') in markdown
  assert '| Schedule | 702 steps = 2 epochs at batch 128 |' in markdown
  assert ('| Trainer command | `python -m resnet_jax.main '
          '--config=configs/resnet<depth>.py '
          f'--workdir={root}/resnet<depth>-seeds0-1 '
          '--config.seed=0 --config.num_runs=2 '
          '--config.data.name=image_folder '
          '--config.data.data_dir=/tmp/cifar10-jpeg75 '
          '--config.data.test_split= --config.num_epochs=2.0` |') in markdown
  assert ('| Devices | 1 cpu (cpu) in 1 process(es), JAX 0.10.2 / not in '
          'summary.json (differs between runs) |') in markdown
  # 500 s of wall time for the program's 2 runs: 4.2 minutes each.
  assert ('| ResNet-20 | 2 | 9.00 ± 1.41 | 10.00 (seed 0), 8.00 (seed 1) '
          '| 4.2 | 8.75 | 8.27 |') in markdown
  assert '| ResNet-32 | 2 | 6.00 ± 1.41 |' in markdown
  assert '| ResNet-44 | 0 | — | — | — | 7.17 | 6.90 |' in markdown
  assert (tmp_path / 'table6.md').read_text() == markdown

  rows = list(csv.DictReader(io.StringIO(
      (tmp_path / 'table6.csv').read_text())))
  assert [r['depth'] for r in rows] == ['20', '32', '44']
  assert rows[0] == {
      'depth': '20', 'metric': 'validation', 'runs': '2', 'seeds': '0;1',
      'mean_error_pct': '9.0000', 'std_error_pct': '1.4142',
      'errors_pct': '10.0000;8.0000', 'wall_minutes_per_run': '4.17',
      'paper_error_pct': '8.75',
      'akamaster_error_pct': '8.27', 'shortened_schedule': 'True'}
  assert rows[2]['mean_error_pct'] == '' and rows[2]['runs'] == '0'


def test_a_row_gathers_every_workdir_of_the_recipe(tmp_path):
  root, overrides = str(tmp_path), {**TYPED, 'num_epochs': 2.0}
  # Seeds 0-2 as vectorized runs of one program, resumed once; seed 3 alone
  # with more steps per call; seed 2 again; another recipe; a stray folder.
  _write_job(root, 20, range(3), {**overrides, 'vectorize_runs': True},
             _summary([0.90, 0.92, 0.91], total_wall_seconds=900.0))
  _write_job(root, 20, range(3, 4), {**overrides, 'steps_per_call': 100},
             _summary([0.89], first_seed=3))
  _write_job(root, 20, range(2, 3), overrides, _summary([0.5], first_seed=2))
  _write_job(root, 20, range(4, 5), {**overrides, 'num_epochs': 3.0},
             _summary([0.5], first_seed=4))
  os.makedirs(f'{root}/resnet20-seeds5-x')
  _write_job(root, 32, range(1), overrides, _summary([0.5]))

  found = table6.finished(root, 20, overrides)
  assert [[run['seed'] for run in s['runs']] for s in found] == [
      [0, 1, 2], [2], [3]]
  markdown = table6.write_tables({20: found}, range(1), root, overrides)
  # Errors 10, 8, 9 and 11 (seed 2 once); 900 s for 3 runs, 500 s for 1.
  assert ('| ResNet-20 | 4 | 9.50 ± 1.29 | 10.00 (seed 0), 8.00 (seed 1), '
          '9.00 (seed 2), 11.00 (seed 3) | 5.0 / 8.3 / 8.3 | 8.75 |'
          ) in markdown


def test_test_error_when_every_run_has_one(tmp_path):
  found = {110: [_summary([0.95], test_accuracies=[0.9357], first_seed=3,
                          steps=64_000, dataset='cifar10')]}
  markdown = table6.write_tables(found, range(3, 4), str(tmp_path), {})
  assert 'NOT the paper' not in markdown and 'Validation error' not in markdown
  assert 'Not the TFDS' not in markdown
  assert ('| Data | `cifar10`: 45,000 training, 5,000 validation and 10,000 '
          'test images |') in markdown
  assert '| final test error (%), mean ± sample std (n - 1) |' in markdown
  assert '| ResNet-110 | 1 | 6.43 | 6.43 (seed 3) | 8.3 | 6.43 (best of 5' \
      in markdown
  # One depth without a test split: all are compared on validation.
  found[56] = [_summary([0.90])]
  markdown = table6.write_tables(found, range(3, 4), str(tmp_path), {})
  assert '| ResNet-110 | 1 | 5.00 | 5.00 (seed 3) |' in markdown


def test_a_sweep_skips_done_depths_and_reports_failures(tmp_path):
  root, logs = str(tmp_path / 'runs'), str(tmp_path / 'logs')
  overrides, seeds = {**TYPED, 'num_epochs': 2.0}, range(2)
  _write_job(root, 20, seeds, overrides, _summary([0.90, 0.91]))  # Earlier.
  trainer = FakeTrainer({(32, 0): 0.93, (32, 1): 0.94, (44, 0): 0.95,
                         (44, 1): 0.96}, fail={44})
  failures = table6.sweep([20, 32, 44], seeds, root, logs, overrides,
                          trainer)
  # One trainer per depth, for all seeds; the done depth is not started.
  assert trainer.calls == [table6.build_command(d, seeds, root, overrides)
                           for d in (32, 44)]
  done = {d: table6.done_summary(root, d, seeds, overrides)
          for d in (20, 32, 44)}
  assert {d: s and [r['final_val_accuracy'] for r in s['runs']]
          for d, s in done.items()} == {
              20: [0.90, 0.91], 32: [0.93, 0.94], 44: None}
  assert failures == [
      'resnet44-seeds0-1: exit 1: error: the training loss is nan at step 5; '
      f'...; {logs}/resnet44-seeds0-1.log']

  # Rerun: only the failed depth trains; its log keeps both attempts.
  trainer = FakeTrainer({(44, 0): 0.95, (44, 1): 0.96})
  failures = table6.sweep([20, 32, 44], seeds, root, logs, overrides,
                          trainer)
  assert [c[4] for c in trainer.calls] == [
      f'--workdir={root}/resnet44-seeds0-1']
  assert not failures and table6.done_summary(root, 44, seeds, overrides)
  log = (tmp_path / 'logs' / 'resnet44-seeds0-1.log').read_text()
  assert 'training loss is nan' in log


def test_a_finished_depth_of_another_config_goes_to_the_trainer(tmp_path):
  root, logs, seeds = str(tmp_path), str(tmp_path / 'logs'), range(1)
  _write_job(root, 20, seeds, {**TYPED, 'num_epochs': 2.0}, _summary([0.90]))
  # Another recipe: the trainer refuses the workdir; the depth is not done.
  trainer = FakeTrainer({(20, 0): 0.5})
  failures = table6.sweep([20], seeds, root, logs,
                          {**TYPED, 'num_epochs': 4.0}, trainer)
  assert len(trainer.calls) == 1
  assert not table6.done_summary(root, 20, seeds, {**TYPED, 'num_epochs': 4.0})
  assert failures[0].startswith('resnet20-seeds0-0: exit 1: error: '
                                f'checkpoints in {root}/resnet20-seeds0-0/'
                                'checkpoints come from a different run')
  # Only the logging, the speed, the data's place or the runs' layout
  # differ: the same recipe, done; nothing runs.
  for changed in ({'log_every_steps': 50}, {'steps_per_call': 4},
                  {'data.data_dir': '/elsewhere'}, {'vectorize_runs': True}):
    overrides = {**TYPED, 'num_epochs': 2.0, **changed}
    failures = table6.sweep([20], seeds, root, logs, overrides, trainer)
    assert len(trainer.calls) == 1 and not failures, changed
    assert table6.done_summary(root, 20, seeds, overrides)[
        'final_val_accuracy'] == 0.90
  # Other seeds are another workdir.
  assert table6.done_summary(root, 20, range(1, 2), overrides) is None


def test_sigterm_reaches_the_running_trainer_and_stops_the_sweep(tmp_path,
                                                                 signals):
  log = tmp_path / 'run.log'
  command = [sys.executable, '-c',
             'import signal, sys, time\n'
             'signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n'
             'print("ready", flush=True)\n'
             'time.sleep(20)']
  trainer = table6.Trainer()

  def terminate_when_ready():
    # The log's first line is the command, which says "ready" too.
    while 'ready' not in (log.read_text().splitlines() if log.exists()
                          else []):
      time.sleep(0.01)
    trainer(signal.SIGTERM, None)  # As the sweep's handler is called.

  threading.Thread(target=terminate_when_ready, daemon=True).start()
  assert trainer.train(command, str(log)) == 143
  assert trainer.terminated
  # The next attempt's output is appended after the first's.
  assert table6.Trainer().train([sys.executable, '-c', 'print("again")'],
                                str(log)) == 0
  text = log.read_text()
  assert text.count('=== ') == 2 and text.index('ready') < text.index('again')

  trainer = FakeTrainer(ends=(143, 'preempted: saved a checkpoint'))
  signal.signal(signal.SIGTERM, trainer)  # As main does.
  failures = table6.sweep([20, 32], range(2), str(tmp_path / 'runs'),
                          str(tmp_path / 'logs'), {}, trainer)
  assert len(trainer.calls) == 1  # Nothing starts after it.
  assert failures == [f'resnet20-seeds0-1: exit 143: stopped by SIGTERM; '
                      f'{tmp_path}/logs/resnet20-seeds0-1.log']


def test_main_exits_with_one_line_and_keeps_the_table(monkeypatch, tmp_path,
                                                      capsys):
  monkeypatch.setattr(table6, 'Trainer', lambda: FakeTrainer(
      {(20, 0): 0.90, (20, 1): 0.88}, fail={32}))
  monkeypatch.setattr(signal, 'signal', lambda *_: None)
  _flags(monkeypatch, f'--root={tmp_path}', '--depths=20,32', '--num_seeds=2',
         '--num_epochs=2', *OVERRIDES)
  with pytest.raises(SystemExit) as exit_:
    table6.main(['reproduce_table6'])
  assert exit_.value.code == 1
  assert capsys.readouterr().err.splitlines() == [
      'error: 1 of 2 depths not done: resnet32-seeds0-1: exit 1: error: the '
      'training loss is nan at step 5; ...; '
      f'{tmp_path}/logs/resnet32-seeds0-1.log']
  table = (tmp_path / 'table6.md').read_text()
  assert '| ResNet-20 | 2 | 11.00 ± 1.41 |' in table
  assert '| ResNet-32 | 0 | — |' in table
  # --report_only trains nothing, and says which depths are not done.
  _flags(monkeypatch, f'--root={tmp_path}', '--depths=20,32', '--num_seeds=2',
         '--num_epochs=2', '--report_only', *OVERRIDES)
  with pytest.raises(SystemExit):
    table6.main(['reproduce_table6'])
  assert capsys.readouterr().err.splitlines() == [
      f'error: 1 of 2 depths not done: {tmp_path}/resnet32-seeds0-1: no '
      'summary.json of this config']
  # Done with another config is not done with this one.
  _flags(monkeypatch, f'--root={tmp_path}', '--depths=20', '--num_seeds=2',
         '--num_epochs=3', '--report_only', *OVERRIDES)
  with pytest.raises(SystemExit):
    table6.main(['reproduce_table6'])
  assert 'seeds0-1: no summary.json of this config' in capsys.readouterr().err


@pytest.mark.parametrize('code, name', [(143, 'SIGTERM'), (130, 'Ctrl-C')])
def test_main_stops_on_a_signal_with_its_status(monkeypatch, tmp_path, capsys,
                                                signals, code, name):
  trainer = FakeTrainer(ends=(code, 'stopped: saved a checkpoint'))
  monkeypatch.setattr(table6, 'Trainer', lambda: trainer)
  _flags(monkeypatch, f'--root={tmp_path}', '--depths=20,32', '--num_seeds=1')
  assert table6.main(['reproduce_table6']) == code  # Reached main's handler.
  assert len(trainer.calls) == 1  # Nothing starts after it.
  assert capsys.readouterr().err.splitlines() == [
      f'error: stopped by {name}; rerun the same command to go on']
  assert (tmp_path / 'table6.md').exists()


def test_ctrl_c_is_passed_on_and_the_sweep_waits_for_the_save(tmp_path):
  log = tmp_path / 'run.log'
  command = [sys.executable, '-c',
             'import signal, sys, time\n'
             'def save(*_):\n'
             '  time.sleep(0.5)\n'  # Saving a checkpoint.
             '  print("saved", flush=True)\n'
             '  sys.exit(130)\n'
             'signal.signal(signal.SIGINT, save)\n'
             'print("ready", flush=True)\n'
             'time.sleep(20)']
  trainer = table6.Trainer()

  def interrupt_when_ready():
    while 'ready' not in (log.read_text().splitlines() if log.exists()
                          else []):
      time.sleep(0.01)
    trainer(signal.SIGINT, None)  # As the sweep's handler is called.

  threading.Thread(target=interrupt_when_ready, daemon=True).start()
  assert trainer.train(command, str(log)) == 130
  assert trainer.terminated and trainer.signum == signal.SIGINT
  assert log.read_text().splitlines()[-1] == 'saved'  # Waited for it.


def test_a_failure_is_explained_by_its_own_attempt(tmp_path):
  logs = tmp_path / 'logs'
  logs.mkdir()
  (logs / 'resnet20-seeds0-0.log').write_text(
      'error: an earlier attempt failed\n')
  failures = table6.sweep([20], range(1), str(tmp_path / 'runs'), str(logs),
                          {}, FakeTrainer(ends=(137, 'Killed')))
  assert failures == [
      f'resnet20-seeds0-0: exit 137: Killed; {logs}/resnet20-seeds0-0.log']


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q']))


def test_a_workdir_with_broken_records_is_named_and_the_others_go_on(
    monkeypatch, tmp_path, capsys):
  seeds, overrides = range(1), {**TYPED, 'num_epochs': 2.0}
  root = str(tmp_path)
  _write_job(root, 20, seeds, overrides, _summary([0.90]))
  config20 = tmp_path / 'resnet20-seeds0-0' / 'config.json'
  config20.write_text('{"seed": 0,')  # Cut short.
  _write_job(root, 32, seeds, overrides, {'config': 'resnet32',
                                          'runs': [{'seed': 0}]})
  summary32 = tmp_path / 'resnet32-seeds0-0' / 'summary.json'
  trainer = FakeTrainer({(44, 0): 0.93})
  monkeypatch.setattr(table6, 'Trainer', lambda: trainer)
  monkeypatch.setattr(signal, 'signal', lambda *_: None)
  _flags(monkeypatch, f'--root={root}', '--depths=20,32,44', '--num_seeds=1',
         '--num_epochs=2', *OVERRIDES)
  with pytest.raises(SystemExit) as exit_:
    table6.main(['reproduce_table6'])
  assert exit_.value.code == 1
  # Nothing runs on a workdir whose records cannot be read; the next depth
  # trains.
  assert [c[4] for c in trainer.calls] == [
      f'--workdir={root}/resnet44-seeds0-0']
  errors = [l for l in capsys.readouterr().err.splitlines()
            if l.startswith('error: ')]
  assert errors == [
      f'error: 2 of 3 depths not done: resnet20-seeds0-0: {config20} is not '
      'valid JSON (Expecting property name enclosed in double quotes: line 1 '
      f'column 12 (char 11)) | resnet32-seeds0-0: {summary32} lacks dataset, '
      'steps, epochs, batch_size, train_examples, wall_seconds: not as the '
      'trainer writes it']
  assert '| ResNet-44 | 1 | 7.00 |' in (tmp_path / 'table6.md').read_text()
  assert config20.read_text() == '{"seed": 0,'  # Left as it was.


def test_paths_under_the_home_folder_as_users_type_them(monkeypatch,
                                                        tmp_path):
  monkeypatch.setenv('HOME', str(tmp_path))
  monkeypatch.setattr(table6, 'Trainer', lambda: FakeTrainer({(20, 0): 0.9}))
  monkeypatch.setattr(signal, 'signal', lambda *_: None)
  _flags(monkeypatch, '--root=~/table6', '--log_dir=~/logs', '--depths=20',
         '--num_seeds=1', *OVERRIDES)
  assert table6.main(['reproduce_table6']) == 0
  assert (tmp_path / 'table6' / 'resnet20-seeds0-0' / 'summary.json').exists()
  assert (tmp_path / 'logs' / 'resnet20-seeds0-0.log').exists()
  assert (tmp_path / 'table6' / 'table6.md').exists()
  assert not (REPO / '~').exists()  # Where `~/table6` was made before.
