"""Checkpoints of the train state, with Orbax: one CheckpointManager per run.

Orbax writes each step atomically (an interrupted save is never listed), in
the background, once per array shard across hosts, and keeps the newest
`keep` steps plus the best by validation accuracy. A step holds the state's
arrays and, as JSON, the run's metadata (compared before anything is read or
written, so another run's checkpoints are refused untouched), the progress
the trainer continues from, and a SHA-256 of the arrays: Orbax restores a
flipped bit in an array file as a wrong value without complaint (tested on
orbax 0.12.8). A step that does not read back intact is skipped with a
warning; `tidy` moves it aside, never deleting it. A step saved again
replaces the old one only once it is complete (`Checkpointer._replace`).
Readers open read-only: they write nothing, even while a trainer saves and
deletes steps, and a step deleted while they read it is not damage.
"""

import contextlib
import hashlib
import json
import logging as logging_lib
import sys
import time
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from resnet_jax import utils
from resnet_jax.data import datasets
from resnet_jax.run import defaults

# Where `tidy` moves unreadable checkpoints, beside the directory.
UNREADABLE_DIR = 'unreadable_checkpoints'
# Where a step saved again is written before it replaces the old one, beside
# the directory (`Checkpointer._replace`).
REPLACING_DIR = 'replacing_checkpoint'
_ABSENT = '<absent>'


def _unexpected(record: logging_lib.LogRecord) -> bool:
  """False for Orbax's log lines about what this module does or says itself:
  a save without metrics, a read-only manager, and the tracebacks of failed
  background writes (CheckpointWriteError says what failed, in one line)."""
  expected = ('did not provide metrics', 'read_only=True',
              'Given directory is read only')
  return not (record.exc_info and '/orbax/' in record.pathname or
              any(text in record.getMessage() for text in expected))


logging_lib.getLogger('absl').addFilter(_unexpected)


def _abandoned_read(unraisable) -> bool:
  """Whether `unraisable` is an array read of a failed restore that Orbax
  abandoned: when one read fails, Orbax (0.12) closes its event loop with
  the other reads of the restore pending, and as each is garbage-collected
  its `except BaseException` turns the GeneratorExit that closes it into an
  Exception, which Python can only report through sys.unraisablehook. The
  restore's own error says what failed (a step named unreadable)."""
  code = getattr(unraisable.object, 'cr_code', None)
  return (code is not None and
          code.co_name == '_read_array_index_and_device_put' and
          isinstance(unraisable.exc_value, Exception) and
          isinstance(unraisable.exc_value.__cause__, GeneratorExit))


def _unless_closed_loop(unraisablehook):
  """`unraisablehook` without the tracebacks that tensorstore reports (through
  it) for each write of a failed save that ends after Orbax closed its event
  loop (the save's CheckpointWriteError says what failed; only a callback's,
  no frame above asyncio's call_soon_threadsafe, is dropped), nor those of
  Orbax's abandoned reads of a failed restore (_abandoned_read)."""
  def hook(unraisable):
    traceback = unraisable.exc_traceback
    if not (unraisable.exc_type is RuntimeError and
            str(unraisable.exc_value) == 'Event loop is closed' and
            traceback and traceback.tb_frame.f_code.co_name ==
            'call_soon_threadsafe' or _abandoned_read(unraisable)):
      unraisablehook(unraisable)
  return hook


sys.unraisablehook = _unless_closed_loop(sys.unraisablehook)


class IncompatibleCheckpointError(ValueError):
  """The directory holds checkpoints of a run with different settings."""


class UnreadableCheckpointError(ValueError):
  """No checkpoint (or not the one asked for) can be read back intact."""


class CheckpointWriteError(ValueError):
  """A checkpoint could not be written (the disk, the folder, ...)."""


def _normalise(metadata: dict[str, Any]) -> dict[str, Any]:
  # As JSON gives it back (tuples as lists), to compare with a stored copy.
  return json.loads(json.dumps(metadata, sort_keys=True))


def _differences(stored: dict[str, Any], ours: dict[str, Any]) -> list[str]:
  """Each setting of `ours` that the checkpoint's `stored` does not share."""
  stored, ours = utils.flatten(stored), utils.flatten(ours)
  show = lambda v: v if v is _ABSENT else json.dumps(v)
  diffs = []
  for key in sorted(ours):
    saved, now = stored.get(key, _ABSENT), ours[key]
    if saved is _ABSENT and key.startswith(('training.', 'model.')):
      # A config field added since, at its default: the same run.
      saved = _default(key.removeprefix('training.'), saved)
    if (saved != now and not key.startswith(datasets.RECORDED + '.') and not (
        key == 'training.train_data' and datasets.same_data(saved, now))):
      diffs.append(f'{key}: checkpoint {show(saved)}, this run {show(now)}')
  return diffs


def _default(field: str, otherwise):
  """defaults.py's value of 'dotted.field' as JSON has it, or `otherwise`."""
  if field not in defaults.FIELDS:
    return otherwise
  value = defaults.FIELDS[field][0]
  return list(value) if isinstance(value, tuple) else value


def _host_copy(x) -> np.ndarray:
  if isinstance(x, jax.Array):
    if not x.is_fully_addressable and not x.is_fully_replicated:
      raise NotImplementedError('fingerprints need replicated state')
    # A replicated array's first local shard is all of it, on every process.
    return np.asarray(x.addressable_data(0))
  return np.asarray(x)


def fingerprint(state) -> str:
  """SHA-256 over every array of `state`: its path, dtype, shape and bytes."""
  digest = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    array = _host_copy(leaf)
    if array.ndim == 0 and array.dtype.kind in 'iu':
      array = array.astype(np.int64)  # The step, maybe a Python int.
    digest.update(f'{jax.tree_util.keystr(path)}:{array.dtype.str}:'
                  f'{array.shape}'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _damaged_metrics(directory: epath.Path) -> list[int]:
  """Steps whose metrics file holds no validation accuracy: Orbax, which
  reads them all to rank the steps, would fail to open the directory."""
  damaged = []
  for path in directory.glob('*/metrics/metrics') if directory.exists() else ():
    try:
      float(json.loads(path.read_text())['val_accuracy'])
    except Exception:  # pylint: disable=broad-except
      if path.parent.parent.name.isdigit():
        damaged.append(int(path.parent.parent.name))
  return sorted(damaged)


def _sync(name: str) -> None:
  """Waits for every process of a multi-host job to reach `name`."""
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _contents(path: epath.Path) -> list[str] | None:
  """Every file and folder under `path`, sorted; None if `path` or a part
  of it went while it was listed."""
  found = []
  try:
    for child in sorted(path.iterdir()):
      inside = _contents(child) if child.is_dir() else []
      if inside is None:
        return None
      found += [str(child), *inside]
  except FileNotFoundError:
    return None
  return found


def _remove(path: epath.Path) -> None:
  """Deletes `path` and what it holds; a part already gone is no error."""
  try:
    path.rmtree()
  except FileNotFoundError:
    pass


class Checkpointer:
  """Saves and restores the train state under `directory` (a path or URL).

  Every process of a multi-host job makes the same calls. `metadata`: what
  must match to resume (a reader may pass a subset, or {}). `read_only`: for
  readers, which then never create, delete or clean up anything.
  """

  # How often a reader lists the steps again when listed ones vanish: a
  # trainer that saves every few steps deletes one per save.
  _MAX_RELISTS = 20

  def __init__(self, directory, *, keep: int = 1,
               metadata: dict[str, Any], read_only: bool = False):
    if keep < 1:
      raise ValueError(f'keep ({keep}) must be positive')
    self.directory = epath.Path(directory)
    if not self.directory.is_absolute():  # Orbax needs it absolute.
      self.directory = self.directory.absolute()
    self._metadata = _normalise(metadata)  # Fails early if not JSON.
    self._keep, self._read_only, self._compatible = keep, read_only, False
    if not read_only:
      self._finish_replace()
    self._damaged_metrics = _damaged_metrics(self.directory)
    self.unreadable_steps: list[int] = list(self._damaged_metrics)
    self._manager = self._listed(self._open)

  def _listed(self, list_steps):
    """`list_steps()` (Orbax reading every step's folder), again while a
    step is deleted during it, as a trainer keeping the newest few does."""
    for attempt in range(self._MAX_RELISTS):
      try:
        return list_steps()
      except (FileNotFoundError, NotADirectoryError):  # What Orbax raises.
        if attempt + 1 == self._MAX_RELISTS:
          raise

  def _open(self, directory=None, replacing=False) -> ocp.CheckpointManager:
    """The manager of `directory` (ours), or `replacing`: of a new one that
    writes one step at once (`_replace`)."""
    # The best is the first step to reach the highest accuracy, as the
    # trainer's summary.json counts it (older checkpoints lack 'step').
    best = lambda metrics: (metrics['val_accuracy'], -metrics.get('step', 0))
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        best_fn=best, best_mode='max',
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(n=self._keep),
            policies.BestN(get_metric_fn=best, n=1,
                           keep_checkpoints_without_metrics=False)]),
        create=replacing,  # Opening a directory writes nothing.
        read_only=self._read_only,
        enable_async_checkpointing=not (self._read_only or replacing),
        # Reads no metrics: `tidy` reopens once the damaged are aside.
        lightweight_initialize=bool(self._damaged_metrics))
    return ocp.CheckpointManager(directory or self.directory, options=options)

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Every complete checkpoint's step, oldest first."""
    return sorted(self._manager.all_steps())

  def best_step(self) -> int | None:
    """The step with the best validation accuracy; None if none has one."""
    if self._damaged_metrics:
      raise UnreadableCheckpointError(
          f'cannot rank the checkpoints in {self.directory} by validation '
          f'accuracy: the metrics of steps {self._damaged_metrics} are '
          'damaged; use the latest checkpoint or a step')
    return self._manager.best_step()

  def _read_json(self, step: int, item: str):
    return self._manager.restore(
        step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]

  def _first_readable(self, step: int | None, read, failed):
    """`read(step)`, or with `step` None, `read` of each step newest first
    until one succeeds; None if none does. `failed(step, error)` hears of
    each failure, except of a step deleted since it was listed (a trainer
    keeping the newest few): then the steps are listed again. A step is
    being deleted, not damaged, if its folder is gone or lost files while it
    was read (Orbax deletes a step file by file): nothing else removes a
    file of a saved step."""
    candidates = [step] if step is not None else self.all_steps()[::-1]
    tried = []
    while candidates:
      tried.append(candidates.pop(0))
      path = self.directory / str(tried[-1])
      before = _contents(path)
      try:
        return read(tried[-1])
      except Exception as e:  # pylint: disable=broad-except
        if len(tried) > self._MAX_RELISTS or (
            before is not None and _contents(path) == before):
          failed(tried[-1], e)
        elif step is not None:
          raise UnreadableCheckpointError(
              f'checkpoint {step} in {self.directory} was deleted while it '
              'was read (a trainer writing there keeps only the newest and '
              'the best); read the latest, or another step') from None
        else:
          self._listed(self._manager.reload)
          candidates = [s for s in self.all_steps()[::-1] if s not in tried]
    return None

  def stored_metadata(self, step: int | None = None) -> dict[str, Any] | None:
    """The run metadata saved with `step`, or with the newest step whose
    metadata reads back; None if there is none."""
    # Not a warning: `restore` skips the step and warns, in one line.
    failed = lambda s, e: logging.info(
        'Checkpoint %d: cannot read its run metadata (%s).', s,
        utils.one_line(e, 200, named=True))
    return self._first_readable(
        step, lambda s: self._read_json(s, 'metadata'), failed)

  def check_compatible(self) -> None:
    """Raises IncompatibleCheckpointError if the newest readable checkpoint's
    metadata differs from this run's; passes when there is none."""
    if self._compatible:
      return
    stored = self.stored_metadata()
    diffs = [] if stored is None else _differences(stored, self._metadata)
    if diffs and self._read_only:  # A reader's metadata is config.json's.
      raise IncompatibleCheckpointError(
          f'the checkpoints in {self.directory} do not match the workdir\'s '
          f'config.json ({"; ".join(diffs)}): config.json was edited or is '
          "another run's; restore the one the trainer wrote")
    if diffs:
      raise IncompatibleCheckpointError(
          f'checkpoints in {self.directory} come from a different run '
          f'({"; ".join(diffs)}); resume with the same settings, or start '
          'afresh with a new --workdir')
    self._compatible = True

  def _read_step(self, step: int, target_state, with_progress: bool):
    """Reads every item of checkpoint `step`; raises if one is not intact."""
    if step in self._damaged_metrics:
      raise ValueError('its metrics file is damaged')
    metadata = self._read_json(step, 'metadata')
    abstract = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
        if isinstance(x, jax.Array) else x, target_state)
    state = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract)))['state']
    try:
      expected = self._read_json(step, 'fingerprint')['sha256']
    except KeyError:  # Only the first release wrote none (nor 'training').
      if 'training' in metadata:
        raise ValueError('its fingerprint is missing') from None
      expected = None
    if expected is not None and fingerprint(state) != expected:
      raise ValueError('its arrays do not match the fingerprint written '
                       'with them')
    arrays = map(_host_copy, jax.tree.leaves(state))
    if not all(np.isfinite(a).all() for a in arrays
               if jax.numpy.issubdtype(a.dtype, jax.numpy.inexact)):
      raise ValueError('its arrays hold NaN or infinite values')
    progress = self._read_json(step, 'progress') if with_progress else {}
    if not isinstance(progress, dict):
      raise ValueError(f'its progress is not a dict: {progress!r}')
    logging.info('Restored checkpoint %d from %s.', step, self.directory)
    return (state, progress) if with_progress else state

  def restore(self, target_state, step: int | None = None, *,
              with_progress: bool = False):
    """Checkpoint `step` (None: the newest that reads back intact) in the
    structure, dtypes and shardings of `target_state`, and `with_progress`
    its progress; `target_state` (and {}) if there is none. Each checkpoint
    skipped is named in a warning and in `unreadable_steps`. Raises
    IncompatibleCheckpointError or UnreadableCheckpointError (one line)."""
    self.check_compatible()
    available = self.all_steps()
    if step is not None and step not in available:
      raise UnreadableCheckpointError(
          f'no checkpoint of step {step} in {self.directory}; there are '
          f'{available or "none"}')
    if not available:
      logging.info('No checkpoint in %s; starting from scratch.',
                   self.directory)
      return (target_state, {}) if with_progress else target_state
    failures = []

    def failed(candidate, error):
      reason = utils.one_line(error, 200, named=True)
      failures.append(f'step {candidate}: {reason}')
      if candidate not in self.unreadable_steps:
        self.unreadable_steps.append(candidate)
      logging.warning('Checkpoint %d in %s is unreadable (%s)%s.', candidate,
                      self.directory, reason, '' if step is not None else
                      '; falling back to the previous one')

    restored = self._first_readable(
        step, lambda s: self._read_step(s, target_state, with_progress),
        failed)
    if restored is None:
      raise UnreadableCheckpointError(
          f'no readable checkpoint in {self.directory} ({"; ".join(failures)})')
    return restored

  def tidy(self) -> None:
    """Call after `restore`, before the first save: moves unreadable steps to
    ../unreadable_checkpoints/ (kept for inspection, but out of the newest-N
    count and out of the way of the step being saved again) and deletes
    interrupted writes (temporary step directories, nothing usable)."""
    if jax.process_index() == 0 and self.directory.exists():
      for step in self.unreadable_steps:
        aside = self.directory.parent / UNREADABLE_DIR
        aside.mkdir(parents=True, exist_ok=True)
        destination = aside / f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
        (self.directory / str(step)).rename(destination)
        logging.warning('Moved unreadable checkpoint %d to %s.', step,
                        destination)
      for partial in self.directory.glob('*.orbax-checkpoint-tmp*'):
        logging.info('Deleting %s, an interrupted checkpoint write.', partial)
        partial.rmtree()
    self.unreadable_steps = []
    _sync('resnet_jax checkpoints tidy')
    if self._damaged_metrics:  # Now aside: Orbax can read all the metrics.
      self._manager.close()
      self._damaged_metrics = []
      self._manager = self._open()
    else:
      self._manager.reload()

  def save(self, step: int, state, *, progress: dict[str, Any] | None = None,
           val_accuracy: float | None = None, replace: bool = False) -> None:
    """Saves `state` (replicated if sharded) as checkpoint `step`, with
    `progress` for `restore` and `val_accuracy` to rank it. A no-op if `step`
    is saved, unless `replace` (to record a preempted run's accuracy)."""
    saved = step in self._manager.all_steps()
    if saved and not replace:
      return
    self.check_compatible()  # Never beside another run's checkpoints.
    metrics = None if val_accuracy is None else {
        'val_accuracy': float(val_accuracy), 'step': int(step)}
    args = ocp.args.Composite(
        state=ocp.args.StandardSave(state),
        metadata=ocp.args.JsonSave(self._metadata),
        fingerprint=ocp.args.JsonSave({'sha256': fingerprint(state)}),
        progress=ocp.args.JsonSave(_normalise(progress or {})))
    if saved:
      self._replace(step, metrics, args)
      return
    with self._writing(f'checkpoint {step} (or an earlier one)'):
      self._manager.check_for_errors()  # Of the previous save.
      self._manager.save(step, force=True, metrics=metrics, args=args)

  def _replace(self, step: int, metrics, args) -> None:
    """Saves checkpoint `step` again, as Orbax commits any step: the new one
    is written whole first (into REPLACING_DIR/new/, where Orbax renames
    its temporary folder to `step` once every file is there); only then is
    the old one moved aside (REPLACING_DIR/old/), the new moved in and the
    old deleted. A kill at any moment leaves the old step in place, or the
    new one complete in REPLACING_DIR, which the next trainer moves in
    (`_finish_replace`): never no checkpoint."""
    staging = self.directory.parent / REPLACING_DIR
    with self._writing(f'checkpoint {step} again'):
      self._manager.wait_until_finished()  # The previous save, its errors.
      if jax.process_index() == 0 and staging.exists():
        staging.rmtree()  # What an interrupted replace left: not a step.
      _sync('resnet_jax checkpoints replace start')
      new = self._open(staging / 'new', replacing=True)
      try:
        new.save(step, force=True, metrics=metrics, args=args)
        new.wait_until_finished()
      finally:
        new.close()
      _sync('resnet_jax checkpoints replace written')
      if jax.process_index() == 0:
        (staging / 'old').mkdir()
        (self.directory / str(step)).rename(staging / 'old' / str(step))
        (staging / 'new' / str(step)).rename(self.directory / str(step))
        _remove(staging)
      _sync('resnet_jax checkpoints replace done')
      self._manager.reload()

  def _finish_replace(self) -> None:
    """Completes a replace that a kill interrupted (`_replace`): a step
    missing here is moved in from REPLACING_DIR (the new copy, complete,
    else the old), then the rest there is deleted. Writers only."""
    staging = self.directory.parent / REPLACING_DIR
    if jax.process_index() == 0 and staging.exists():
      for copy in ('new', 'old'):
        for path in (staging / copy).glob('*'):
          if path.name.isdigit() and not (self.directory / path.name
                                          ).exists():
            logging.warning('Completing the interrupted replacement of '
                            'checkpoint %s in %s.', path.name, self.directory)
            path.rename(self.directory / path.name)
      _remove(staging)
    _sync('resnet_jax checkpoints finish replace')

  @contextlib.contextmanager
  def _writing(self, what: str):
    # Orbax re-raises a background write's error (a full disk, `checkpoints`
    # not a folder...) later, as any type: CheckpointWriteError, one line.
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointWriteError(
          f'writing {what} into {self.directory} failed: '
          f'{utils.one_line(e, 200, named=True)}') from e

  def check_for_errors(self) -> None:
    with self._writing('a checkpoint'):
      self._manager.check_for_errors()

  def wait_until_finished(self) -> None:
    with self._writing('a checkpoint'):
      self._manager.wait_until_finished()

  def close(self) -> None:
    with self._writing('a checkpoint'):
      self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
