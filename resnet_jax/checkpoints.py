"""Checkpointing of the train state with Orbax.

One `orbax.checkpoint.CheckpointManager` per run directory
(<workdir>/checkpoints). Each checkpoint is a step directory holding:

- 'state': the TrainState's arrays (step, params, batch_stats, opt_state),
  written by Orbax's StandardSave. `apply_fn` and `tx` are static fields, so
  they are not stored: they come back from the target state on restore.
- 'metadata': a JSON dict of what must match to resume (model, dataset, ...).
- 'fingerprint': a SHA-256 of the state's bytes, checked on restore, so a
  damaged file is detected rather than trained on.
- 'progress': a JSON dict the trainer needs to continue exactly (partial
  metric sums, the best validation accuracy so far, ...).
- 'metrics' (Orbax's own item), when a validation accuracy is given: the best
  checkpoint by it is kept in addition to the newest ones.

Orbax does the parts that are easy to get wrong:

- Multi-host: every process calls save and restore; Orbax writes each array
  shard once, writes the JSON from the primary process only, and synchronises
  the processes.
- Atomicity: a step is written under a temporary name and only renamed (or, on
  object stores, marked committed) once complete, so an interrupted save is
  never listed as a checkpoint.
- Asynchrony: `save` returns once the arrays are copied to host memory, so the
  caller may donate or overwrite the state at once; writing finishes in the
  background. `wait_until_finished` and `close` wait for it.

What Orbax does not do: a checkpoint that is complete but damaged afterwards
(a file deleted, truncated or overwritten, a disk error) fails to restore,
restores wrong values, or (its metrics) stops Orbax from opening the
directory at all. `restore` uses a checkpoint only if every item reads back
intact (arrays matching their fingerprint and finite), else falls back to the
next older one with a warning naming the bad one, and `tidy` moves bad ones
aside (never deleting them), so that the newest-N cleanup never counts them
among the N. And a write that fails in Orbax's background threads surfaces
as CheckpointWriteError, one line, at the next save or check.

Restoring reads into abstract arrays taken from the target state (shape, dtype
and sharding), so the state comes back in the layout the trainer chose,
whatever layout wrote it.

Before anything is restored or written, the metadata of the latest checkpoint is
compared with this run's. A mismatch raises IncompatibleCheckpointError and
leaves the directory exactly as it was: the manager is created without
`create`, root metadata or temporary-directory cleanup, so opening a directory
writes nothing.
"""

import contextlib
import hashlib
import json
import logging as logging_lib
import time
from typing import Any

from absl import logging
from etils import epath
import jax
import numpy as np
import orbax.checkpoint as ocp

from resnet_jax import datasets
from resnet_jax import tools

_ABSENT = '<absent>'
# Where `tidy` moves checkpoints that cannot be read, beside the directory.
UNREADABLE_DIR = 'unreadable_checkpoints'
# Orbax's name for a step being written (see orbax's atomicity module).
_TMP_MARKER = '.orbax-checkpoint-tmp'


class _ExpectedWarnings(logging_lib.Filter):
  """Drops Orbax's log lines about what this module does or says itself.

  A save without a validation accuracy (validation runs less often than
  saving), a reader's manager opened read-only, and the tracebacks of failed
  background writes (CheckpointWriteError says what failed, in one line).
  """
  EXPECTED = ('did not provide metrics', 'read_only=True',
              'Given directory is read only')

  def filter(self, record):
    if record.exc_info and '/orbax/' in record.pathname:
      return False
    return not any(text in record.getMessage() for text in self.EXPECTED)


logging_lib.getLogger('absl').addFilter(_ExpectedWarnings())


# The metadata under this key is written for readers and never compared: it
# follows from what is (the measured normalisation from the training data).
RECORDED = 'recorded'


class IncompatibleCheckpointError(ValueError):
  """The directory holds checkpoints of a run with different settings."""


class UnreadableCheckpointError(ValueError):
  """No checkpoint (or not the one asked for) can be read back intact."""


class CheckpointWriteError(ValueError):
  """A checkpoint could not be written (the disk, the folder, ...)."""


def _normalise(metadata: dict[str, Any]) -> dict[str, Any]:
  # Compare what JSON gives back (tuples become lists, keys strings), so that
  # an unchanged config compares equal to its stored copy.
  return json.loads(json.dumps(metadata, sort_keys=True))


def _differences(stored: dict[str, Any], ours: dict[str, Any]) -> list[str]:
  """Each setting of `ours` that the checkpoint's `stored` does not share."""
  stored, ours = tools.flatten(stored), tools.flatten(ours)
  diffs = []
  for key in sorted(ours):
    if key.startswith(RECORDED + '.'):
      continue
    saved, now = stored.get(key, _ABSENT), ours.get(key, _ABSENT)
    if saved != now and not (key == 'training.train_data' and
                             datasets.same_data(saved, now)):
      show = lambda v: v if v is _ABSENT else json.dumps(v)
      diffs.append(f'{key}: checkpoint {show(saved)}, this run {show(now)}')
  return diffs


def _abstract(x):
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return x  # Python and NumPy scalars (e.g. a fresh state's step) as they are.


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
      # The step: restored as a Python int when the target's is one.
      array = array.astype(np.int64)
    digest.update(f'{jax.tree_util.keystr(path)}:{array.dtype.str}:'
                  f'{array.shape}'.encode())
    digest.update(array.tobytes())
  return digest.hexdigest()


def _damaged_metrics(directory: epath.Path) -> list[int]:
  """Steps whose metrics file is there but holds no validation accuracy."""
  damaged = []
  for path in (directory.glob('*/metrics/metrics') if directory.exists()
               else ()):
    step = path.parent.parent.name
    if not step.isdigit():
      continue
    try:
      float(json.loads(path.read_text())['val_accuracy'])
    except Exception:  # pylint: disable=broad-except
      damaged.append(int(step))
  return sorted(damaged)


class Checkpointer:
  """Saves and restores the train state under `directory`.

  All processes of a multi-host job construct one and make the same calls.
  """

  def __init__(self, directory, *, keep: int = 1,
               metadata: dict[str, Any], read_only: bool = False):
    """Opens `directory` (the run's workdir/checkpoints); writes nothing yet.

    Args:
      directory: where the step directories live; a local path (relative ones
        are made absolute, as Orbax requires) or a URL such as gs://.
      keep: how many of the newest checkpoints to keep; older ones are deleted
        after each save, except the best by validation accuracy.
      metadata: JSON-serialisable dict of what must match to resume; written
        with every checkpoint and checked before restoring or saving. Only
        the settings it holds are compared, so a reader may pass a subset.
      read_only: for readers (evaluate, predict): Orbax then never creates,
        deletes or cleans up anything, even while a trainer writes there.
    """
    if keep < 1:
      raise ValueError(f'keep ({keep}) must be positive')
    path = epath.Path(directory)
    self.directory = path if path.is_absolute() else path.absolute()
    self._metadata = _normalise(metadata)  # Fails early if not JSON.
    self._compatible = False
    self._keep, self._read_only = keep, read_only
    # Orbax reads every checkpoint's metrics when it opens a directory and
    # fails on a damaged one; those are skipped like any unreadable step.
    self._damaged_metrics = _damaged_metrics(self.directory)
    self.unreadable_steps: list[int] = list(self._damaged_metrics)
    for step in self._damaged_metrics:
      logging.warning('Checkpoint %d in %s is unreadable (its metrics file is '
                      'damaged).', step, self.directory)
    self._manager = self._open()

  def _open(self) -> ocp.CheckpointManager:
    policies = ocp.checkpoint_managers
    # The best is the first step to reach the highest accuracy, as the
    # trainer's summary.json counts it: of tied steps the earliest (saved
    # with its step; checkpoints from before rank ties by step as Orbax does).
    best_accuracy = lambda metrics: (metrics['val_accuracy'],
                                     -metrics.get('step', 0))
    options = ocp.CheckpointManagerOptions(
        best_fn=best_accuracy,
        best_mode='max',
        preservation_policy=policies.AnyPreservationPolicy([
            policies.LatestN(n=self._keep),
            policies.BestN(get_metric_fn=best_accuracy, n=1,
                           keep_checkpoints_without_metrics=False),
        ]),
        # The first save creates the directory; opening one must not write.
        create=False,
        read_only=self._read_only,
        enable_async_checkpointing=not self._read_only,
        # With a damaged metrics file, no metrics are read at all (`tidy`
        # reopens without it once the damaged step is moved aside).
        lightweight_initialize=bool(self._damaged_metrics),
    )
    return ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None if there is none."""
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    """Every complete checkpoint's step, oldest first."""
    return sorted(self._manager.all_steps())

  def best_step(self) -> int | None:
    """The step with the best validation accuracy, or None if none has one."""
    if self._damaged_metrics:
      raise UnreadableCheckpointError(
          f'cannot rank the checkpoints in {self.directory} by validation '
          f'accuracy: the metrics of steps {self._damaged_metrics} are '
          'damaged; use the latest checkpoint or a step')
    try:
      return self._manager.best_step()
    except Exception as e:  # pylint: disable=broad-except
      # Orbax reads every checkpoint's metrics to rank them.
      raise UnreadableCheckpointError(
          f'cannot rank the checkpoints in {self.directory} by validation '
          'accuracy: a metrics file is damaged '
          f'({tools.one_line(e, 200, named=True)})') from None

  def _read_json(self, step: int, item: str):
    return self._manager.restore(
        step, args=ocp.args.Composite(**{item: ocp.args.JsonRestore()}))[item]

  def stored_metadata(self, step: int | None = None) -> dict[str, Any] | None:
    """The run metadata saved with checkpoint `step`.

    With `step` None: that of the newest checkpoint whose metadata reads
    back (`restore` skips, with a warning, one whose metadata does not);
    None if there is none.
    """
    candidates = [step] if step is not None else list(
        reversed(self.all_steps()))
    tried = []
    while candidates:
      candidate = candidates.pop(0)
      tried.append(candidate)
      try:
        return self._read_json(candidate, 'metadata')
      except Exception as e:  # pylint: disable=broad-except
        if step is None and self._vanished(candidate, tried):
          candidates = self._listed_again(tried)
          continue
        # Not a warning: `restore` skips the step and warns, in one line.
        logging.info('Checkpoint %d: cannot read its run metadata (%s).',
                     candidate, tools.one_line(e, 200, named=True))
    return None

  # How often a reader lists the steps again when listed ones vanish: a
  # trainer that saves every few steps deletes one per save.
  _MAX_RELISTS = 20

  def _vanished(self, step: int, tried: list[int]) -> bool:
    """Whether listed `step` is gone (deleted by a trainer keeping the newest
    few) and the steps may be listed again."""
    return (len(tried) <= self._MAX_RELISTS and
            not (self.directory / str(step)).exists())

  def _listed_again(self, tried: list[int]) -> list[int]:
    """The steps as they are now, newest first, less those `tried`."""
    self._manager.reload()
    return [c for c in reversed(self.all_steps())
            if c not in tried and c not in self._damaged_metrics]

  def check_compatible(self) -> None:
    """Raises IncompatibleCheckpointError if the checkpoints are another run's.

    Compares the newest readable checkpoint's metadata with this run's,
    without restoring any array; passes when there is no checkpoint.
    """
    if self._compatible:
      return
    stored = self.stored_metadata()
    diffs = [] if stored is None else _differences(stored, self._metadata)
    if diffs and self._read_only:
      # A reader's metadata comes from the config.json beside them.
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
    metadata = self._read_json(step, 'metadata')
    abstract_state = jax.tree.map(_abstract, target_state)
    state = self._manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(abstract_state)))['state']
    try:
      expected = self._read_json(step, 'fingerprint')['sha256']
    except KeyError:
      # Only the first release wrote no fingerprint (nor a 'training' part).
      if 'training' in metadata:
        raise ValueError('its fingerprint is missing') from None
      logging.info('Checkpoint %d has no fingerprint to check.', step)
      expected = None
    if expected is not None and fingerprint(state) != expected:
      raise ValueError('its arrays do not match the fingerprint written '
                       'with them')
    if not all(np.all(np.isfinite(_host_copy(x))) for x in jax.tree.leaves(
        state) if np.issubdtype(np.result_type(getattr(x, 'dtype', type(x))),
                            np.inexact)):
      raise ValueError('its arrays hold NaN or infinite values')
    if with_progress:
      progress = self._read_json(step, 'progress')
      if not isinstance(progress, dict):
        raise ValueError(f'its progress is not a dict: {progress!r}')
      return state, progress
    return state

  def restore(self, target_state, step: int | None = None, *,
              with_progress: bool = False):
    """Returns a checkpoint's state, laid out like `target_state`.

    The structure, dtypes and shardings come from `target_state` (a freshly
    initialised state); the values, the step included, from the checkpoint.
    A checkpoint is used only if every item of it reads back intact: the run
    metadata, the arrays (checked against their fingerprint and for
    non-finite values), the metrics and, `with_progress`, the progress.

    Args:
      target_state: a freshly initialised (or abstract) state of the model.
      step: which checkpoint; None for the newest one that reads back intact.
        Each newer one that does not is logged as a warning naming its step
        and listed in `unreadable_steps`.
      with_progress: also return the progress saved with it ({} when there is
        no checkpoint).

    With no checkpoint in the directory and `step` None, returns
    `target_state` unchanged, so a trainer can always write
    `state = checkpointer.restore(state)`.

    Raises:
      IncompatibleCheckpointError: the checkpoint is of a different run.
      UnreadableCheckpointError: no checkpoint (or not `step`) reads back.
    """
    self.check_compatible()
    available = self.all_steps()
    if step is not None and step not in available:
      raise UnreadableCheckpointError(
          f'no checkpoint of step {step} in {self.directory}; there are '
          f'{available or "none"}')
    candidates = [step] if step is not None else list(reversed(available))
    failures = [f'step {c}: its metrics file is damaged' for c in candidates
                if c in self._damaged_metrics]
    candidates = [c for c in candidates if c not in self._damaged_metrics]
    if not candidates and not failures:
      logging.info('No checkpoint in %s; starting from scratch.',
                   self.directory)
      return (target_state, {}) if with_progress else target_state
    tried = []
    while candidates:
      candidate = candidates.pop(0)
      tried.append(candidate)
      try:
        restored = self._read_step(candidate, target_state, with_progress)
      except Exception as e:  # pylint: disable=broad-except
        if self._vanished(candidate, tried):
          if step is None:  # Deleted since it was listed: list again.
            candidates = self._listed_again(tried)
            continue
          raise UnreadableCheckpointError(
              f'checkpoint {step} in {self.directory} was deleted while it '
              'was read (a trainer writing there keeps only the newest and '
              'the best); read the latest, or another step') from None
        reason = tools.one_line(e, 200, named=True)
        failures.append(f'step {candidate}: {reason}')
        if candidate not in self.unreadable_steps:
          self.unreadable_steps.append(candidate)
        logging.warning('Checkpoint %d in %s is unreadable (%s)%s.',
                        candidate, self.directory, reason,
                        '' if step is not None else
                        '; falling back to the previous one')
        continue
      logging.info('Restored checkpoint %d from %s.', candidate,
                   self.directory)
      return restored
    raise UnreadableCheckpointError(
        f'no readable checkpoint in {self.directory} ({"; ".join(failures)})')

  def tidy(self) -> None:
    """Moves unreadable checkpoints aside and deletes interrupted writes.

    Call after `restore`, before the first save. Unreadable steps go to
    <directory>/../unreadable_checkpoints/ (kept for inspection, out of the
    newest-N count, and out of the way of the step being saved again). An
    interrupted write (a temporary step directory) holds nothing usable.
    """
    if jax.process_index() == 0 and self.directory.exists():
      for step in self.unreadable_steps:
        aside = self.directory.parent / UNREADABLE_DIR
        aside.mkdir(parents=True, exist_ok=True)
        destination = aside / f'{step}-{time.strftime("%Y%m%d-%H%M%S")}'
        (self.directory / str(step)).rename(destination)
        logging.warning('Moved unreadable checkpoint %d to %s.', step,
                        destination)
      for partial in self.directory.glob(f'*{_TMP_MARKER}*'):
        logging.info('Deleting %s, an interrupted checkpoint write.', partial)
        partial.rmtree()
    self.unreadable_steps = []
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices('resnet_jax checkpoints tidy')
    if self._damaged_metrics:  # Now aside: Orbax can read all the metrics.
      self._manager.close()
      self._damaged_metrics = []
      self._manager = self._open()
    else:
      self._manager.reload()

  def save(self, step: int, state, *, progress: dict[str, Any] | None = None,
           val_accuracy: float | None = None, replace: bool = False) -> None:
    """Saves `state` as checkpoint `step`; a no-op if `step` is saved.

    Args:
      step: the step number (the directory's name).
      state: the train state; replicated if it is sharded over devices.
      progress: JSON-serialisable dict, returned by `restore(...,
        with_progress=True)`.
      val_accuracy: this step's validation accuracy, if it was evaluated: the
        best checkpoint by it is kept beyond the newest `keep`.
      replace: save over checkpoint `step` if it exists (a preempted run's,
        saved before its validation, to record the accuracy with it).

    Raises:
      CheckpointWriteError: this save, or an earlier one still finishing in
        the background, failed.
    """
    if step in self._manager.all_steps():
      if not replace:
        return
      self._manager.delete(step)  # A kill now resumes from the one before.
    # Never add a checkpoint of this run next to those of another one.
    self.check_compatible()
    with self._writing(f'checkpoint {step} (or an earlier one)'):
      self._manager.check_for_errors()  # Of the previous save.
      self._manager.save(
          step, force=True,
          metrics=None if val_accuracy is None else {
              'val_accuracy': float(val_accuracy), 'step': int(step)},
          args=ocp.args.Composite(
              state=ocp.args.StandardSave(state),
              metadata=ocp.args.JsonSave(self._metadata),
              fingerprint=ocp.args.JsonSave({'sha256': fingerprint(state)}),
              progress=ocp.args.JsonSave(_normalise(progress or {}))))

  @contextlib.contextmanager
  def _writing(self, what: str):
    # Orbax writes in background threads and re-raises their errors (a full
    # disk, `checkpoints` not being a folder...) later, as anything.
    try:
      yield
    except Exception as e:  # pylint: disable=broad-except
      raise CheckpointWriteError(
          f'writing {what} into {self.directory} failed: '
          f'{tools.one_line(e, 200, named=True)}') from e

  def check_for_errors(self) -> None:
    """Raises CheckpointWriteError if a background write has failed."""
    with self._writing('a checkpoint'):
      self._manager.check_for_errors()

  def wait_until_finished(self) -> None:
    """Blocks until background writes (and deletions) are done."""
    with self._writing('a checkpoint'):
      self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending writes and releases Orbax's background threads."""
    with self._writing('a checkpoint'):
      self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
