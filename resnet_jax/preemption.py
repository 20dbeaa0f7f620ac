"""Noticing a preemption (SIGTERM) at a step every process agrees on.

TPU VMs, Slurm and Kubernetes send SIGTERM some seconds before they kill a
job. The trainer asks `reached(step)` after every step; when it says yes, the
trainer saves a checkpoint of that step and stops.

- One process: a SIGTERM handler sets a flag; the step after it arrives is
  the step saved.
- Several processes (jax.distributed): JAX's preemption sync manager hears
  the signal (on any process; its coordination service tells the others) and
  picks a step that all of them reach, so that all save the same step.
  `jax.distributed.initialize` starts it; nothing is installed here.
"""

import signal
import time

from absl import logging
import jax
from jax.experimental import multihost_utils


class Preempted(Exception):
  """Training stopped on a preemption notice after saving `step`."""

  def __init__(self, step: int, seconds: float | None):
    seconds_text = '' if seconds is None else f' {seconds:.2f} s after SIGTERM'
    super().__init__(
        f'preempted: saved a checkpoint at step {step}{seconds_text}; rerun '
        'the same command to resume from it')
    self.step = step
    self.seconds = seconds


class PreemptionWatcher:
  """Context manager: between enter and exit, SIGTERM asks for a stop."""

  def __init__(self):
    self._received_at = None
    self._previous_handler = None
    self._multi_process = jax.process_count() > 1

  def __enter__(self):
    if not self._multi_process:
      self._previous_handler = signal.signal(signal.SIGTERM, self._on_signal)
    return self

  def __exit__(self, *exc_info):
    if not self._multi_process:
      signal.signal(signal.SIGTERM, self._previous_handler)

  def _on_signal(self, signum, frame):
    del signum, frame
    if self._received_at is None:
      self._received_at = time.monotonic()
      logging.warning('SIGTERM received: saving a checkpoint after the '
                      'current step, then stopping.')

  def reached(self, step: int) -> bool:
    """Whether to save `step` and stop. Every process must call it each step."""
    if self._multi_process:
      if multihost_utils.reached_preemption_sync_point(step):
        self._received_at = self._received_at or time.monotonic()
        return True
      return False
    return self._received_at is not None

  def seconds_since_signal(self) -> float | None:
    """Seconds since SIGTERM arrived (single process; None if unknown)."""
    if self._received_at is None or self._multi_process:
      return None
    return time.monotonic() - self._received_at
