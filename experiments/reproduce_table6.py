"""Table 6 of He et al. 2015 (CIFAR-10 ResNets) over several seeds.

  python -m experiments.reproduce_table6 --depths=20,32 --num_seeds=2 \
      --num_epochs=2 --root=/tmp/table6 --config.data.name=image_folder \
      --config.data.data_dir=data/cifar10-jpeg75 --config.data.test_split=

trains one job per depth (--dry_run prints their commands): one trainer for
every seed at once, as config.num_runs runs (seeds --first_seed, ...), into
<root>/resnet<depth>-seeds<first>-<last>, its output appended to
<log_dir>/<that name>.log. A job done with this recipe (`done_summary`) is
skipped; any other goes to the trainer, which resumes it or refuses another
recipe's workdir. <root>/table6.md and table6.csv give per depth the mean ±
sample std of the final test error (validation error where a run has no
test split) over every seed done with this recipe, beside the paper's and
akamaster's, headed with what was run.

Exit status: 0 when every depth is done; 1 with one line `error: ...` for bad
flags or a depth not done (the tables hold the others); 143 on SIGTERM, 130
on Ctrl-C, passed on to the running trainer and returned once it has saved
its checkpoint, so that the same command resumes.
"""

import importlib
import json
import os
import pathlib
import re
import shlex
import signal
import statistics
import subprocess
import sys

from absl import flags
from etils import epath
from ml_collections import config_flags

from resnet_jax import cli
from resnet_jax import utils
from resnet_jax.run import experiment
from resnet_jax.run import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
FLAGS = flags.FLAGS
# Test error (%) of He et al. 2015, Table 6 (ResNet-110: best of 5 runs), and
# of github.com/akamaster/pytorch_resnet_cifar10 (its README).
PAPER = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}
AKAMASTER = {20: 8.27, 32: 7.37, 44: 6.90, 56: 6.61, 110: 6.32}
PAPER_EXAMPLES = 64_000 * 128  # The paper's 64k iterations at batch 128.


def define_flags(flag_values=flags.FLAGS):
  """The command line's flags (defined only when run as a program)."""
  kw = {'flag_values': flag_values}
  flags.DEFINE_list('depths', '20,32,44,56,110', 'Comma-separated.', **kw)
  # Consecutive seeds: the trainer's runs are seeds config.seed + i.
  flags.DEFINE_integer('first_seed', 0, 'Seed of the first run.', **kw)
  flags.DEFINE_integer('num_seeds', 5, 'Runs (seeds) per depth.', **kw)
  cli.define_path('root', 'runs/table6', 'Run workdirs, tables.', **kw)
  if 'log_dir' not in flag_values:  # absl.logging's, for the trainers' logs.
    cli.define_path('log_dir', '', 'Local; default <root>/logs.', **kw)
  flags.DEFINE_float('num_epochs', None, 'Instead of 64k steps.', **kw)
  flags.DEFINE_bool('dry_run', False, 'Print the commands and stop.', **kw)
  flags.DEFINE_bool('report_only', False, 'Only write the tables.', **kw)
  config_flags.DEFINE_config_file(
      'config', str(REPO / 'configs' / 'default.py'), 'Give only '
      '--config.FIELD=VALUE overrides, for every run.', **kw)


def requested_overrides() -> dict:
  """The --config.* overrides given, typed, with --num_epochs among them."""
  overrides = dict(config_flags.get_override_values(FLAGS['config']))
  if FLAGS['config'].present:
    raise ValueError('--config: each run uses configs/resnet<depth>.py')
  if {'seed', 'num_runs', 'model.depth'} & overrides.keys():
    raise ValueError('--config.seed, --config.num_runs, --config.model.depth: '
                     'set by --first_seed, --num_seeds, --depths')
  if FLAGS.num_epochs is not None:
    if 'num_epochs' in overrides or FLAGS.num_epochs <= 0:
      raise ValueError('--num_epochs: give a positive number, or only '
                       '--config.num_epochs')
    overrides['num_epochs'] = FLAGS.num_epochs
  return overrides


def workdir(root: str, depth, seeds: range) -> str:
  return f'{root.rstrip("/")}/resnet{depth}-seeds{seeds[0]}-{seeds[-1]}'


def build_command(depth, seeds: range, root: str,
                  overrides: dict) -> list[str]:
  """The depth's trainer command, for all seeds, with this Python.

  A --config.FIELD flag reads a non-string value back from its repr().
  """
  overrides = {'seed': seeds[0], 'num_runs': len(seeds), **overrides}
  return [sys.executable, '-m', 'resnet_jax.main',
          f'--config=configs/resnet{depth}.py',
          f'--workdir={workdir(root, depth, seeds)}',
          *(f'--config.{k}={v if isinstance(v, str) else repr(v)}'
            for k, v in overrides.items())]


def job_config(depth: int, seeds: range, overrides: dict) -> dict:
  """The config.json that the trainer writes for this depth's job."""
  config = importlib.import_module(f'configs.resnet{depth}').get_config()
  config.update_from_flattened_dict(
      {**overrides, 'seed': seeds[0], 'num_runs': len(seeds)})
  return json.loads(config.to_json_best_effort())


def _checked_summary(path: epath.Path) -> dict:
  """summary.json at `path` with what the tables read from it; a ValueError
  naming the file otherwise."""
  summary = workdir_lib.read_json(path, workdir_lib.SUMMARY_FIELDS + (
      'runs', 'wall_seconds'))
  metrics = [k for k in ('final_val_accuracy', 'test_accuracy')
             if k in summary]
  runs = summary['runs']
  if not (metrics and isinstance(runs, list) and runs and all(
      isinstance(r, dict) and all(k in r for k in ('seed', *metrics))
      for r in runs)):
    raise ValueError(f'{path} lacks the accuracy of each run (runs: seed, '
                     f'{", ".join(metrics) or "final_val_accuracy"}): not as '
                     'the trainer writes it')
  number = lambda v: isinstance(v, (int, float)) and not isinstance(v, bool)
  if not all(number(summary[k]) for k in (
      'steps', 'epochs', 'batch_size', 'train_examples', 'wall_seconds')):
    raise ValueError(f'{path}: steps, epochs, batch_size, train_examples or '
                     'wall_seconds is not a number')
  return summary


def done_summary(root: str, depth: int, seeds: range, overrides: dict):
  """The depth's summary.json if it is done with this recipe, else None; a
  ValueError naming the file if its config.json or summary.json is not
  the trainer's.

  The recipe: what decides the runs' results, not the fields a run may
  resume under (speed, logging, where the data is), nor vectorize_runs
  (float32 rounding, tests/test_runs.py). Runs done with other values are
  done.
  """
  path = epath.Path(workdir(root, depth, seeds))  # Also gs://.
  summary, config = path / workdir_lib.SUMMARY_FILE, path / 'config.json'
  if not (summary.exists() and config.exists()):
    return None  # Not started, or training.
  recipe = lambda c: {k: v for k, v in utils.flatten(c).items()
                      if not experiment.resumable(k) and k != 'vectorize_runs'}
  if recipe(workdir_lib.read_json(config)) == recipe(
      job_config(depth, seeds, overrides)):
    return _checked_summary(summary)
  return None


def _done_or_why(root: str, depth: int, seeds: range, overrides: dict):
  """(`done_summary`, None), or (None, the line that says why it failed)."""
  try:
    return done_summary(root, depth, seeds, overrides), None
  except ValueError as e:
    return None, utils.one_line(e)


def finished(root: str, depth: int, overrides: dict) -> list[dict]:
  """Summaries of the depth's workdirs in root done with this recipe.

  Any seeds: the runs of several sweeps (say one seed per machine) make
  one row of the table.
  """
  found = []
  for path in sorted(epath.Path(root).glob(f'resnet{depth}-seeds*')):
    if match := re.fullmatch(rf'resnet{depth}-seeds(\d+)-(\d+)', path.name):
      summary, why = _done_or_why(root, depth, range(
          int(match[1]), int(match[2]) + 1), overrides)
      if why:
        print(f'{path.name}: left out of the table: {why}', file=sys.stderr)
      found.append(summary)
  return [s for s in found if s]


def mean_std(values: list[float]) -> str:
  """Mean ± sample standard deviation (n - 1); the mean of one value."""
  text = f'{statistics.mean(values):.2f}' if values else '—'
  return text + (f' ± {statistics.stdev(values):.2f}' if values[1:] else '')


def _distinct(values) -> str:
  """The values, once each; flagged when the runs disagree."""
  seen = list(dict.fromkeys(values)) or ['—']
  return ' / '.join(seen) + (' (differs between runs)' if seen[1:] else '')


def write_tables(found: dict, seeds: range, root: str,
                 overrides: dict) -> str:
  """<root>/table6.md and table6.csv of {depth: summaries (`finished`)},
  headed with what was run and how it differs from the paper's runs."""
  done = [s for summaries in found.values() for s in summaries]
  metric = ('test' if all('test_accuracy' in s for s in done)
            else 'validation')
  key = 'test_accuracy' if metric == 'test' else 'final_val_accuracy'
  short = _distinct(f'{s["steps"]:,} steps ({s["epochs"]:g} epochs) at batch '
                    f'{s["batch_size"]}' for s in done
                    if s['steps'] * s['batch_size'] < PAPER_EXAMPLES)
  notes = [
      (short != '—', "**NOT the paper's 64k-iteration schedule**: " + short +
       " (the paper's: 64,000 steps at batch 128), the step schedule "
       "compressed to it: not comparable with the paper's."),
      (any(s['dataset'] != 'cifar10' for s in done), '**Not the TFDS '
       'CIFAR-10** the references were measured on: compare these runs with '
       'each other only.'),
      (metric == 'validation', '**Validation error**: not every run has a '
       'test split, so the error is that of the held-out validation split, '
       'not the test error the references report.')]
  # The trainer command as typed from the repository root, if under it.
  shown = os.path.relpath(root, REPO)
  shown = root if '://' in root or shown.startswith('..') else shown
  command = build_command('DEPTH', seeds, shown, overrides)
  rows = {
      'Trainer command': '`' + shlex.join(['python', *command[1:]]).replace(
          'DEPTH', '<depth>') + '`',
      'Data': _distinct(
          f'`{s["dataset"]}`: {s["train_examples"]:,} training, '
          f'{s.get("eval_examples", 0):,} validation and '
          f'{s.get("test_examples", 0):,} test images' for s in done),
      'Schedule': _distinct(f'{s["steps"]:,} steps = {s["epochs"]:g} epochs '
                            f'at batch {s["batch_size"]}' for s in done),
      'Devices': _distinct(
          f'{s["devices"]} {s["device_kind"]} ({s["platform"]}) in '
          f'{s["process_count"]} process(es), JAX {s["jax_version"]}'
          if 'devices' in s else 'not in summary.json' for s in done)}
  lines = ['# Table 6 of He et al. 2015 (CIFAR-10 ResNets), reproduced', '',
           *(f'{text}\n' for note, text in notes if note), '| | |',
           '| --- | --- |', *(f'| {k} | {v} |' for k, v in rows.items()), '',
           f'| model | runs | final {metric} error (%), mean ± sample std '
           '(n - 1) | per seed | wall minutes per run | He et al. 2015 | '
           'akamaster (PyTorch) |',
           '| --- | --- | --- | --- | --- | --- | --- |']
  csv_rows = ['depth,metric,runs,seeds,errors_pct,mean_error_pct,'
              'std_error_pct,wall_minutes_per_run,paper_error_pct,'
              'akamaster_error_pct,shortened_schedule']
  for depth, summaries in found.items():
    errors = {}  # By seed, each once.
    for summary in summaries:
      for run in summary['runs']:
        errors.setdefault(run['seed'], 100 * (1 - run[key]))
    errors = dict(sorted(errors.items()))
    values = list(errors.values())
    # The runs of one program share its wall time (every session of it).
    minutes = [s.get('total_wall_seconds', s['wall_seconds']) /
               s.get('num_runs', 1) / 60 for s in summaries]
    paper, ref = (f'{t[depth]:.2f}' if depth in t else ''
                  for t in (PAPER, AKAMASTER))
    lines.append(' | '.join([
        f'| ResNet-{depth}', str(len(values)), mean_std(values),
        ', '.join(f'{e:.2f} (seed {seed})' for seed, e in errors.items())
        or '—', ' / '.join(f'{m:.1f}' for m in minutes) or '—',
        (paper or '—') + ' (best of 5; 6.61 ± 0.16)' * (depth == 110),
        f'{ref or "—"} |']))
    csv_rows.append(','.join(map(str, [
        depth, metric, len(values), ';'.join(map(str, errors)),
        ';'.join(f'{e:.4f}' for e in values),
        f'{statistics.mean(values):.4f}' if values else '',
        f'{statistics.stdev(values):.4f}' if values[1:] else '',
        ';'.join(f'{m:.2f}' for m in minutes), paper, ref, short != '—'])))
  markdown = '\n'.join(lines + [
      '', 'Runs trained together in one program share its wall time (every '
      'session of it, from summary.json). References: test error (%) of He '
      'et al. 2015, Table 6, and of github.com/akamaster/'
      'pytorch_resnet_cifar10 (README).', ''])
  epath.Path(root).mkdir(parents=True, exist_ok=True)
  (epath.Path(root) / 'table6.csv').write_text('\n'.join(csv_rows) + '\n')
  (epath.Path(root) / 'table6.md').write_text(markdown)
  return markdown


class Trainer:
  """Trains the jobs one at a time; SIGTERM or SIGINT (Ctrl-C) is passed on
  to the running one, which saves its checkpoint before the sweep exits."""
  process = None
  terminated = False  # After a signal no other trainer starts.
  signum = signal.SIGTERM  # The signal that stopped the sweep.

  def __call__(self, signum, frame):  # The SIGTERM and SIGINT handler.
    self.terminated, self.signum = True, signum
    if self.process is not None and self.process.poll() is None:
      self.process.send_signal(signum)

  def train(self, command: list[str], log_path: str) -> int:
    """Trains one job, its output appended to `log_path`; its exit status."""
    with open(log_path, 'a') as log:
      log.write(f'\n=== {shlex.join(command)}\n')
      log.flush()
      # Its own session: a terminal's Ctrl-C reaches the sweep alone, which
      # passes it on once (a second signal would stop the trainer unsaved).
      self.process = subprocess.Popen(command, cwd=REPO, stdout=log,
                                      stderr=subprocess.STDOUT,
                                      start_new_session=True)
      if self.terminated:  # SIGTERM came before the process existed.
        self.process.terminate()
      try:
        return self.process.wait()
      finally:
        self.process = None


def sweep(depths, seeds: range, root: str, log_dir: str, overrides: dict,
          trainer: Trainer) -> list[str]:
  """Trains each depth's job not done, all seeds at once; a line per failure."""
  os.makedirs(log_dir, exist_ok=True)
  failures = []
  for depth in depths:
    name = os.path.basename(workdir(root, depth, seeds))
    if trainer.terminated:
      continue
    done, why = _done_or_why(root, depth, seeds, overrides)
    if why:  # Its records are not the trainer's: nothing is run on them.
      failures.append(f'{name}: {why}')
      print(failures[-1], flush=True)
    if done or why:
      continue
    log = os.path.join(log_dir, f'{name}.log')
    print(f'{workdir(root, depth, seeds)}: training, log {log}', flush=True)
    start = os.path.getsize(log) if os.path.exists(log) else 0
    code = trainer.train(build_command(depth, seeds, root, overrides), log)
    done, unreadable = _done_or_why(root, depth, seeds, overrides)
    if code == 0 and done:
      continue
    with open(log, 'rb') as f:  # This attempt's lines.
      f.seek(start)
      lines = f.read().decode(errors='replace').splitlines()
    stopped = {143: 'stopped by SIGTERM', 130: 'stopped by Ctrl-C'}
    why = stopped.get(code) or (code == 0 and unreadable) or ([  # Its last
        l for l in lines if l.startswith('error: ')] or lines or [''])[-1]
    failures.append(f'{name}: exit {code}: {why}; {log}')
    print(failures[-1], flush=True)
  return failures


def main(argv) -> int:
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  for depth in FLAGS.depths:
    if not (depth.isdigit() and
            (REPO / 'configs' / f'resnet{depth}.py').is_file()):
      raise ValueError(f'--depths: there is no configs/resnet{depth}.py')
  depths = [int(d) for d in FLAGS.depths]
  if len(set(depths)) < len(depths):
    raise ValueError('--depths: give each value once')
  if FLAGS.first_seed < 0 or FLAGS.num_seeds < 1:
    raise ValueError('--first_seed, --num_seeds: give a seed >= 0 and at '
                     'least one seed')
  seeds = range(FLAGS.first_seed, FLAGS.first_seed + FLAGS.num_seeds)
  overrides = requested_overrides()
  # The trainer runs from the repository root.
  root = FLAGS.root if '://' in FLAGS.root else os.path.abspath(FLAGS.root)
  if FLAGS.dry_run:
    print('\n'.join(shlex.join(build_command(d, seeds, root, overrides))
                    for d in depths))
    return 0
  trainer, failures = Trainer(), []
  if not FLAGS.report_only:
    if not FLAGS.log_dir and '://' in root:
      raise ValueError('--root is not local: give a local --log_dir')
    signal.signal(signal.SIGTERM, trainer)
    signal.signal(signal.SIGINT, trainer)
    # absl's own --log_dir when run as a program: expanded here.
    failures = sweep(depths, seeds, root,
                     utils.expand_path(FLAGS.log_dir) or f'{root}/logs',
                     overrides, trainer)
  print(write_tables({d: finished(root, d, overrides) for d in depths},
                     seeds, root, overrides))
  if trainer.terminated:
    name = 'SIGTERM' if trainer.signum == signal.SIGTERM else 'Ctrl-C'
    print(f'error: stopped by {name}; rerun the same command to go on',
          file=sys.stderr)
    return 128 + trainer.signum
  not_done = failures or [
      why or f'{workdir(root, d, seeds)}: no summary.json of this config'
      for d in depths for done, why in [_done_or_why(root, d, seeds, overrides)]
      if not done]
  if not_done:
    cli.fail(f'{len(not_done)} of {len(depths)} depths not done: '
             + ' | '.join(not_done))
  return 0


if __name__ == '__main__':
  try:
    define_flags()  # Parses the config's overrides.
  except (AttributeError, KeyError) as e:  # An override of no config field.
    cli.fail(cli.config_error(e))
  cli.start(main)
