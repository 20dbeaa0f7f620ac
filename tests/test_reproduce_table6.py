"""experiments/reproduce_table6.py: commands, skipping, and the table's numbers.

No training: runs are summary.json and config.json files written here, and
the trainer is replaced by a function that writes them (or fails).
"""

import csv
import io
import json
import os
import signal
import sys
import threading
import time

import pytest

from experiments import reproduce_table6 as table6

OVERRIDES = ['--config.data.name=image_folder',
             '--config.data.data_dir=/tmp/cifar10-jpeg75',
             '--config.data.test_split=']


def _config(depth, seed, num_epochs=2.0, test_split=''):
  return {'seed': seed, 'num_epochs': num_epochs,
          'model': {'depth': depth},
          'schedule': {'name': 'paper'},
          'data': {'name': 'image_folder', 'data_dir': '/tmp/cifar10-jpeg75',
                   'train_split': 'train[:45000]',
                   'eval_split': 'train[45000:]', 'test_split': test_split}}


def _summary(depth, val_accuracy, test_accuracy=None, steps=702):
  summary = {'config': f'resnet{depth}', 'dataset': 'image_folder',
             'steps': steps, 'epochs': steps / 351, 'batch_size': 128,
             'train_examples': 45000, 'eval_examples': 5000,
             'final_val_accuracy': val_accuracy, 'final_val_loss': 1.0,
             'wall_seconds': 500.0, 'train_images_per_second': 200.5}
  if test_accuracy is not None:
    summary |= {'test_examples': 10000, 'test_accuracy': test_accuracy}
  return summary


def _write_run(root, depth, seed, val_accuracy, test_accuracy=None,
               config=None, steps=702):
  workdir = os.path.join(root, table6.run_name(depth, seed))
  os.makedirs(workdir, exist_ok=True)
  with open(os.path.join(workdir, 'config.json'), 'w') as f:
    json.dump(config or _config(depth, seed), f)
  with open(os.path.join(workdir, 'summary.json'), 'w') as f:
    json.dump(_summary(depth, val_accuracy, test_accuracy, steps), f)


def test_the_command_of_one_run():
  command = table6.build_command(32, 1, '/runs/t6', num_epochs=2,
                                 overrides=OVERRIDES, python='py')
  assert command == [
      'py', '-m', 'resnet_jax.main', '--config=configs/resnet32.py',
      '--workdir=/runs/t6/resnet32-seed1', '--config.seed=1',
      '--config.num_epochs=2', *OVERRIDES]
  # The paper's schedule: no epoch override; fractional epochs kept.
  assert '--config.num_epochs' not in ' '.join(
      table6.build_command(20, 0, '/r', python='py'))
  assert table6.build_command(20, 0, 'gs://b/t6/', 0.5, python='py')[4:] == [
      '--workdir=gs://b/t6/resnet20-seed0', '--config.seed=0',
      '--config.num_epochs=0.5']


def test_arguments(tmp_path):
  args, overrides = table6.parse_args(
      ['--depths=20,32', '--seeds=0,1', '--num_epochs=2',
       f'--root={tmp_path}', *OVERRIDES])
  assert (args.depths, args.seeds, args.num_epochs) == ([20, 32], [0, 1], 2.0)
  assert overrides == OVERRIDES
  assert args.out_dir == str(tmp_path)
  assert args.log_dir == os.path.join(str(tmp_path), 'logs')
  for bad in (['--depths=21'], ['--config.seed=3'], ['--seeds=1,1'],
              ['--config.model.depth=56'], ['--config.batch_size', '256'],
              ['--num_epochs=1', '--config.num_epochs=2']):
    with pytest.raises(SystemExit):
      table6.parse_args(bad)


def test_mean_and_sample_std_by_hand():
  # Errors 10 and 8: mean 9, sample std sqrt(((10-9)^2 + (8-9)^2) / 1).
  assert table6.mean_std([10.0, 8.0]) == pytest.approx((9.0, 2 ** 0.5))
  assert table6.format_mean_std([10.0, 8.0]) == '9.00 ± 1.41'
  assert table6.format_mean_std([7.5]) == '7.50'  # One seed: no std.
  assert table6.format_mean_std([]) == '—'


def test_the_table_of_finished_runs(tmp_path):
  root, logs = str(tmp_path / 'sweep'), str(tmp_path / 'logs')
  # Validation errors: ResNet-20 10% and 8%; ResNet-32 7%, 6% and 8%.
  for seed, accuracy in enumerate([0.90, 0.92]):
    _write_run(root, 20, seed, accuracy)
  for seed, accuracy in enumerate([0.93, 0.94, 0.92]):
    _write_run(root, 32, seed, accuracy)
  os.makedirs(logs)
  with open(os.path.join(logs, 'resnet20-seed0.log'), 'w') as f:
    f.write('I1127 train.py:1] Training steps 0..702 of 702 (351 per epoch '
            'of 45000 examples) on 1 device(s), pmap, training split on the '
            'devices.\n')
  runs = [table6.read_run(root, logs, d, s) for d in (20, 32, 44)
          for s in (0, 1, 2)]
  markdown = table6.write_reports(runs, [20, 32, 44], [0, 1, 2], root)

  assert "**NOT the paper's 64k-iteration schedule**: 702 steps (2 epochs)" \
      in markdown
  assert '**Validation error**' in markdown
  assert '**Not the TFDS CIFAR-10**' in markdown
  assert '`image_folder`, data_dir `/tmp/cifar10-jpeg75`' in markdown
  assert ('train `train[:45000]` (45,000 images), validation '
          '`train[45000:]` (5,000 images), test none') in markdown
  assert '3 per depth requested (0, 1, 2); 5 of 9 runs finished' in markdown
  assert '| Devices | 1 device(s), pmap / unknown (differs' in markdown
  # ResNet-32: errors 7, 6, 8: mean 7, sample std 1.
  assert ('| ResNet-20 | 2 of 3 | 9.00 ± 1.41 | 10.00 (seed 0), 8.00 (seed 1) '
          '| 8.75 | 8.27 |') in markdown
  assert '| ResNet-32 | 3 of 3 | 7.00 ± 1.00 |' in markdown
  assert '| ResNet-44 | 0 of 3 | — | — | 7.17 | 6.90 |' in markdown
  assert '| resnet44-seed2 | missing | — |' in markdown
  assert (tmp_path / 'sweep' / 'table6.md').read_text() == markdown

  rows = list(csv.DictReader(io.StringIO(
      (tmp_path / 'sweep' / 'table6.csv').read_text())))
  assert [r['depth'] for r in rows] == ['20', '32', '44']
  assert rows[0] == {
      'depth': '20', 'metric': 'validation', 'runs': '2', 'seeds': '0;1',
      'mean_error_pct': '9.0000', 'std_error_pct': '1.4142',
      'errors_pct': '10.0000;8.0000', 'paper_error_pct': '8.7500',
      'akamaster_error_pct': '8.2700', 'shortened_schedule': 'True'}
  assert rows[2]['mean_error_pct'] == '' and rows[2]['runs'] == '0'
  per_run = list(csv.DictReader(io.StringIO(
      (tmp_path / 'sweep' / 'table6_runs.csv').read_text())))
  assert len(per_run) == 9 and per_run[1]['error_pct'] == '8.0000'


def test_test_error_when_every_run_has_one(tmp_path):
  root = str(tmp_path)
  config = _config(110, 0, num_epochs=-1.0, test_split='test')
  config['data'] |= {'name': 'cifar10', 'data_dir': ''}
  _write_run(root, 110, 0, 0.95, test_accuracy=0.9357, config=config,
             steps=64_000)
  runs = [table6.read_run(root, str(tmp_path / 'logs'), 110, 0)]
  markdown = table6.markdown_table(runs, [110], [0])
  assert 'NOT the paper' not in markdown and 'Validation error' not in markdown
  assert 'Not the TFDS' not in markdown
  assert 'data_dir `(TFDS default)`' in markdown
  assert '| ResNet-110 | 1 of 1 | 6.43 | 6.43 (seed 0) | 6.43 (best of 5' \
      in markdown
  # One run without a test split: all are compared on validation.
  _write_run(root, 110, 1, 0.90)
  runs.append(table6.read_run(root, str(tmp_path / 'logs'), 110, 1))
  assert table6.choose_metric([r.summary for r in runs]) == 'validation'


def _fake_trainer(accuracies, calls, fail=()):
  """Stands in for the trainer: writes what it would, or fails."""
  def run(command, log_path, forwarder):
    del forwarder
    calls.append(command)
    args = dict(a[2:].split('=', 1) for a in command[3:])
    depth, seed = int(args['config'][len('configs/resnet'):-3]), int(
        args['config.seed'])
    with open(log_path, 'a') as log:
      if (depth, seed) in fail:
        log.write('error: the training loss is nan at step 5; ...\n')
        return 1
      log.write('Training steps 0..702 of 702 (351 per epoch of 45000 '
                'examples) on 2 device(s), pmap, training split on the '
                'devices.\n')
    workdir = args['workdir']
    os.makedirs(workdir, exist_ok=True)
    with open(os.path.join(workdir, 'config.json'), 'w') as f:
      json.dump(_config(depth, seed), f)
    with open(os.path.join(workdir, 'summary.json'), 'w') as f:
      json.dump(_summary(depth, accuracies[depth, seed]), f)
    return 0
  return run


def test_a_sweep_skips_finished_runs_and_reports_failures(tmp_path,
                                                          monkeypatch):
  monkeypatch.setattr(table6, 'probe_jax', lambda python: {
      'platform': 'cpu', 'device_kind': 'cpu', 'jax': '0.0'})
  root, logs = str(tmp_path / 'runs'), str(tmp_path / 'logs')
  _write_run(root, 20, 0, 0.90)  # Finished earlier, same settings.
  calls = []
  accuracies = {(20, 1): 0.92, (32, 0): 0.93, (32, 1): 0.94}
  runs = table6.sweep([20, 32], [0, 1], root, logs, num_epochs=2,
                      overrides=OVERRIDES, python='py',
                      run_fn=_fake_trainer(accuracies, calls,
                                           fail={(32, 1)}),
                      say=lambda _: None)
  # Seed by seed; the finished run is not started again.
  assert [c[4] for c in calls] == [f'--workdir={root}/resnet32-seed0',
                                   f'--workdir={root}/resnet20-seed1',
                                   f'--workdir={root}/resnet32-seed1']
  assert calls[0] == table6.build_command(32, 0, root, 2, OVERRIDES, 'py')
  status = {r.name: r.status for r in runs}
  assert status == {'resnet20-seed0': 'skipped', 'resnet20-seed1': 'finished',
                    'resnet32-seed0': 'finished', 'resnet32-seed1': 'failed'}
  failed = runs[3]
  assert failed.error.startswith('exit 1: error: the training loss is nan')
  attempts = json.loads((tmp_path / 'logs' /
                         'resnet32-seed1.attempts.json').read_text())
  assert attempts['attempts'][0]['returncode'] == 1
  assert attempts['attempts'][0]['host']['cpus_usable'] >= 1
  markdown = table6.markdown_table(runs, [20, 32], [0, 1])
  assert '| ResNet-32 | 1 of 2 | 7.00 |' in markdown
  assert 'JAX 0.0 on cpu (cpu)' in markdown
  # resnet20-seed0 was not started by the sweep: its command is unknown.
  assert ('| Trainer command | unknown (not started by this script) / '
          '`python -m resnet_jax.main --config=configs/resnet<depth>.py '
          f'--workdir={root}/resnet<depth>-seed<seed> --config.seed=<seed> '
          '--config.num_epochs=2 --config.data.name=image_folder '
          '--config.data.data_dir=/tmp/cifar10-jpeg75 '
          '--config.data.test_split=` (differs between runs) |') in markdown

  # Rerun: only the failed run trains; the others are skipped.
  calls.clear()
  runs = table6.sweep([20, 32], [0, 1], root, logs, num_epochs=2,
                      overrides=OVERRIDES, python='py',
                      run_fn=_fake_trainer(accuracies, calls),
                      say=lambda _: None)
  assert [c[4] for c in calls] == [f'--workdir={root}/resnet32-seed1']
  assert all(r.done for r in runs)
  assert len(runs[3].attempts) == 2


def test_a_finished_run_with_other_settings_is_refused(tmp_path):
  root = str(tmp_path)
  _write_run(root, 20, 0, 0.90)  # 2 epochs on the image folder.
  calls = []
  runs = table6.sweep([20], [0], root, str(tmp_path / 'logs'), num_epochs=4,
                      overrides=OVERRIDES, python='py',
                      run_fn=_fake_trainer({}, calls), say=lambda _: None)
  assert not calls and runs[0].status == 'failed'
  assert "config.num_epochs=2.0, not '4'" in runs[0].error
  # The full schedule is asked for, and the run was a shortened one.
  runs = table6.sweep([20], [0], root, str(tmp_path / 'logs'), overrides=[
      '--config.data.data_dir=/elsewhere'], run_fn=_fake_trainer({}, calls),
                      say=lambda _: None)
  assert not calls
  assert "data_dir='/tmp/cifar10-jpeg75', not '/elsewhere'" in runs[0].error
  assert 'not the full schedule' in runs[0].error
  # The length given as an override is compared as any other override.
  runs = table6.sweep([20], [0], root, str(tmp_path / 'logs'),
                      overrides=['--config.num_epochs=2', *OVERRIDES],
                      run_fn=_fake_trainer({}, calls), say=lambda _: None)
  assert not calls and runs[0].status == 'skipped'


def test_sigterm_reaches_the_running_trainer_and_stops_the_sweep(tmp_path):
  log = tmp_path / 'run.log'
  trainer = [sys.executable, '-c',
             'import signal, sys, time\n'
             'signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))\n'
             'print("ready", flush=True)\n'
             'time.sleep(20)']
  forwarder = table6._Forwarder()

  def terminate_when_ready():
    # The log's first line is the command, which says "ready" too.
    while 'ready' not in (log.read_text().splitlines() if log.exists()
                          else []):
      time.sleep(0.01)
    forwarder(signal.SIGTERM, None)  # As the sweep's handler would be called.

  threading.Thread(target=terminate_when_ready, daemon=True).start()
  assert table6.run_training(trainer, str(log), forwarder) == 143
  assert forwarder.terminated

  # The sweep starts nothing after it.
  calls = []

  def preempted(command, log_path, forwarder):
    del log_path
    calls.append(command)
    forwarder.terminated = True
    return 143

  runs = table6.sweep([20, 32], [0], str(tmp_path / 'runs'),
                      str(tmp_path / 'logs'), python='py', run_fn=preempted,
                      forwarder=table6._Forwarder(), say=lambda _: None)
  assert len(calls) == 1
  assert [r.status for r in runs] == ['failed', 'missing']
  assert 'SIGTERM' in runs[0].error


def test_main_exits_non_zero_with_one_line_and_keeps_the_table(tmp_path,
                                                              capsys):
  root = str(tmp_path)
  _write_run(root, 20, 0, 0.90)
  code = table6.main([f'--root={root}', '--depths=20', '--seeds=0,1',
                      '--num_epochs=2', '--report_only', *OVERRIDES])
  captured = capsys.readouterr()
  assert code == 1
  assert captured.err.strip().splitlines() == [
      'error: 1 of 2 runs have no summary.json: resnet20-seed1']
  table = (tmp_path / 'table6.md').read_text()
  assert '| ResNet-20 | 1 of 2 | 10.00 |' in table


def test_the_value_comparison_of_overrides():
  assert table6._same_value(2.0, '2')
  assert table6._same_value('', '')
  assert table6._same_value(True, 'True') and table6._same_value(False, 'false')
  assert table6._same_value([0.5, 0.75], '(0.5, 0.75)')
  assert not table6._same_value('train[:45000]', 'train[:40000]')
  assert not table6._same_value(128, '256')


if __name__ == '__main__':
  sys.exit(pytest.main([__file__, '-q']))
