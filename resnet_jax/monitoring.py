"""Watching the training loop: where its time goes, and profiler traces."""

import contextlib
import time

from absl import logging
import jax


class Stopwatch:
  """Training time, with compilation and pauses (evaluation, saving) left out.

  After big_vision's Chrono: the first step (tracing and compiling) is not
  counted, and everything the loop does between steps runs inside `pause()`,
  so the rates are those of training alone.
  """

  def __init__(self, earlier_seconds: float = 0.0):
    # earlier_seconds: wall time of the processes this run resumes from.
    self._start = time.monotonic()
    self._earlier = earlier_seconds
    self._first_step_done = None  # (step, time) once the first step ran.
    self._paused = 0.0  # Seconds paused since the first step.
    self._mark = None  # (step, training seconds) at the last `rate` call.

  def _training_seconds(self) -> float:
    return time.monotonic() - self._first_step_done[1] - self._paused

  def step_done(self, step: int, outputs) -> None:
    """Call after each step; waits for the first one to finish, only."""
    if self._first_step_done is None:
      jax.block_until_ready(outputs)
      self._first_step_done = (step, time.monotonic())
      self._mark = (step, 0.0)

  @contextlib.contextmanager
  def pause(self):
    """Time inside this block is not training time."""
    start = time.monotonic()
    try:
      yield
    finally:
      if self._first_step_done is not None:
        self._paused += time.monotonic() - start

  def steps_per_second(self, step: int) -> float | None:
    """Training steps per second since the previous call (or the first step)."""
    if self._mark is None or step <= self._mark[0]:
      return None
    now = self._training_seconds()
    rate = (step - self._mark[0]) / max(now - self._mark[1], 1e-9)
    self._mark = (step, now)
    return rate

  def images_per_second(self, step: int, batch_size: int) -> float | None:
    """Training images per second from after the first step to `step`."""
    if self._first_step_done is None or step <= self._first_step_done[0]:
      return None
    steps = step - self._first_step_done[0]
    return steps * batch_size / max(self._training_seconds(), 1e-9)

  @property
  def wall_seconds(self) -> float:
    """Seconds since the stopwatch was made, everything included."""
    return time.monotonic() - self._start

  @property
  def total_wall_seconds(self) -> float:
    """wall_seconds plus the earlier processes' (to their last checkpoint)."""
    return self._earlier + self.wall_seconds


class Profile:
  """A profiler trace of steps [first_step, first_step + num_steps).

  Written to <logdir>/plugins/profile for TensorBoard's profile plugin.
  clu.periodic_actions.Profile does the same, but importing it imports
  TensorFlow (through clu's metric writers), which training must not need.
  """

  def __init__(self, logdir: str, first_step: int, num_steps: int):
    self._logdir = logdir
    self._first, self._stop = first_step, first_step + num_steps
    self._active = False

  @property
  def boundaries(self) -> tuple[int, ...]:
    """The steps where a trace starts and ends: a training call stops there."""
    return (self._first, self._stop) if self._stop > self._first else ()

  def before_step(self, step: int, state) -> None:
    """Call before each step runs; `state` is waited for when a trace ends."""
    if step == self._first and step < self._stop:
      logging.info('Profiling steps %d..%d into %s.', self._first,
                   self._stop - 1, self._logdir)
      jax.profiler.start_trace(self._logdir)
      self._active = True
    elif step == self._stop and self._active:
      self.close(state)

  def close(self, state=None) -> None:
    """Ends a trace still running (training stopped inside it)."""
    if self._active:
      jax.block_until_ready(state)  # The traced steps' device work.
      jax.profiler.stop_trace()
      self._active = False
