"""The workdir: checked before use, held by one trainer at a time;
its summary.json, the one home of that file's keys (`summarize` writes every
one, `read_summary` and `final_validation` read them back).

The trainer writes only into a new or empty directory or into its own
workdir (`check_owned`), as git will not overwrite files it does not track.

The trainer holds an exclusive `flock` on the workdir while it runs: the
kernel releases it however the process ends (kill -9 included), and taking it
writes nothing. The holder's pid, host and start time go in HOLDER_FILE so a
refused trainer can name it. Object stores (gs://) cannot be locked.
"""

import fcntl
import json
import os
import socket
import time

from etils import epath
import jax
import numpy as np

from resnet_jax import utils
from resnet_jax.data import datasets
from resnet_jax.run import runs

# Written by the trainer into its workdir before anything else, every
# session (since round two of the reliability work): it marks the directory
# as a run of this trainer (`check_owned`), and names the lock's holder.
HOLDER_FILE = '.trainer'
SUMMARY_FILE = 'summary.json'  # `summarize`'s, once a run is done.
# The record that makes a folder a release. Named here, where the trainer
# refuses to write into a release; read/release_format.py, which writes and
# reads it, takes the name from here (run/ never imports read/).
RELEASE_FILE = 'release.json'
# The files the trainer writes into the workdir besides its folders.
WRITTEN_FILES = ('config.json', SUMMARY_FILE, HOLDER_FILE)
# Fields that every version of the trainer wrote into config.json and
# summary.json: how a run older than HOLDER_FILE is recognised.
_CONFIG_FIELDS = ('seed', 'model', 'optimizer', 'schedule', 'batch_size')
SUMMARY_FIELDS = ('config', 'dataset', 'steps', 'epochs', 'batch_size',
                  'train_examples')


class WorkdirBusyError(ValueError):
  """Another trainer is running in the workdir."""


def check(workdir: str, data=None) -> None:
  """Fails if `workdir` could not be written; creates nothing.

  With `data` (config.data), also if the workdir lies inside its image
  folder: its files would be read as a split or class on the next run.
  """
  if not workdir.strip():
    raise ValueError('--workdir is empty; name a directory for the run')
  if '://' in workdir:
    return  # An object store: Orbax and the event writer write there.
  data_dir = data and data.get('name') == datasets.IMAGE_FOLDER and data.get(
      'data_dir')
  if data_dir and '://' not in data_dir:
    root = os.path.realpath(utils.expand_path(data_dir))
    if os.path.commonpath([root, os.path.realpath(workdir)]) == root:
      raise ValueError(
          f'--workdir={workdir} is inside the image folder {root} '
          '(config.data.data_dir): its files would be read as a split or '
          'class of it when the run resumes; put the run outside it')
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir={workdir} exists and is not a directory')
  for name in WRITTEN_FILES:
    path = os.path.join(workdir, name)
    if os.path.lexists(path) and not os.path.isfile(path):
      raise ValueError(f'--workdir={workdir} holds a {name} that is not a '
                       'file, where the run writes its own; move it away')
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f'--workdir={workdir} cannot be created: {existing} is '
                     'not a directory')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f'--workdir={workdir} is not writable ({existing} is '
                     'read-only to this user)')
  check_owned(workdir)


def read_json(path, fields=()) -> dict:
  """The JSON object in the file `path` (a path or URL), with each of
  `fields` in it; else a ValueError that names the file, in one line."""
  path = epath.Path(path)
  try:
    value = json.loads(path.read_text())
  except FileNotFoundError:
    raise ValueError(f'{path} is missing') from None
  except OSError as e:
    raise ValueError(f'cannot read {path}: {e.strerror or e}') from None
  except ValueError as e:  # Not JSON, not UTF-8.
    raise ValueError(f'{path} is not valid JSON ({e})') from None
  if not isinstance(value, dict):
    raise ValueError(f'{path} holds {type(value).__name__}, not a JSON '
                     'object')
  if missing := [field for field in fields if field not in value]:
    raise ValueError(f'{path} lacks {", ".join(missing)}: not as the '
                     'trainer writes it')
  return value


def _json_with(path: str, fields) -> bool:
  """Whether `path` is a file of a JSON object holding every one of `fields`."""
  try:
    read_json(path, fields)
  except ValueError:
    return False
  return True


def is_own_workdir(workdir: str) -> bool:
  """Whether the local directory `workdir` is a workdir this trainer wrote.

  Marked by HOLDER_FILE; a workdir older than the mark, or a record kept without
  it (experiments/table6/), by a trainer's config.json with a trainer's
  summary.json or checkpoints/ beside it. A release (release.json) carries a
  trainer's config.json but is not a workdir.
  """
  if os.path.isfile(os.path.join(workdir, HOLDER_FILE)):
    return True
  join = lambda name: os.path.join(workdir, name)
  return (not os.path.lexists(join(RELEASE_FILE)) and
          _json_with(join('config.json'), _CONFIG_FIELDS) and
          (_json_with(join(SUMMARY_FILE), SUMMARY_FIELDS) or
           os.path.isdir(join('checkpoints'))))


def check_owned(workdir: str) -> None:
  """Fails unless the trainer may write into `workdir`: a new or empty
  directory, or its own workdir (`is_own_workdir`). As git refuses to overwrite
  untracked files, nothing of anyone else is replaced: a release, a user's
  config.json or summary.json, any other directory with something in it."""
  if '://' in workdir or not os.path.isdir(workdir):
    return  # An object store, or nothing there yet (`check` says more).
  entries = sorted(os.listdir(workdir))
  if entries and not is_own_workdir(workdir):
    shown = ', '.join(entries[:5]) + (', ...' if entries[5:] else '')
    what = ('a release, not a workdir' if RELEASE_FILE in entries
            else 'not a workdir of this trainer')
    raise ValueError(
        f'--workdir={workdir} is {what} (it holds {shown}): the trainer '
        'writes only into a new or empty directory or into its own workdir; '
        'give another --workdir')


def write_file(path, data: bytes | str) -> None:
  """Writes `data` to a temporary file renamed to `path`: never half a file.

  On failure (a full disk, `path` a folder) the old file stays, and a
  ValueError says what failed in one line.
  """
  path = epath.Path(path)
  partial = path.parent / f'{path.name}.partial'
  try:
    if isinstance(data, str):
      partial.write_text(data)
    else:
      partial.write_bytes(data)
    partial.replace(path)
  except OSError as e:
    try:
      partial.unlink()
    except OSError:
      pass
    raise ValueError(f'cannot write {path}: {e.strerror or e}') from None


def write_json(path, value) -> None:
  """Writes `value` as JSON whole (`write_file`): never half a file."""
  write_file(path, json.dumps(value, indent=2))


def summarize(exp, config_name: str, splits, results: dict, loop,
              start_step: int, clock) -> dict:
  """summary.json, written when a run is done: what ran, on what, and how
  well (`loop`: train.LoopState, `clock`: monitoring.Stopwatch)."""
  config = exp.config
  train_ds, eval_ds, test_ds = splits
  devices = exp.dp.devices
  summary = {
      'config': config_name,
      'dataset': config.data.name,
      'steps': exp.total_steps,
      'epochs': exp.total_steps / exp.steps_per_epoch,
      'batch_size': config.batch_size,
      'train_examples': train_ds.num_examples,
  }
  per_run = [{'seed': seed} for seed in runs.seeds(config)]
  # Each figure per run; the summary's own is the runs' mean, with their
  # sample standard deviation beside it when there are several.
  figures = []
  if eval_ds:
    summary['eval_examples'] = eval_ds.num_examples
    figures += [('final_val_accuracy', 'val', 'accuracy'),
                ('final_val_loss', 'val', 'loss')]
  if test_ds:
    summary['test_examples'] = test_ds.num_examples
    figures += [('test_accuracy', 'test', 'accuracy'),
                ('test_loss', 'test', 'loss')]
  for name, split, metric in figures:
    values = [run[metric] for run in results[split]]
    for run, value in zip(per_run, values):
      run[name] = value
    summary[name] = float(np.mean(values))
    if len(values) > 1:
      summary[f'{name}_std'] = float(np.std(values, ddof=1))
  if eval_ds and loop.best_step is not None:
    summary |= {'best_val_accuracy': loop.best_accuracy,
                'best_val_step': loop.best_step}
  # All runs together; training alone: compilation, evaluation and saving
  # excluded.
  images_per_second = clock.images_per_second(
      exp.total_steps, config.batch_size * exp.num_runs)
  return summary | {
      'num_runs': exp.num_runs,
      'runs': per_run,
      'steps_per_call': config.steps_per_call,
      'steps_this_run': exp.total_steps - start_step,
      'wall_seconds': round(clock.wall_seconds, 2),
      'total_wall_seconds': round(clock.total_wall_seconds, 2),
      'train_images_per_second': images_per_second and round(
          images_per_second, 1),
      'devices': len(devices),
      'process_count': jax.process_count(),
      'platform': devices[0].platform,
      'device_kind': devices[0].device_kind,
      'jax_version': jax.__version__,
  }


def write_summary(workdir, summary: dict) -> None:
  """Writes `summary` (`summarize`'s) as the workdir's summary.json."""
  write_json(epath.Path(workdir) / SUMMARY_FILE, summary)


def read_summary(workdir) -> dict:
  """The workdir's summary.json (gs:// too); {} while the run trains or if
  it is not one."""
  try:
    return read_json(os.path.join(workdir, SUMMARY_FILE))
  except ValueError:
    return {}


def final_validation(workdir, run: int, step: int) -> dict | None:
  """Run `run`'s final validation figures {'accuracy', 'loss', 'examples'}
  in summary.json; None without them, or if they are not of `step`."""
  summary = read_summary(workdir)
  figures = summary['runs'][run] if summary.get('steps') == step else {}
  return ({'accuracy': figures['final_val_accuracy'],
           'loss': figures['final_val_loss'],
           'examples': summary['eval_examples']}
          if 'final_val_accuracy' in figures else None)


class Lock:
  """An exclusive hold on a local workdir, for the life of this process."""

  def __init__(self, workdir: str):
    self._workdir = workdir
    self._fd = None

  def acquire(self) -> None:
    """Takes the workdir if it exists and is not yet held; writes nothing.
    Raises WorkdirBusyError if another live process holds it."""
    if self._fd is not None or '://' in self._workdir or not os.path.isdir(
        self._workdir):
      return
    fd = os.open(self._workdir, os.O_RDONLY)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise WorkdirBusyError(
          f'--workdir={self._workdir} is in use by another trainer '
          f'({self._holder()}); wait for it to end, or use another '
          '--workdir') from None
    self._fd = fd

  def _holder(self) -> str:
    try:
      with open(os.path.join(self._workdir, HOLDER_FILE)) as f:
        holder = json.load(f)
      return (f'pid {holder["pid"]} on {holder["host"]}, started '
              f'{holder["started"]}')
    except (OSError, ValueError, KeyError, TypeError):
      return 'it has not said who it is yet'

  def announce(self) -> None:
    """Records this process as the holder (call once the workdir exists)."""
    self.acquire()
    if self._fd is not None:
      write_json(epath.Path(self._workdir) / HOLDER_FILE, {
          'pid': os.getpid(), 'host': socket.gethostname(),
          'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')})

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # Closing the descriptor releases the flock.
      self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc_info):
    self.release()
