"""The training loop: one run from a config into a workdir.

`train_and_evaluate` checks everything it can before it writes anything,
restores the newest readable checkpoint, trains (validating, logging and
saving when `due`), tests at the end and writes summary.json. Every batch is
a function of (seed, step) and the loop's own state (`LoopState`) is saved
with each checkpoint, so a run killed at any moment and rerun ends
bit-identical. Calls of config.steps_per_call steps end wherever something is
due, so the result does not depend on it. Metrics come back from the device
only when due; a non-finite loss stops the run naming its step, unsaved.
"""

from collections.abc import Callable, Iterator
import contextlib
import dataclasses
import json
import time

from absl import logging
from clu import parameter_overview
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import utils
from resnet_jax.data import datasets
from resnet_jax.run import checkpoints
from resnet_jax.run import config_checks
from resnet_jax.run import experiment
from resnet_jax.run import metric_writer
from resnet_jax.run import monitoring
from resnet_jax.run import parallel
from resnet_jax.run import preemption
from resnet_jax.run import runs
from resnet_jax.run import workdir as workdir_lib


class NonFiniteLossError(ValueError):
  """The training loss stopped being finite; nothing of it was saved."""


@dataclasses.dataclass
class LoopState:
  """What the loop carries between steps, saved with every checkpoint."""
  # Each run's metric sums of the steps since the last logged one,
  # accumulated on the host in float64; JSON keeps them exactly, so a resumed
  # run logs the same.
  train_sums: dict[str, list[float]] | None = None
  # The best validation accuracy (the runs' mean) so far.
  best_step: int | None = None
  best_accuracy: float | None = None
  eval_pending: bool = False  # Preempted before this step's validation.
  # Wall time of every process of this run up to this checkpoint: what a
  # resumed run cost in all (summary.json's total_wall_seconds).
  wall_seconds: float = 0.0

  def add(self, sums: dict) -> None:
    """Adds one step's sums, leaves (runs,)."""
    sums = {k: [float(x) for x in sums[k]] for k in ('loss', 'correct',
                                                     'count')}
    self.train_sums = sums if self.train_sums is None else {
        k: [a + b for a, b in zip(self.train_sums[k], sums[k])] for k in sums}

  def take_train_metrics(self) -> list[dict[str, float]]:
    """Each run's mean loss and accuracy since the last call; restarts."""
    per_run = [experiment.compute_metrics(
        {k: sums[i] for k, sums in self.train_sums.items()})
               for i in range(len(self.train_sums['count']))]
    self.train_sums = None
    return [{'train_loss': m['loss'], 'train_accuracy': m['accuracy']}
            for m in per_run]

  def validated(self, step: int, accuracy: float) -> None:
    if self.best_accuracy is None or accuracy > self.best_accuracy:
      self.best_step, self.best_accuracy = step, accuracy


def _flat(config) -> dict:
  """The config as flat scalars, for TensorBoard's hyperparameter view."""
  return {k: v if isinstance(v, (int, float, str, bool)) else str(v)
          for k, v in utils.flatten(config.to_dict()).items()}


def _newest(checkpointer) -> str:
  step = checkpointer.latest_step()
  return ('no checkpoint was written' if step is None else
          f'the newest checkpoint, step {step}, is intact')


def call_lengths(start: int, stop: int, steps_per_call: int,
                 due: Callable[[int], bool]) -> Iterator[tuple[int, int]]:
  """(first step, number of steps) of each training call from start to stop.

  A call takes at most `steps_per_call` steps and ends after any step s (the
  number of steps done) where `due(s)`: whatever the calls' length, the loop
  stops at the same steps.
  """
  step = start
  while step < stop:
    length = 1
    while (length < steps_per_call and step + length < stop and
           not due(step + length)):
      length += 1
    yield step, length
    step += length


def _checked_sums(window: list, first_step: int, checkpointer) -> list[dict]:
  """The per-step metric sums of `window` on the host, all of them finite.

  `window` holds the calls' sums, leaves (steps, runs); each step's come back
  with leaves (runs,).
  """
  window = [{k: v[t] for k, v in sums.items()}
            for sums in jax.device_get(window)
            for t in range(len(sums['loss']))]
  for offset, sums in enumerate(window):
    bad = np.flatnonzero(~np.isfinite(sums['loss']))
    if bad.size:
      run = f' (run {bad[0]})' if len(sums['loss']) > 1 else ''
      raise NonFiniteLossError(
          f'the training loss is {float(sums["loss"][bad[0]])} at step '
          f'{first_step + offset}{run}; stopped without saving it '
          f'({_newest(checkpointer)}); lower '
          'config.schedule.base_learning_rate or add warm-up')
  return window


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [x for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _save(checkpointer, exp, step, state, loop, val_accuracy=None,
          replace=False):
  saved_state = exp.dp.get_state(state)
  if not _all_finite(saved_state):
    raise NonFiniteLossError(
        f'the train state has non-finite values after step {step}; stopped '
        f'without saving it ({_newest(checkpointer)})')
  checkpointer.save(step, saved_state, progress=dataclasses.asdict(loop),
                    val_accuracy=val_accuracy, replace=replace)


def train_and_evaluate(config, workdir: str, config_name: str = '',
                       stop_at_step: int | None = None,
                       set_up_process: bool = False) -> dict | None:
  """Trains and evaluates one run; returns the summary written to the workdir.

  Everything that can be checked is checked before the workdir is touched.
  With `stop_at_step`, training stops after that step with a checkpoint, as
  an interrupted run would, and returns None; rerunning resumes from there.
  With `set_up_process` (a command's own process), the config, once checked,
  sets up XLA's CPU devices, the compilation cache and a multi-host job,
  before anything starts JAX's backends.

  Raises:
    ValueError: the config, data, workdir or checkpoints are unusable, or
      the loss became non-finite (NonFiniteLossError).
    preemption.Preempted: SIGTERM or SIGINT arrived; a checkpoint of the
      step reached was saved.
  """
  config_checks.validate(config)
  if set_up_process:
    parallel.configure_cpu_devices(config)
    parallel.initialize_distributed(config)
    if config.compilation_cache_dir:  # A restart loads the compiled steps.
      _use_compilation_cache(config.compilation_cache_dir)
  workdir_lib.check(workdir, config.data)
  # The layout needs no data: a batch that does not divide over the devices
  # is refused before the data loads (TensorFlow's import alone: ~10 s).
  dp = parallel.DataParallel(config.parallelism)
  experiment.check_batch_sizes(config, dp)
  # Pending checkpoint writes and logs are finished even when a step fails.
  with contextlib.ExitStack() as cleanup:
    # Process 0 holds the workdir for the run; at once if it exists.
    lock = (cleanup.enter_context(workdir_lib.Lock(workdir))
            if jax.process_index() == 0 else None)
    splits = _load_data(config)
    train_ds, eval_ds, test_ds = splits
    exp = experiment.build(config, dp=dp, train_ds=train_ds)
    workdir_path = epath.Path(workdir)
    total_steps = exp.total_steps
    last_step = min(stop_at_step or total_steps, total_steps)
    checkpointer = cleanup.enter_context(checkpoints.Checkpointer(
        workdir_path.absolute() / 'checkpoints', keep=config.keep_checkpoints,
        metadata=exp.checkpoint_metadata()))
    if checkpointer.all_steps():
      # A resume: the checkpoint gives every value, so the target is only
      # shapes and dtypes (initialising takes seconds).
      target = exp.abstract_state()
    else:
      logging.info('Initialising the model...')
      start = time.monotonic()
      target = exp.init_state()
      logging.info('Initialised the model in %.1f s.',
                   time.monotonic() - start)
    state, progress = checkpointer.restore(target, with_progress=True)
    start_step = int(state.step[0])
    if start_step:
      logging.info('Resuming from the checkpoint of step %d.', start_step)
    num_params = parameter_overview.count_parameters(
        runs.take(state.params, 0))
    logging.info('ResNet-%d: %s parameters%s.', config.model.depth,
                 f'{num_params:,}',
                 f' in each of {exp.num_runs} runs (seeds '
                 f'{runs.seeds(config)})' if exp.num_runs > 1 else '')
    try:
      loop = LoopState(**progress)
    except TypeError:
      raise ValueError(f'checkpoint {start_step} holds progress of another '
                       f'trainer version ({progress}); start afresh with a '
                       'new --workdir') from None
    # Every check has passed: only now is the workdir written.
    workdir_path.mkdir(parents=True, exist_ok=True)
    if lock:
      lock.announce()
      recorded = json.loads(config.to_json_best_effort())
      # The data's place made absolute: readers start in any directory.
      recorded['data']['data_dir'] = datasets.local_dir(
          config.data.data_dir) or ''
      workdir_lib.write_json(workdir_path / 'config.json', recorded)
    checkpointer.tidy()
    state = exp.dp.put_state(state)
    writer = cleanup.enter_context(metric_writer.RunsWriter(
        workdir, exp.num_runs, just_logging=jax.process_index() > 0))
    if start_step == 0:
      writer.write_hparams(_flat(config))
    if start_step >= last_step:  # Nothing to train.
      logging.info(
          'The run is already finished (step %d of %d): nothing to train; '
          'its summary.json is written again.' if start_step >= total_steps
          else 'Already at step %d (of %d): nothing to train before the '
          'stop.', start_step, total_steps)
    else:
      logging.info('Training steps %d..%d of %d (%d per epoch of %d '
                   'examples) on %d device(s), %s, training split on the %s.',
                   start_step + 1, last_step, total_steps,
                   exp.steps_per_epoch, train_ds.num_examples,
                   exp.dp.num_devices, config.parallelism,
                   'devices' if config.data.on_device else 'host')

    results = {}

    def validate(step, state):
      results['val'] = exp.evaluate(state, eval_ds)
      writer.write_scalars(step, [{'val_loss': run['loss'],
                                   'val_accuracy': run['accuracy']}
                                  for run in results['val']])
      accuracy = float(np.mean([run['accuracy'] for run in results['val']]))
      loop.validated(step, accuracy)
      return accuracy

    if loop.eval_pending and eval_ds:
      loop.eval_pending = False
      # Preempted before this step's validation: its checkpoint, saved
      # without the accuracy, is saved again with it if it is the best.
      accuracy = validate(start_step, state)
      if loop.best_step == start_step:
        _save(checkpointer, exp, start_step, state, loop, accuracy,
              replace=True)

    clock = monitoring.Stopwatch(loop.wall_seconds)
    progress = monitoring.Progress(
        clock, last_step, total_steps,
        config.eval_every_steps if eval_ds else None)
    profile = cleanup.enter_context(contextlib.closing(monitoring.Profile(
        workdir, config.profile.first_step, config.profile.num_steps)))
    watcher = cleanup.enter_context(preemption.PreemptionWatcher())

    def due(done, preempted=False):
      """What is due after step `done`: (log, validation, checkpoint)."""
      return (done % config.log_every_steps == 0 or done == total_steps,
              bool(eval_ds) and (done % config.eval_every_steps == 0 or
                                 done == total_steps),
              done % config.checkpoint_every_steps == 0 or
              done == last_step or preempted)

    calls = list(call_lengths(
        start_step, last_step, config.steps_per_call,
        lambda done: any(due(done)) or done in profile.boundaries))
    batches = exp.batches(calls)
    # Metric sums of the calls since step window_start, on the device.
    window, window_start = [], start_step
    for first, length in calls:
      profile.before_step(first, state)
      compiling = first == start_step  # The call returns once compiled.
      if compiling:
        logging.info('Compiling the training step...')
        compile_start = time.monotonic()
      with jax.profiler.StepTraceAnnotation('train', step_num=first):
        state, sums = exp.train_steps(state, next(batches), first)
      if compiling:
        logging.info('Compiled the training step in %.1f s; training.',
                     time.monotonic() - compile_start)
      window.append(sums)
      if len(window) > 1:
        # One call queued behind the running one keeps the devices busy; a
        # longer queue would only delay the save that a signal asks for.
        jax.block_until_ready(window[-2])
        progress.heartbeat(first)  # The steps the host knows are done.
      done = first + length
      clock.step_done(done, sums)
      preempted = watcher.reached(done)
      log_due, eval_due, save_due = due(done, preempted)
      if not (log_due or eval_due or save_due):
        continue
      # The calls run on the devices after the host has moved on: their time
      # is training time, so it ends before the pause does.
      jax.block_until_ready(window)
      with clock.pause():
        checkpointer.check_for_errors()  # A save failing in the background.
        window = _checked_sums(window, window_start + 1, checkpointer)
        for sums in window:
          loop.add(sums)
        if log_due:
          steps_per_second = clock.steps_per_second(done)
          writer.write_scalars(done, loop.take_train_metrics(), {
              'learning_rate': float(window[-1]['learning_rate'][0]),
              'steps_per_second': steps_per_second or 0.0})
          progress.report(done, steps_per_second)
        window, window_start = [], done
        # A preempted job has seconds left: it saves first, evaluates on
        # resume.
        loop.eval_pending = eval_due and preempted
        accuracy = validate(done, state) if eval_due and not preempted else None
        # The best validation so far is saved, with its accuracy, wherever
        # it falls: summary.json's best_val_step is the checkpoint kept as
        # the best, which --checkpoint=best loads.
        if save_due or accuracy is not None and loop.best_step == done:
          loop.wall_seconds = clock.total_wall_seconds
          _save(checkpointer, exp, done, state, loop, accuracy)
        if preempted:
          checkpointer.wait_until_finished()
          raise preemption.Preempted(done, watcher.seconds_since_signal(),
                                     watcher.signum)
    jax.block_until_ready(state)
    # The last checkpoint is on disk before anything says the run is done.
    checkpointer.wait_until_finished()
    if last_step < total_steps:
      return None
    with clock.pause():
      if eval_ds and 'val' not in results:  # Resumed at the end.
        results['val'] = exp.evaluate(state, eval_ds)
      if test_ds:
        results['test'] = exp.evaluate(state, test_ds)
        writer.write_scalars(total_steps, [
            {'test_loss': run['loss'], 'test_accuracy': run['accuracy']}
            for run in results['test']])
    summary = workdir_lib.summarize(exp, config_name, splits, results, loop,
                                    start_step, clock)
    if jax.process_index() == 0:
      workdir_lib.write_summary(workdir_path, summary)
      writer.flush()
    logging.info('Summary: %s', json.dumps(summary))
    return summary


def _use_compilation_cache(directory: str) -> None:
  """Caches compiled programs in `directory`, but not in a job of several
  CPU processes: there, on JAX 0.12.1, processes that read their training
  step back from the cache hung in its first all-reduce, a restarted pair
  every time (JAX 0.10.2 did not; tests/test_multiprocess.py)."""
  if jax.process_count() > 1 and jax.default_backend() == 'cpu':
    logging.info('Compiled programs are not cached: a job of several CPU '
                 'processes compiles afresh.')
    return
  jax.config.update('jax_compilation_cache_dir', utils.expand_path(directory))


def _load_data(config) -> list:
  """The splits (experiment.load_splits), saying what loads and how long.

  Decoding an image folder of CIFAR's size takes half a minute on a small
  CPU: the user sees what the trainer is doing meanwhile.
  """
  data = config.data
  named = [(data[field], what) for field, what in zip(
      datasets.SPLIT_FIELDS, ('training', 'validation', 'testing'))
           if data[field]]
  logging.info('Loading the data: %s %s...', data.name,
               ', '.join(f'{split} for {what}' for split, what in named))
  start = time.monotonic()
  datasets.check_available(data)
  splits = experiment.load_splits(config)
  logging.info('Loaded the data in %.1f s: %s.', time.monotonic() - start,
               ', '.join(f'{ds.num_examples:,} {what}' for ds, what in zip(
                   splits, ('training', 'validation', 'test')) if ds) +
               ' examples')
  return splits
