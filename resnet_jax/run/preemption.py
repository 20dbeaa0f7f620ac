"""Stopping at a saved step on SIGTERM (a preemption) or Ctrl-C (SIGINT).

The trainer asks `reached(step)` after every step; on yes it saves that step
and exits with 128 + the signal's number. One process: a handler notes the
first signal, and a second one ends the process at once. Several processes:
JAX's preemption sync manager (started by jax.distributed.initialize) picks a
step all of them reach; Ctrl-C keeps its default meaning, since one process
stopping alone would leave the others waiting in their collectives.
"""

import os
import signal
import time

from absl import logging
import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """Training stopped on a signal after saving `step`."""

  def __init__(self, step: int, seconds: float | None,
               signum: int = signal.SIGTERM):
    name = signal.Signals(signum).name
    seconds_text = '' if seconds is None else f' {seconds:.2f} s after {name}'
    what = 'preempted' if signum == signal.SIGTERM else 'interrupted'
    super().__init__(
        f'{what}: saved a checkpoint at step {step}{seconds_text}; rerun '
        'the same command to resume from it')
    self.exit_status = 128 + signum


class PreemptionWatcher:
  """Context manager: inside it, SIGTERM or SIGINT ask for a stop."""

  def __init__(self):
    self._received_at = None
    self.signum = signal.SIGTERM
    self._previous_handlers = {}
    self._multi_process = jax.process_count() > 1

  def __enter__(self):
    if not self._multi_process:
      for signum in (signal.SIGTERM, signal.SIGINT):
        self._previous_handlers[signum] = signal.signal(signum,
                                                        self._on_signal)
    return self

  def __exit__(self, *exc_info):
    for signum, handler in self._previous_handlers.items():
      signal.signal(signum, handler)

  def _on_signal(self, signum, frame):
    del frame
    if self._received_at is not None:  # The second: stop now, unsaved.
      signal.signal(signum, signal.SIG_DFL)
      os.kill(os.getpid(), signum)
      return
    self._received_at = time.monotonic()
    self.signum = signum
    logging.warning('%s received: saving a checkpoint after the current step, '
                    'then stopping (send it again to stop at once).',
                    signal.Signals(signum).name)

  def reached(self, step: int) -> bool:
    """Whether to save `step` and stop. Every process must call it each step."""
    if self._multi_process:
      return multihost_utils.reached_preemption_sync_point(step)
    return self._received_at is not None

  def seconds_since_signal(self) -> float | None:
    """Seconds since the signal arrived (None if none was, or with several
    processes, where only JAX heard it)."""
    if self._received_at is None:
      return None
    return time.monotonic() - self._received_at
