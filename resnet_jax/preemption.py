"""Noticing a preemption (SIGTERM) or Ctrl-C at a step every process agrees on.

TPU VMs, Slurm and Kubernetes send SIGTERM some seconds before they kill a
job; a person presses Ctrl-C (SIGINT). The trainer asks `reached(step)` after
every step; when it says yes, the trainer saves a checkpoint of that step and
stops with status 128 + the signal's number (143 for SIGTERM, 130 for
SIGINT).

- One process: a handler notes the first SIGTERM or SIGINT; the step after it
  arrives is the step saved. A second one ends the process at once, as the
  signal would by default.
- Several processes (jax.distributed): JAX's preemption sync manager hears
  SIGTERM (on any process; its coordination service tells the others) and
  picks a step that all of them reach, so that all save the same step.
  `jax.distributed.initialize` starts it; nothing is installed here, and
  Ctrl-C keeps its default meaning (one process stopping alone would leave
  the others waiting in their collectives).
"""

import os
import signal
import time

from absl import logging
import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


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
    self.step = step
    self.seconds = seconds
    self.signum = signum

  @property
  def exit_status(self) -> int:
    return 128 + self.signum


class PreemptionWatcher:
  """Context manager: between enter and exit, SIGTERM or SIGINT ask for a stop."""

  def __init__(self):
    self._received_at = None
    self.signum = signal.SIGTERM
    self._previous_handlers = {}
    self._multi_process = jax.process_count() > 1

  def __enter__(self):
    if not self._multi_process:
      for signum in SIGNALS:
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
      if multihost_utils.reached_preemption_sync_point(step):
        self._received_at = self._received_at or time.monotonic()
        return True
      return False
    return self._received_at is not None

  def seconds_since_signal(self) -> float | None:
    """Seconds since the signal arrived (single process; None if unknown)."""
    if self._received_at is None or self._multi_process:
      return None
    return time.monotonic() - self._received_at
