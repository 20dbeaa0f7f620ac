"""Table 6 of He et al. 2015 (CIFAR-10 ResNets) over several seeds.

  python -m experiments.reproduce_table6 --root=runs/table6
  python -m experiments.reproduce_table6 --depths=20,32 --seeds=0,1 \
      --num_epochs=2 --root=/tmp/table6 --config.data.name=image_folder \
      --config.data.data_dir=/tmp/cifar10-jpeg75 --config.data.test_split=

Each (depth, seed) trains as its own process,

  python -m resnet_jax.main --config=configs/resnet<depth>.py \
      --workdir=<root>/resnet<depth>-seed<seed> --config.seed=<seed> \
      [--config.num_epochs=N] [the --config.* overrides given here]

so that a crash or a preemption loses one run's last minutes, not the sweep:
rerunning the sweep skips every run whose summary.json exists and reruns the
others, which the trainer resumes from their checkpoints. A finished run made
with other settings (another seed, epoch count or override) is refused rather
than mixed into the table. Runs go seed by seed (every depth once, then every
depth again), so an interrupted sweep has all rows before it has error bars.
The trainer runs from the repository root: relative paths in overrides are
relative to it. --dry_run prints the commands; --report_only trains nothing
and writes the tables of the runs that exist.

The table (<out_dir>/table6.md, table6.csv per depth, table6_runs.csv per
run) gives per depth the mean and sample standard deviation over seeds of the
final test error, or of the final validation error when the runs have no test
split (it says which), next to the paper's figures and akamaster's PyTorch
reproduction. Its header describes what was run, read from each run's
config.json and summary.json (dataset, data_dir, splits, steps, epochs), from
the trainer's log (devices) and from what this script recorded when it
started the run (machine, JAX backend, wall time); a schedule shorter than
the paper's 64k iterations at batch 128 is marked as such.

Each run's output goes to <log_dir>/<run>.log (appended by every attempt) and
<log_dir>/<run>.attempts.json records each attempt: command, start, wall
time, exit status, machine.

Exit status: 0 when every run finished; 1 with one line `error: ...` when a
run failed or a finished one does not match the request (the table still
holds the others); 143 when SIGTERM stopped the sweep (forwarded to the
running trainer, which saves a checkpoint first; rerun to go on); 2 for bad
arguments.
"""

import argparse
import ast
import csv
import dataclasses
import datetime
import functools
import io
import json
import math
import os
import pathlib
import platform
import re
import shlex
import signal
import statistics
import subprocess
import sys
import time

REPO = pathlib.Path(__file__).resolve().parents[1]

# Test error (%) of He et al. 2015, Table 6. ResNet-110's 6.43 is the best of
# 5 runs; the paper gives their mean +- std as 6.61 +- 0.16.
PAPER_ERROR = {20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}
# Test error (%) of github.com/akamaster/pytorch_resnet_cifar10 (its README).
AKAMASTER_ERROR = {20: 8.27, 32: 7.37, 44: 6.90, 56: 6.61, 110: 6.32}
# The paper's schedule: 64k iterations at batch 128.
PAPER_STEPS = 64_000
PAPER_BATCH_SIZE = 128

DEFAULT_DEPTHS = (20, 32, 44, 56, 110)
DEFAULT_SEEDS = (0, 1, 2, 3, 4)
# Set per run by the sweep; an override would make every seed the same run.
RESERVED_OVERRIDES = ('--config.seed', '--config.model.depth')

# The trainer's start-up line names its devices (train.py).
_DEVICES_LINE = re.compile(r'on (\d+) device\(s\), (\w+)')
_PROBE = ('import json, jax; d = jax.devices(); print(json.dumps({'
          '"platform": d[0].platform, "device_kind": d[0].device_kind, '
          '"jax": jax.__version__}))')


def run_name(depth: int, seed: int) -> str:
  return f'resnet{depth}-seed{seed}'


def run_workdir(root: str, depth: int, seed: int) -> str:
  return f'{root.rstrip("/")}/{run_name(depth, seed)}'


def build_command(depth: int, seed: int, root: str,
                  num_epochs: float | None = None, overrides=(),
                  python: str = sys.executable) -> list[str]:
  """The trainer's command line for one run; it runs from the repo root."""
  command = [python, '-m', 'resnet_jax.main',
             f'--config=configs/resnet{depth}.py',
             f'--workdir={run_workdir(root, depth, seed)}',
             f'--config.seed={seed}']
  if num_epochs is not None:
    command.append(f'--config.num_epochs={_number_text(num_epochs)}')
  return command + list(overrides)


def _number_text(value: float) -> str:
  return str(int(value)) if float(value).is_integer() else str(value)


# --- Reading runs -------------------------------------------------------------


@dataclasses.dataclass
class Run:
  """One (depth, seed) of the sweep and what is known about it."""
  depth: int
  seed: int
  workdir: str
  summary: dict | None = None  # summary.json, once finished.
  config: dict | None = None  # config.json.
  attempts: list = dataclasses.field(default_factory=list)
  devices: str | None = None  # E.g. '2 device(s), pmap', from the log.
  status: str = 'missing'  # finished | skipped | failed | missing
  error: str | None = None

  @property
  def name(self) -> str:
    return run_name(self.depth, self.seed)

  @property
  def done(self) -> bool:
    return self.status in ('finished', 'skipped')


def _read_json(path) -> dict | None:
  path = _path(path)
  if not path.exists():
    return None
  return json.loads(path.read_text())


def _path(path):
  if '://' in str(path):  # gs://...: etils reads object stores.
    from etils import epath  # pylint: disable=g-import-not-at-top
    return epath.Path(path)
  return pathlib.Path(path)


def _dotted(config: dict, field: str):
  value = config
  for key in field.split('.'):
    if not isinstance(value, dict) or key not in value:
      raise KeyError(field)
    value = value[key]
  return value


def _same_value(recorded, text: str) -> bool:
  """Whether a config.json value is what `--config.x=text` would set."""
  try:
    wanted = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    wanted = text
  if isinstance(recorded, bool) or isinstance(wanted, bool):
    return str(recorded).lower() == str(wanted).lower()
  if isinstance(recorded, (int, float)) and isinstance(wanted, (int, float)):
    return math.isclose(recorded, wanted, rel_tol=1e-9, abs_tol=0.0)
  if isinstance(recorded, list) and isinstance(wanted, (list, tuple)):
    return len(recorded) == len(wanted) and all(
        _same_value(r, repr(w)) for r, w in zip(recorded, wanted))
  return str(recorded) == str(wanted)


def mismatches(config: dict, depth: int, seed: int,
               num_epochs: float | None, overrides) -> list[str]:
  """How a finished run's config.json differs from what the sweep asks."""
  wanted = [('seed', str(seed)), ('model.depth', str(depth)),
            *(o[len('--config.'):].split('=', 1) for o in overrides)]
  if num_epochs is not None:
    wanted.append(('num_epochs', str(num_epochs)))
  found = []
  for field, text in wanted:
    try:
      recorded = _dotted(config, field)
    except KeyError:
      found.append(f'config.{field} is not in its config.json')
      continue
    if not _same_value(recorded, text):
      found.append(f'config.{field}={recorded!r}, not {text!r}')
  length_given = any(o.startswith(('--config.num_epochs=',
                                    '--config.num_train_steps='))
                     for o in overrides)
  if (num_epochs is None and not length_given and
      config.get('num_epochs', -1) > 0):
    found.append(f'config.num_epochs={config["num_epochs"]!r} (a shortened '
                 'run), not the full schedule')
  return found


def read_run(root: str, log_dir: str, depth: int, seed: int) -> Run:
  """A run as its workdir and log directory describe it."""
  run = Run(depth, seed, run_workdir(root, depth, seed))
  run.summary = _read_json(f'{run.workdir}/summary.json')
  run.config = _read_json(f'{run.workdir}/config.json')
  attempts = _read_json(os.path.join(log_dir, f'{run.name}.attempts.json'))
  run.attempts = attempts['attempts'] if attempts else []
  run.devices = _devices(run.summary, os.path.join(log_dir, f'{run.name}.log'))
  if run.summary is not None:
    run.status = 'skipped'
  return run


def _devices(summary: dict | None, log_path: str) -> str | None:
  """The devices a run trained on: summary.json's word, else the log's."""
  if summary and summary.get('devices'):
    text = f'{summary["devices"]} device(s)'
    if summary.get('process_count', 1) > 1:
      text += f' over {summary["process_count"]} processes'
    return text
  if not os.path.exists(log_path):
    return None
  matches = _DEVICES_LINE.findall(pathlib.Path(log_path).read_text(
      errors='replace'))
  if not matches:
    return None
  count, parallelism = matches[-1]
  return f'{count} device(s), {parallelism}'


# --- The table ----------------------------------------------------------------


def choose_metric(summaries: list[dict]) -> str:
  """'test' when every run has a test error, else 'validation'."""
  if not summaries:
    return 'test'
  if all('test_accuracy' in s for s in summaries):
    return 'test'
  if all('final_val_accuracy' in s for s in summaries):
    return 'validation'
  raise ValueError('the runs have neither a test nor a validation accuracy '
                   'in common; compare them separately')


def error_percent(summary: dict, metric: str) -> float:
  key = 'test_accuracy' if metric == 'test' else 'final_val_accuracy'
  return 100.0 * (1.0 - summary[key])


def mean_std(values: list[float]) -> tuple[float, float | None]:
  """Mean and sample standard deviation (n - 1; None for one value)."""
  return (statistics.mean(values),
          statistics.stdev(values) if len(values) > 1 else None)


def format_mean_std(values: list[float]) -> str:
  if not values:
    return '—'
  mean, std = mean_std(values)
  return f'{mean:.2f}' if std is None else f'{mean:.2f} ± {std:.2f}'


def _distinct(values) -> str:
  """The values, once each; flagged when the runs disagree."""
  seen = []
  for v in values:
    if v not in seen:
      seen.append(v)
  if not seen:
    return 'unknown'
  text = ' / '.join(seen)
  return text + ' (differs between runs)' if len(seen) > 1 else text


def _split_text(split: str, examples) -> str:
  if not split:
    return 'none'
  return f'`{split}`' + (f' ({examples:,} images)' if examples else '')


def _machine(attempt: dict) -> str:
  host = attempt.get('host', {})
  text = (f'{host.get("cpu", "unknown CPU")}, {host.get("cpus_usable", "?")} '
          f'of {host.get("cpus", "?")} CPU cores usable')
  jax_info = attempt.get('jax') or {}
  if jax_info.get('platform'):
    text += (f'; JAX {jax_info.get("jax", "?")} on {jax_info["platform"]} '
             f'({jax_info.get("device_kind", "?")})')
  return text


def _command_template(run: Run) -> str:
  """The trainer command of a run's last attempt, with depth and seed named."""
  if not run.attempts:
    return 'unknown (not started by this script)'
  command = ['python', *run.attempts[-1]['command'][1:]]
  text = shlex.join(command)
  for old, new in ((f'resnet{run.depth}-seed{run.seed}',
                    'resnet<depth>-seed<seed>'),
                   (f'configs/resnet{run.depth}.py',
                    'configs/resnet<depth>.py'),
                   (f'--config.seed={run.seed}', '--config.seed=<seed>')):
    text = text.replace(old, new)
  return f'`{text}`'


def _schedule_text(summary: dict, config: dict) -> str:
  text = (f'{summary["steps"]:,} steps = {summary["epochs"]:g} epochs at '
          f'batch {summary["batch_size"]}')
  return text + f', schedule `{_dotted(config, "schedule.name")}`'


def is_paper_schedule(summary: dict) -> bool:
  """At least as many examples seen as 64k iterations at batch 128."""
  return (summary['steps'] * summary['batch_size'] >=
          PAPER_STEPS * PAPER_BATCH_SIZE)


def _wall_seconds(run: Run) -> float | None:
  times = [a['wall_seconds'] for a in run.attempts
           if a.get('wall_seconds') is not None]
  return sum(times) if times else None


def _format_seconds(seconds: float | None) -> str:
  if seconds is None:
    return '—'
  minutes, secs = divmod(round(seconds), 60)
  return f'{minutes} min {secs:02d} s' if minutes else f'{secs} s'


def depth_rows(runs: list[Run], depths, metric: str) -> list[dict]:
  """One row per depth: errors of its finished runs, mean, std, references."""
  rows = []
  for depth in depths:
    finished = [r for r in runs if r.depth == depth and r.done]
    errors = [error_percent(r.summary, metric) for r in finished]
    mean, std = mean_std(errors) if errors else (None, None)
    rows.append({
        'depth': depth,
        'runs': len(finished),
        'runs_requested': sum(r.depth == depth for r in runs),
        'seeds': [r.seed for r in finished],
        'errors': errors,
        'mean': mean,
        'std': std,
        'paper': PAPER_ERROR.get(depth),
        'akamaster': AKAMASTER_ERROR.get(depth),
    })
  return rows


def markdown_table(runs: list[Run], depths, seeds) -> str:
  """The whole report: what was run, then the table, then every run."""
  finished = [r for r in runs if r.done]
  metric = choose_metric([r.summary for r in finished])
  lines = ['# Table 6 of He et al. 2015 (CIFAR-10 ResNets), reproduced', '']
  summaries = [r.summary for r in finished]
  configs = [r.config or {} for r in finished]
  short = [s for s in summaries if not is_paper_schedule(s)]
  if short:
    lines += [
        "**NOT the paper's 64k-iteration schedule**: "
        + _distinct(f'{s["steps"]:,} steps ({s["epochs"]:g} epochs) at batch '
                    f'{s["batch_size"]}' for s in short)
        + " (the paper's: 64,000 steps at batch 128). The step schedule is "
        'compressed to this length (decay points are fractions of training), '
        "so these errors are not comparable with the paper's.", '']
  if any(c.get('data', {}).get('name') != 'cifar10' for c in configs):
    lines += ['**Not the TFDS CIFAR-10** the references were measured on: '
              'compare these runs with each other, not with the references.',
              '']
  if metric == 'validation':
    lines += ['**Validation error**: the runs have no test split, so the '
              'error is that of the held-out validation split at the end of '
              'training, not the test error the references report.', '']

  def data_field(field):
    return _distinct(str(_dotted(c, field)) if c else 'unknown'
                     for c in configs)

  def split_texts(c, s):
    data = c['data']
    return (f'train {_split_text(data["train_split"], s.get("train_examples"))}'
            f', validation '
            f'{_split_text(data["eval_split"], s.get("eval_examples"))}'
            f', test {_split_text(data["test_split"], s.get("test_examples"))}')

  splits = _distinct(split_texts(c, s) for c, s in zip(configs, summaries)
                     if c)
  data_dirs = _distinct(_dotted(c, 'data.data_dir') or '(TFDS default)'
                        for c in configs if c)
  header = [
      ('Dataset', f'`{data_field("data.name")}`, data_dir `{data_dirs}`'),
      ('Splits', splits),
      ('Error reported', f'final {metric} error (%), at the last step; mean ± '
       'sample std (n - 1) over seeds'),
      ('Schedule', _distinct(_schedule_text(s, c)
                             for s, c in zip(summaries, configs) if c)),
      ('Seeds', f'{len(seeds)} per depth requested '
       f'({", ".join(map(str, seeds))}); {len(finished)} of {len(runs)} runs '
       'finished'),
      ('Trainer command', _distinct(_command_template(r) for r in finished)),
      ('Machine', _distinct(_machine(r.attempts[-1]) if r.attempts else
                            'unknown (not started by this script)'
                            for r in finished)),
      ('Devices', _distinct(r.devices or 'unknown' for r in finished)),
  ]
  lines += ['| | |', '| --- | --- |']
  lines += [f'| {k} | {v} |' for k, v in header]
  lines += ['', f'| model | runs | {metric} error (%) | per seed | '
            'He et al. 2015 | akamaster (PyTorch) |',
            '| --- | --- | --- | --- | --- | --- |']
  for row in depth_rows(runs, depths, metric):
    per_seed = ', '.join(f'{e:.2f} (seed {s})'
                         for s, e in zip(row['seeds'], row['errors'])) or '—'
    paper = '—' if row['paper'] is None else f'{row["paper"]:.2f}'
    if row['depth'] == 110:
      paper += ' (best of 5; 6.61 ± 0.16)'
    akamaster = '—' if row['akamaster'] is None else f'{row["akamaster"]:.2f}'
    lines.append(f'| ResNet-{row["depth"]} | {row["runs"]} of '
                 f'{row["runs_requested"]} | {format_mean_std(row["errors"])} '
                 f'| {per_seed} | {paper} | {akamaster} |')
  lines += ['', 'Runs (wall time: all attempts, as this script timed them, '
            'start-up and evaluation included; images/s: training steps '
            'only, from summary.json):', '',
            f'| run | status | {metric} error (%) | steps | train images/s '
            '| wall time | attempts | workdir |',
            '| --- | --- | --- | --- | --- | --- | --- | --- |']
  for r in runs:
    error = f'{error_percent(r.summary, metric):.2f}' if r.done else '—'
    # 'skipped' (finished before this invocation) reads as finished here.
    status = ('finished' if r.done else r.status) + (
        f': {r.error}' if r.error else '')
    steps = f'{r.summary["steps"]:,}' if r.done else '—'
    speed = ((r.summary.get('train_images_per_second') or '—') if r.done
             else '—')
    lines.append(f'| {r.name} | {status} | {error} | {steps} | {speed} | '
                 f'{_format_seconds(_wall_seconds(r))} | {len(r.attempts)} | '
                 f'`{r.workdir}` |')
  lines += ['', 'References: test error (%) of He et al. 2015, Table 6, and of '
            'github.com/akamaster/pytorch_resnet_cifar10 (README).', '']
  return '\n'.join(lines)


def depth_csv(runs: list[Run], depths) -> str:
  finished = [r for r in runs if r.done]
  metric = choose_metric([r.summary for r in finished])
  short = any(not is_paper_schedule(r.summary) for r in finished)
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(['depth', 'metric', 'runs', 'seeds', 'mean_error_pct',
                   'std_error_pct', 'errors_pct', 'paper_error_pct',
                   'akamaster_error_pct', 'shortened_schedule'])
  for row in depth_rows(runs, depths, metric):
    fmt = lambda v: '' if v is None else f'{v:.4f}'
    writer.writerow([row['depth'], metric, row['runs'],
                     ';'.join(map(str, row['seeds'])), fmt(row['mean']),
                     fmt(row['std']),
                     ';'.join(f'{e:.4f}' for e in row['errors']),
                     fmt(row['paper']), fmt(row['akamaster']), short])
  return out.getvalue()


def runs_csv(runs: list[Run]) -> str:
  finished = [r for r in runs if r.done]
  metric = choose_metric([r.summary for r in finished])
  out = io.StringIO()
  writer = csv.writer(out, lineterminator='\n')
  writer.writerow(['run', 'depth', 'seed', 'status', 'metric', 'error_pct',
                   'steps', 'epochs', 'batch_size', 'dataset', 'data_dir',
                   'train_images_per_second', 'wall_seconds', 'attempts',
                   'devices', 'workdir'])
  for r in runs:
    s, c = r.summary or {}, r.config or {}
    wall = _wall_seconds(r)
    writer.writerow([
        r.name, r.depth, r.seed, r.status, metric,
        f'{error_percent(s, metric):.4f}' if r.done else '',
        s.get('steps', ''), s.get('epochs', ''), s.get('batch_size', ''),
        c.get('data', {}).get('name', ''),
        c.get('data', {}).get('data_dir', ''),
        s.get('train_images_per_second', ''),
        '' if wall is None else round(wall, 1), len(r.attempts),
        r.devices or '', r.workdir])
  return out.getvalue()


def write_reports(runs: list[Run], depths, seeds, out_dir: str) -> str:
  """Writes table6.md, table6.csv and table6_runs.csv; returns the markdown."""
  out = _path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  markdown = markdown_table(runs, depths, seeds)
  (out / 'table6.md').write_text(markdown)
  (out / 'table6.csv').write_text(depth_csv(runs, depths))
  (out / 'table6_runs.csv').write_text(runs_csv(runs))
  return markdown


# --- Running ------------------------------------------------------------------


def describe_host() -> dict:
  """This machine, as the runs started from here see it."""
  cpu = platform.processor() or platform.machine()
  try:
    for line in pathlib.Path('/proc/cpuinfo').read_text().splitlines():
      if line.startswith('model name'):
        cpu = line.split(':', 1)[1].strip()
        break
  except OSError:
    pass
  usable = (len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity')
            else os.cpu_count())
  return {'hostname': platform.node(), 'cpu': cpu, 'cpus': os.cpu_count(),
          'cpus_usable': usable}


def probe_jax(python: str) -> dict:
  """JAX's backend as a child process sees it (a few seconds; once)."""
  try:
    result = subprocess.run([python, '-c', _PROBE], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    return json.loads(result.stdout.strip().splitlines()[-1])
  except Exception as e:  # pylint: disable=broad-except
    return {'error': ' '.join(str(e).split())[:200]}


class _Forwarder:
  """Passes SIGTERM on to the running trainer and stops the sweep after it."""

  def __init__(self):
    self.process = None
    self.terminated = False

  def __call__(self, signum, frame):
    del frame
    self.terminated = True
    if self.process is not None and self.process.poll() is None:
      self.process.send_signal(signum)


def run_training(command: list[str], log_path: str,
                 forwarder: _Forwarder | None = None) -> int:
  """Runs one trainer, its output appended to `log_path`; its exit status."""
  with open(log_path, 'a') as log:
    log.write(f'\n=== {_utc_now()} {shlex.join(command)}\n')
    log.flush()
    process = subprocess.Popen(command, cwd=REPO, stdout=log,
                               stderr=subprocess.STDOUT)
    if forwarder is not None:
      forwarder.process = process
    try:
      return process.wait()
    finally:
      if forwarder is not None:
        forwarder.process = None


def _utc_now() -> str:
  return datetime.datetime.now(datetime.timezone.utc).strftime(
      '%Y-%m-%dT%H:%M:%SZ')


def _last_line(log_path: str) -> str:
  """The trainer's last words: its `error: ...` line when it failed."""
  try:
    lines = pathlib.Path(log_path).read_text(errors='replace').splitlines()
  except OSError:
    return ''
  errors = [l for l in lines if l.startswith('error: ')]
  text = errors[-1] if errors else (lines[-1] if lines else '')
  return ' '.join(text.split())[:300]


def sweep(depths, seeds, root: str, log_dir: str, num_epochs=None,
          overrides=(), python: str = sys.executable, run_fn=run_training,
          forwarder: _Forwarder | None = None,
          say=functools.partial(print, flush=True)) -> list[Run]:
  """Runs every (depth, seed) that has not finished; returns them all."""
  os.makedirs(log_dir, exist_ok=True)
  order = [(d, s) for s in seeds for d in depths]
  runs = {}
  host = jax_info = None
  for index, (depth, seed) in enumerate(order, 1):
    run = read_run(root, log_dir, depth, seed)
    runs[depth, seed] = run
    prefix = f'[{index}/{len(order)}] {run.name}'
    if run.summary is not None:
      problems = mismatches(run.config or {}, depth, seed, num_epochs,
                            overrides)
      if problems:
        run.status = 'failed'
        run.error = (f'{run.workdir} holds a finished run with other '
                     f'settings ({"; ".join(problems)}); use another --root')
        say(f'{prefix}: {run.error}')
      else:
        say(f'{prefix}: finished earlier, skipped')
      continue
    if forwarder is not None and forwarder.terminated:
      continue
    if host is None:
      host, jax_info = describe_host(), probe_jax(python)
    command = build_command(depth, seed, root, num_epochs, overrides, python)
    log_path = os.path.join(log_dir, f'{run.name}.log')
    say(f'{prefix}: training ({shlex.join(command[1:])}); log {log_path}')
    started, start = _utc_now(), time.monotonic()
    returncode = run_fn(command, log_path, forwarder)
    attempt = {'command': command, 'started_utc': started,
               'wall_seconds': round(time.monotonic() - start, 1),
               'returncode': returncode, 'host': host, 'jax': jax_info}
    attempts_path = os.path.join(log_dir, f'{run.name}.attempts.json')
    previous = _read_json(attempts_path) or {'attempts': []}
    previous['attempts'].append(attempt)
    pathlib.Path(attempts_path).write_text(json.dumps(previous, indent=2))
    run = read_run(root, log_dir, depth, seed)
    runs[depth, seed] = run
    if returncode == 0 and run.summary is not None:
      run.status = 'finished'
      say(f'{prefix}: finished in {_format_seconds(attempt["wall_seconds"])}')
    else:
      run.status = 'failed'
      why = ('stopped by SIGTERM after saving a checkpoint; rerun to resume'
             if returncode == 143 else _last_line(log_path))
      run.error = f'exit {returncode}: {why}; log {log_path}'
      say(f'{prefix}: failed ({run.error})')
  return [runs[d, s] for d in depths for s in seeds]


# --- Command line -------------------------------------------------------------


def _int_list(text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(',') if v.strip()]
  except ValueError:
    raise argparse.ArgumentTypeError(
        f'{text!r} is not a comma-separated list of integers') from None
  if not values or len(set(values)) != len(values):
    raise argparse.ArgumentTypeError(f'{text!r}: give distinct integers')
  return values


class _Parser(argparse.ArgumentParser):
  """Bad arguments end in one line, as the trainer's do."""

  def error(self, message):
    print(f'error: {message}', file=sys.stderr)
    sys.exit(2)


def parse_args(argv: list[str]):
  """(options, the --config.* overrides to pass through)."""
  parser = _Parser(
      prog='python -m experiments.reproduce_table6', allow_abbrev=False,
      description=__doc__.split('\n\n')[0],
      epilog='Any --config.FIELD=VALUE is passed to every run.')
  parser.add_argument('--depths', type=_int_list, default=list(DEFAULT_DEPTHS),
                      help='comma-separated; configs/resnet<depth>.py each')
  parser.add_argument('--seeds', type=_int_list, default=list(DEFAULT_SEEDS))
  parser.add_argument('--num_epochs', type=float, default=None,
                      help='train this many epochs (--config.num_epochs) '
                      "instead of the paper's 64k steps")
  parser.add_argument('--root', default='runs/table6',
                      help='one workdir per run under it')
  parser.add_argument('--out_dir', default=None,
                      help='where the tables go (default: --root)')
  parser.add_argument('--log_dir', default=None,
                      help='local directory for logs (default: <root>/logs)')
  parser.add_argument('--python', default=sys.executable,
                      help='the Python that runs the trainer')
  parser.add_argument('--dry_run', action='store_true',
                      help='print the commands it would run and stop')
  parser.add_argument('--report_only', action='store_true',
                      help='train nothing; write the tables of what exists')
  overrides = [a for a in argv if a.startswith('--config.')]
  args = parser.parse_args([a for a in argv if not a.startswith('--config.')])
  for override in overrides:
    if '=' not in override:
      parser.error(f'{override}: write overrides as --config.FIELD=VALUE')
    if override.split('=', 1)[0] in RESERVED_OVERRIDES:
      parser.error(f'{override}: the sweep sets this field per run (use '
                   '--seeds, --depths)')
    if override.startswith('--config.num_epochs=') and args.num_epochs:
      parser.error('give --num_epochs or --config.num_epochs, not both')
  for depth in args.depths:
    if not (REPO / 'configs' / f'resnet{depth}.py').is_file():
      parser.error(f'--depths: there is no configs/resnet{depth}.py')
  if args.num_epochs is not None and args.num_epochs <= 0:
    parser.error('--num_epochs must be positive')
  if '://' not in args.root:
    args.root = os.path.abspath(args.root)  # The trainer runs from REPO.
  if args.log_dir is None:
    if '://' in args.root:
      parser.error('--root is not local: give a local --log_dir')
    args.log_dir = os.path.join(args.root, 'logs')
  args.out_dir = args.out_dir or args.root
  return args, overrides


def main(argv: list[str]) -> int:
  args, overrides = parse_args(argv)
  if args.dry_run:
    for seed in args.seeds:
      for depth in args.depths:
        print(shlex.join(build_command(depth, seed, args.root, args.num_epochs,
                                       overrides, args.python)))
    return 0
  forwarder = _Forwarder()
  signal.signal(signal.SIGTERM, forwarder)
  if args.report_only:
    runs = [read_run(args.root, args.log_dir, d, s)
            for d in args.depths for s in args.seeds]
  else:
    runs = sweep(args.depths, args.seeds, args.root, args.log_dir,
                 args.num_epochs, overrides, args.python, forwarder=forwarder)
  try:
    markdown = write_reports(runs, args.depths, args.seeds, args.out_dir)
  except ValueError as e:
    print(f'error: {e}', file=sys.stderr)
    return 1
  print(markdown)
  print(f'Tables: {args.out_dir}/table6.md, table6.csv, table6_runs.csv')
  if forwarder.terminated:
    print('error: stopped by SIGTERM; rerun the same command to go on',
          file=sys.stderr)
    return 128 + signal.SIGTERM
  failed = [r for r in runs if r.status == 'failed']
  if failed:
    print(f'error: {len(failed)} of {len(runs)} runs failed: '
          + ' | '.join(f'{r.name}: {r.error}' for r in failed),
          file=sys.stderr)
    return 1
  missing = [r.name for r in runs if not r.done]
  if args.report_only and missing:
    print(f'error: {len(missing)} of {len(runs)} runs have no summary.json: '
          f'{", ".join(missing)}', file=sys.stderr)
    return 1
  return 0


if __name__ == '__main__':
  sys.exit(main(sys.argv[1:]))
