"""The training loop: one run from a config into a workdir.

`train_and_evaluate` validates everything it can before it writes anything,
loads the data into memory, builds the run (experiment.py), restores the
newest readable checkpoint if the workdir has one, and trains, evaluating,
logging and checkpointing as the config says. At the end it evaluates the
test split (when there is one) and writes `summary.json` into the workdir.

Every batch is a pure function of (seed, step), and so is its augmentation;
what the loop itself carries from step to step (`LoopState`) is saved with
each checkpoint. So a run killed at any moment and rerun ends bit-identical
to one never interrupted: same parameters, same logged metrics, same summary.

The loop reads the metrics back from the device only when it logs, evaluates
or saves; it checks then that every step's loss was finite (and the state
before it is saved), and stops naming the first step that was not.
"""

import contextlib
import dataclasses
import json

from absl import logging
from clu import parameter_overview
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import checkpoints
from resnet_jax import config_checks
from resnet_jax import datasets
from resnet_jax import experiment
from resnet_jax import metric_writer
from resnet_jax import monitoring
from resnet_jax import preemption
from resnet_jax import workdir as workdir_lib


class NonFiniteLossError(ValueError):
  """The training loss stopped being finite; nothing of it was saved."""


@dataclasses.dataclass
class LoopState:
  """What the loop carries between steps, saved with every checkpoint."""
  # Metric sums of the steps since the last logged one, accumulated on the
  # host in float64; JSON keeps them exactly, so a resumed run logs the same.
  train_sums: dict[str, float] | None = None
  best_step: int | None = None  # The best validation accuracy so far.
  best_accuracy: float | None = None
  eval_pending: bool = False  # Preempted before this step's validation.

  def add(self, sums: dict) -> None:
    sums = {k: float(sums[k]) for k in ('loss', 'correct', 'count')}
    self.train_sums = sums if self.train_sums is None else {
        k: self.train_sums[k] + sums[k] for k in sums}

  def take_train_metrics(self) -> dict[str, float]:
    """Mean loss and accuracy since the last call; restarts the sums."""
    means = experiment.compute_metrics(self.train_sums)
    self.train_sums = None
    return {'train_loss': means['loss'], 'train_accuracy': means['accuracy']}

  def validated(self, step: int, accuracy: float) -> None:
    if self.best_accuracy is None or accuracy > self.best_accuracy:
      self.best_step, self.best_accuracy = step, accuracy


def _flat(config) -> dict:
  """The config as flat scalars, for TensorBoard's hyperparameter view."""
  return {k: v if isinstance(v, (int, float, str, bool)) else str(v)
          for k, v in experiment.flatten(config.to_dict()).items()}


def _newest(checkpointer) -> str:
  step = checkpointer.latest_step()
  return ('no checkpoint was written' if step is None else
          f'the newest checkpoint, step {step}, is intact')


def _checked_sums(window: list, first_step: int, checkpointer) -> list[dict]:
  """The per-step metric sums of `window` on the host, all of them finite."""
  window = jax.device_get(window)
  for offset, sums in enumerate(window):
    if not np.isfinite(sums['loss']):
      raise NonFiniteLossError(
          f'the training loss is {float(sums["loss"])} at step '
          f'{first_step + offset}; stopped without saving it '
          f'({_newest(checkpointer)}); lower '
          'config.schedule.base_learning_rate or add warm-up')
  return window


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [x for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _save(checkpointer, exp, step, state, loop, val_accuracy=None):
  saved_state = exp.dp.get_state(state)
  if not _all_finite(saved_state):
    raise NonFiniteLossError(
        f'the train state has non-finite values after step {step}; stopped '
        f'without saving it ({_newest(checkpointer)})')
  checkpointer.save(step, saved_state, progress=dataclasses.asdict(loop),
                    val_accuracy=val_accuracy)


def summarize(exp, config_name: str, splits, results: dict, loop: LoopState,
              start_step: int, clock: monitoring.Stopwatch) -> dict:
  """summary.json: what ran, on what, and how well."""
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
  if eval_ds:
    summary |= {'eval_examples': eval_ds.num_examples,
                'final_val_accuracy': results['val']['accuracy'],
                'final_val_loss': results['val']['loss']}
    if loop.best_step is not None:
      summary |= {'best_val_accuracy': loop.best_accuracy,
                  'best_val_step': loop.best_step}
  if test_ds:
    summary |= {'test_examples': test_ds.num_examples,
                'test_accuracy': results['test']['accuracy'],
                'test_loss': results['test']['loss']}
  images_per_second = clock.images_per_second(exp.total_steps,
                                              config.batch_size)
  return summary | {
      'steps_this_run': exp.total_steps - start_step,
      'wall_seconds': round(clock.wall_seconds, 2),
      # Training alone: compilation, evaluation and saving excluded.
      'train_images_per_second': images_per_second and round(
          images_per_second, 1),
      'devices': len(devices),
      'process_count': jax.process_count(),
      'platform': devices[0].platform,
      'device_kind': devices[0].device_kind,
      'jax_version': jax.__version__,
  }


def train_and_evaluate(config, workdir: str, config_name: str = '',
                       stop_at_step: int | None = None) -> dict | None:
  """Trains and evaluates one run; returns the summary written to the workdir.

  Everything that can be checked is checked before the workdir is touched.
  With `stop_at_step`, training stops after that step with a checkpoint, as
  an interrupted run would, and returns None; rerunning resumes from there.

  Raises:
    ValueError: the config, data, workdir or checkpoints are unusable, or
      the loss became non-finite (NonFiniteLossError).
    preemption.Preempted: SIGTERM or SIGINT arrived; a checkpoint of the
      step reached was saved.
  """
  config_checks.validate(config)
  workdir_lib.check(workdir)
  # Pending checkpoint writes and logs are finished even when a step fails.
  with contextlib.ExitStack() as cleanup:
    # Process 0 holds the workdir for the run; at once if it exists.
    lock = (cleanup.enter_context(workdir_lib.Lock(workdir))
            if jax.process_index() == 0 else None)
    datasets.check_available(config.data)
    splits = experiment.load_splits(config)
    train_ds, eval_ds, test_ds = splits
    exp = experiment.build(config, train_ds=train_ds)
    workdir_path = epath.Path(workdir)
    total_steps = exp.total_steps
    last_step = min(stop_at_step or total_steps, total_steps)
    checkpointer = cleanup.enter_context(checkpoints.Checkpointer(
        workdir_path.absolute() / 'checkpoints', keep=config.keep_checkpoints,
        metadata=exp.checkpoint_metadata()))
    state, progress = checkpointer.restore(exp.init_state(),
                                           with_progress=True)
    start_step = int(state.step)
    if start_step:
      logging.info('Resuming from the checkpoint of step %d.', start_step)
    logging.info('ResNet-%d: %s parameters.', config.model.depth,
                 f'{parameter_overview.count_parameters(state.params):,}')
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
      workdir_lib.write_json(workdir_path / 'config.json',
                             json.loads(config.to_json_best_effort()))
    checkpointer.tidy()
    state = exp.dp.put_state(state)
    writer = cleanup.enter_context(metric_writer.create_writer(
        workdir, just_logging=jax.process_index() > 0))
    if start_step == 0:
      writer.write_hparams(_flat(config))
    logging.info('Training steps %d..%d of %d (%d per epoch of %d examples) '
                 'on %d device(s), %s, training split on the %s.',
                 start_step + 1, last_step, total_steps, exp.steps_per_epoch,
                 train_ds.num_examples, exp.dp.num_devices, config.parallelism,
                 'devices' if config.data.on_device else 'host')

    results = {}

    def validate(step, state):
      results['val'] = exp.evaluate(state, eval_ds)
      writer.write_scalars(step, {'val_loss': results['val']['loss'],
                                  'val_accuracy': results['val']['accuracy']})
      loop.validated(step, results['val']['accuracy'])
      return results['val']['accuracy']

    if loop.eval_pending and eval_ds:
      loop.eval_pending = False
      validate(start_step, state)  # Preempted before this step's evaluation.

    clock = monitoring.Stopwatch()
    profile = cleanup.enter_context(contextlib.closing(monitoring.Profile(
        workdir, config.profile.first_step, config.profile.num_steps)))
    watcher = cleanup.enter_context(preemption.PreemptionWatcher())
    batches = exp.batches(start_step)
    window = []  # Metric sums of the steps since the last check, on device.
    for step in range(start_step, last_step):
      profile.before_step(step, state)
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, sums = exp.train_step(state, next(batches), step)
      window.append(sums)
      done = step + 1
      clock.step_done(done, sums)
      preempted = watcher.reached(done)
      log_due = done % config.log_every_steps == 0 or done == total_steps
      eval_due = bool(eval_ds) and (done % config.eval_every_steps == 0 or
                                    done == total_steps)
      save_due = (done % config.checkpoint_every_steps == 0 or
                  done == last_step or preempted)
      if not (log_due or eval_due or save_due):
        continue
      with clock.pause():
        checkpointer.check_for_errors()  # A save failing in the background.
        for sums in _checked_sums(window, done - len(window) + 1,
                                  checkpointer):
          loop.add(sums)
        if log_due:
          writer.write_scalars(done, loop.take_train_metrics() | {
              'learning_rate': float(window[-1]['learning_rate']),
              'steps_per_second': clock.steps_per_second(done) or 0.0})
        window = []
        # A preempted job has seconds left: it saves first, evaluates on
        # resume.
        loop.eval_pending = eval_due and preempted
        accuracy = validate(done, state) if eval_due and not preempted else None
        if save_due:
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
        writer.write_scalars(total_steps, {
            'test_loss': results['test']['loss'],
            'test_accuracy': results['test']['accuracy']})
    summary = summarize(exp, config_name, splits, results, loop, start_step,
                        clock)
    if jax.process_index() == 0:
      workdir_lib.write_json(workdir_path / 'summary.json', summary)
      writer.flush()
      _draw_curves(workdir)
    logging.info('Summary: %s', json.dumps(summary))
    return summary


def _draw_curves(workdir: str) -> None:
  from resnet_jax import curves  # pylint: disable=g-import-not-at-top
  try:
    curves.write_curves(workdir)
  except Exception as e:  # pylint: disable=broad-except
    # A picture is not worth failing a finished run for.
    logging.warning('Could not draw the training curves: %s', e)
