"""Watching the training loop: where its time goes, how far it is, traces."""

import contextlib
import time

from absl import logging
import jax


class Stopwatch:
  """Training time without the first step (compiling) or `pause()` blocks
  (evaluation, saving), as big_vision's Chrono."""

  def __init__(self, earlier_seconds: float = 0.0):
    # earlier_seconds: wall time of the processes this run resumes from.
    self._start = time.monotonic()
    self._earlier = earlier_seconds
    self._first_step_done = None  # (step, time) once the first step ran.
    self._paused = 0.0  # Seconds paused since the first step.
    self._mark = None  # (step, training seconds) at the last steps_per_second.

  def seconds_since_first_step(self) -> float:
    """Wall seconds since the first step finished (it must have)."""
    return time.monotonic() - self._first_step_done[1]

  def _training_seconds(self) -> float:
    return self.seconds_since_first_step() - self._paused

  def _steps_after_first(self, step: int) -> int:
    first = self._first_step_done
    return 0 if first is None else max(step - first[0], 0)

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
    steps = self._steps_after_first(step)
    return (steps * batch_size / max(self._training_seconds(), 1e-9)
            if steps else None)

  def wall_seconds_per_step(self, step: int) -> float | None:
    """Wall seconds per step after the first, pauses included: for when the
    run will end."""
    steps = self._steps_after_first(step)
    return self.seconds_since_first_step() / steps if steps else None

  @property
  def wall_seconds(self) -> float:
    """Seconds since the stopwatch was made, everything included."""
    return time.monotonic() - self._start

  @property
  def total_wall_seconds(self) -> float:
    """wall_seconds plus the earlier processes' (to their last checkpoint)."""
    return self._earlier + self.wall_seconds


def duration(seconds: float) -> str:
  """`seconds` for a reader: '42s', '3m05s', '1h02m'."""
  seconds = round(seconds)
  if seconds < 60:
    return f'{seconds}s'
  if seconds < 3600:
    return f'{seconds // 60}m{seconds % 60:02d}s'
  return f'{seconds // 3600}h{seconds // 60 % 60:02d}m'


class Progress:
  """Console lines of how far training is and when it (and the next
  validation) will be done: at every log (`report`), and between logs when
  the console has been quiet FIRST_QUIET_S, later QUIET_S (`heartbeat`)."""
  FIRST_QUIET_S = 30.0
  QUIET_S = 300.0

  def __init__(self, clock: Stopwatch, last_step: int, total_steps: int,
               eval_every_steps: int | None):
    # eval_every_steps: None without validation.
    self._clock = clock
    self._last, self._total = last_step, total_steps
    self._eval_every = eval_every_steps
    self._quiet_since = None  # When the last line was printed, if any.
    self._quiet_s = self.FIRST_QUIET_S

  def _next_eval(self, done: int) -> int | None:
    if not self._eval_every or done >= self._total:
      return None
    step = min((done // self._eval_every + 1) * self._eval_every, self._total)
    return step if step <= self._last else None

  def line(self, done: int, steps_per_second: float | None = None) -> str:
    """'step 300/64,000 (0.5%), 4.2 steps/s, 4h25m left; validation ...'.

    Shows `steps_per_second` (the logged rate) if given, else the wall-clock
    one, which the times left use.
    """
    per_step = self._clock.wall_seconds_per_step(done)
    if steps_per_second is None and per_step:
      steps_per_second = 1 / per_step
    text = f'step {done:,}/{self._total:,} ({done / self._total:.1%})'
    if steps_per_second:
      text += f', {steps_per_second:.3g} steps/s'
    if per_step:
      text += f', {duration((self._last - done) * per_step)} left'
      if self._last < self._total:
        text += f' (stopping at step {self._last:,})'
      next_eval = self._next_eval(done)
      if next_eval is not None:
        text += (f'; validation at step {next_eval:,} in '
                 f'{duration((next_eval - done) * per_step)}')
    return text

  def report(self, done: int, steps_per_second: float | None = None) -> None:
    logging.info('%s', self.line(done, steps_per_second))
    self._quiet_since = time.monotonic()
    self._quiet_s = self.QUIET_S

  def heartbeat(self, done: int) -> None:
    """Reports `done` (steps the host knows are done: it never waits for the
    devices) if the console has been quiet too long."""
    if self._clock.wall_seconds_per_step(done) is None:
      return  # Not even a step after the first finished yet.
    quiet = (self._clock.seconds_since_first_step()
             if self._quiet_since is None else
             time.monotonic() - self._quiet_since)
    if quiet >= self._quiet_s:
      self.report(done)


class Profile:
  """A profiler trace of steps [first_step, first_step + num_steps) into
  <logdir>/plugins/profile. (clu.periodic_actions.Profile imports TensorFlow.)
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
