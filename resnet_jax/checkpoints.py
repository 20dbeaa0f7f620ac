"""Checkpointing of the train state with Orbax.

One `orbax.checkpoint.CheckpointManager` per run directory
(<workdir>/checkpoints). Each checkpoint is a step directory holding two items:

- 'state': the TrainState's arrays (step, params, batch_stats, opt_state),
  written by Orbax's StandardSave. `apply_fn` and `tx` are static fields, so
  they are not stored: they come back from the target state on restore.
- 'metadata': a JSON dict of what must match to resume (model, dataset, ...).

Orbax does the parts that are easy to get wrong:

- Multi-host: every process calls save and restore; Orbax writes each array
  shard once, writes the JSON from the primary process only, and synchronises
  the processes. This module writes no file itself.
- Atomicity: a step is written under a temporary name and only renamed (or, on
  object stores, marked committed) once complete, so an interrupted save is
  never listed as a checkpoint.
- Asynchrony: `save` returns once the arrays are copied to host memory, so the
  caller may donate or overwrite the state at once; writing finishes in the
  background. `wait_until_finished` and `close` wait for it.

Restoring reads into abstract arrays taken from the target state (shape, dtype
and sharding), so the state comes back in the layout the trainer chose,
whatever layout wrote it.

Before anything is restored or written, the metadata of the latest checkpoint is
compared with this run's. A mismatch raises IncompatibleCheckpointError and
leaves the directory exactly as it was: the manager is created without
`create`, root metadata or temporary-directory cleanup, so opening a directory
writes nothing.
"""

import json
from typing import Any

from absl import logging
from etils import epath
import jax
import orbax.checkpoint as ocp

_ABSENT = '<absent>'


class IncompatibleCheckpointError(ValueError):
  """The directory holds checkpoints of a run with different settings."""


def _normalise(metadata: dict[str, Any]) -> dict[str, Any]:
  # Compare what JSON gives back (tuples become lists, keys strings), so that
  # an unchanged config compares equal to its stored copy.
  return json.loads(json.dumps(metadata, sort_keys=True))


def _flatten(tree, prefix: str = '') -> dict[str, Any]:
  """Nested dicts to {'a.b': leaf}, so a mismatch names the exact setting."""
  if isinstance(tree, dict) and (tree or not prefix):
    flat = {}
    for key, value in tree.items():
      flat.update(_flatten(value, f'{prefix}{key}.'))
    return flat
  return {prefix[:-1]: tree}


def _differences(stored: dict[str, Any], ours: dict[str, Any]) -> list[str]:
  stored, ours = _flatten(stored), _flatten(ours)
  diffs = []
  for key in sorted(stored.keys() | ours.keys()):
    saved, now = stored.get(key, _ABSENT), ours.get(key, _ABSENT)
    if saved != now:
      show = lambda v: v if v is _ABSENT else json.dumps(v)
      diffs.append(f'{key}: checkpoint {show(saved)}, this run {show(now)}')
  return diffs


def _abstract(x):
  if isinstance(x, jax.Array):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
  return x  # Python and NumPy scalars (e.g. a fresh state's step) as they are.


class Checkpointer:
  """Saves and restores the train state under `directory`.

  All processes of a multi-host job construct one and make the same calls.
  """

  def __init__(self, directory, *, save_every_steps: int, keep: int,
               metadata: dict[str, Any]):
    """Opens `directory` (the run's workdir/checkpoints); writes nothing yet.

    Args:
      directory: where the step directories live; a local path (relative ones
        are made absolute, as Orbax requires) or a URL such as gs://.
      save_every_steps: `maybe_save` saves at multiples of this.
      keep: how many of the newest checkpoints to keep; older ones are deleted
        after each save.
      metadata: JSON-serialisable dict of what must match to resume; written
        with every checkpoint and checked before restoring or saving.
    """
    if save_every_steps < 1 or keep < 1:
      raise ValueError(f'save_every_steps ({save_every_steps}) and keep '
                       f'({keep}) must be positive')
    path = epath.Path(directory)
    self.directory = path if path.is_absolute() else path.absolute()
    self._metadata = _normalise(metadata)  # Fails early if not JSON.
    self._compatible = False
    policies = ocp.checkpoint_managers
    options = ocp.CheckpointManagerOptions(
        # Orbax's default policy would also save the first step it sees; an
        # explicit policy saves exactly at multiples, plus when JAX's
        # preemption service reports that the job is about to be preempted.
        save_decision_policy=policies.AnySavePolicy([
            policies.FixedIntervalPolicy(save_every_steps),
            policies.PreemptionCheckpointingPolicy(),
        ]),
        preservation_policy=policies.LatestN(n=keep),
        # The first save creates the directory; opening one must not write.
        create=False,
        enable_async_checkpointing=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    """The newest complete checkpoint's step, or None if there is none."""
    return self._manager.latest_step()

  def check_compatible(self) -> None:
    """Raises IncompatibleCheckpointError if the checkpoints are another run's.

    Compares the latest checkpoint's metadata with this run's, without
    restoring any array; passes when there is no checkpoint.
    """
    if self._compatible:
      return
    step = self.latest_step()
    if step is not None:
      try:
        stored = self._manager.restore(
            step, args=ocp.args.Composite(metadata=ocp.args.JsonRestore()))
        stored = stored['metadata']
      except KeyError:
        raise IncompatibleCheckpointError(
            f'checkpoint {step} in {self.directory} has no run metadata, so '
            'it cannot be checked against this run; start afresh with a new '
            '--workdir') from None
      diffs = _differences(stored, self._metadata)
      if diffs:
        raise IncompatibleCheckpointError(
            f'checkpoints in {self.directory} come from a different run '
            f'({"; ".join(diffs)}); resume with the same settings, or start '
            'afresh with a new --workdir')
    self._compatible = True

  def restore(self, target_state):
    """Returns the latest checkpoint, laid out like `target_state`.

    The structure, dtypes and shardings come from `target_state` (a freshly
    initialised state); the values, the step included, from the checkpoint.

    With no checkpoint in the directory, returns `target_state` unchanged, so
    a trainer can always write `state = checkpointer.restore(state)`.

    Raises:
      IncompatibleCheckpointError: the checkpoint is of a different run.
    """
    self.check_compatible()
    step = self.latest_step()
    if step is None:
      logging.info('No checkpoint in %s; starting from scratch.',
                   self.directory)
      return target_state
    abstract_state = jax.tree.map(_abstract, target_state)
    restored = self._manager.restore(
        step, args=ocp.args.Composite(
            state=ocp.args.StandardRestore(abstract_state)))
    logging.info('Restored checkpoint %d from %s.', step, self.directory)
    return restored['state']

  def maybe_save(self, step: int, state) -> bool:
    """Saves if `step` is a multiple of `save_every_steps`; returns if it did.

    Also saves when JAX's preemption service says the job is about to be
    preempted; never saves a step that is not newer than the latest checkpoint.
    `state` may be a function returning the state, called only when a save is
    due, so that a caller checking every step gathers the state only then.
    """
    if not self._manager.should_save(step):
      return False
    self._save(step, state() if callable(state) else state)
    return True

  def save(self, step: int, state) -> None:
    """Saves unconditionally (end of training); a no-op if `step` is saved."""
    if step in self._manager.all_steps():
      return
    self._save(step, state)

  def _save(self, step: int, state) -> None:
    # Never add a checkpoint of this run next to those of another one.
    self.check_compatible()
    self._manager.save(
        step, force=True, args=ocp.args.Composite(
            state=ocp.args.StandardSave(state),
            metadata=ocp.args.JsonSave(self._metadata)))

  def wait_until_finished(self) -> None:
    """Blocks until background writes (and deletions) are done."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    """Waits for pending writes and releases Orbax's background threads."""
    self._manager.close()

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()
