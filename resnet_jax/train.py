"""The training loop: one run from a config into a workdir.

`train_and_evaluate` validates everything it can before it writes anything,
loads the data into memory, restores the newest readable checkpoint if the
workdir has one, and trains with the jitted steps of parallel.py, evaluating,
logging and checkpointing as the config says. At the end it evaluates the
test split (when there is one) and writes `summary.json` into the workdir.

Every batch is a pure function of (seed, step), and so is its augmentation
(`fold_in(key, step)`); the metric sums since the last log and the best
validation accuracy are saved with each checkpoint. So a run killed at any
moment and rerun ends bit-identical to one never interrupted: same
parameters, same logged metrics, same summary.

The loop reads the metrics back from the device only when it logs, evaluates
or saves; it checks then that every step's loss was finite (and the state
before it is saved), and stops naming the first step that was not.
"""

import contextlib
import functools
import json
import os
import time

from absl import logging
from clu import metric_writers
from clu import metrics as clu_metrics
from clu import periodic_actions
from etils import epath
import jax
import jax.numpy as jnp
import numpy as np

from resnet_jax import augment
from resnet_jax import checkpoints
from resnet_jax import config_checks
from resnet_jax import curves
from resnet_jax import device_data
from resnet_jax import input_pipeline
from resnet_jax import models
from resnet_jax import optimizer
from resnet_jax import parallel
from resnet_jax import preemption
from resnet_jax import schedules
from resnet_jax import steps
from resnet_jax import train_state


def compute_metrics(sums) -> dict:
  """Mean loss and accuracy from the steps' metric sums (see steps.py)."""
  collection = clu_metrics.Collection.create_collection(
      loss=clu_metrics.Average(sums['loss'], sums['count']),
      accuracy=clu_metrics.Average(sums['correct'], sums['count']))
  return {name: float(value) for name, value in collection.compute().items()}


def _add(a, b):
  return b if a is None else jax.tree.map(lambda x, y: x + y, a, b)


def evaluate(eval_step, state, ds, dp, global_batch_size) -> dict:
  """Loss and accuracy over every example of `ds` exactly once."""
  sums = None
  batches = input_pipeline.eval_batches(
      ds, global_batch_size=global_batch_size,
      process_index=jax.process_index(), process_count=jax.process_count())
  for batch in input_pipeline.prefetch(batches, dp.put_batch):
    sums = _add(sums, eval_step(state, batch))
  sums = jax.device_get(sums)
  if int(sums['count']) != ds.num_examples:
    raise RuntimeError(f'evaluated {int(sums["count"])} examples of a split '
                       f'of {ds.num_examples}')
  return compute_metrics(sums)


def _check_workdir(workdir: str):
  """Fails if `workdir` could not be written; creates nothing."""
  if '://' in workdir:
    return  # An object store (gs://...): Orbax and TensorBoard write there.
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir={workdir} exists and is not a directory')
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f'--workdir={workdir} cannot be created: {existing} is '
                     'not a directory')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f'--workdir={workdir} is not writable ({existing} is '
                     'read-only to this user)')


def _write_json(path: epath.Path, value) -> None:
  # Written whole then renamed, so a crash never leaves half a file.
  partial = path.parent / f'{path.name}.partial'
  partial.write_text(json.dumps(value, indent=2))
  partial.replace(path)


def _load_data(config):
  """(train, eval or None, test or None) splits, each fully in memory."""
  data = config.data
  splits = [input_pipeline.load_split(data, split) if split else None
            for split in (data.train_split, data.eval_split, data.test_split)]
  num_classes = splits[0].num_classes
  if num_classes != config.model.num_classes:
    raise ValueError(
        f'config.model.num_classes={config.model.num_classes} but '
        f'{data.name} has {num_classes} classes')
  return splits


def _check_batch_sizes(config, dp):
  # Every device of every process gets an equal share of the global batch.
  shards = dp.num_devices
  for field in ('batch_size', 'eval_batch_size'):
    if config[field] % shards:
      raise ValueError(
          f'config.{field}={config[field]} does not divide over '
          f'{shards} devices ({jax.process_count()} processes x '
          f'{dp.num_local_devices}); use a multiple of {shards}')


def checkpoint_metadata(config, image_shape,
                        total_steps: int | None = None) -> dict:
  """What a checkpoint must agree with to be used by this config.

  'model', 'dataset' and 'image_shape' say what the parameters are: all that
  inference checks. With `total_steps`, 'training' adds what produced them:
  resuming under another seed, batch size, length, schedule, optimizer or
  data order would give a result that no single run gives, so the trainer
  refuses it. How the run is laid out (devices, parallelism, data on the
  device or not) and how often it logs or saves are not part of it.
  """
  model, data = config.model, config.data
  metadata = {
      'model': {k: model[k] for k in ('depth', 'block', 'preact', 'shortcut',
                                      'width', 'num_classes')},
      'dataset': data.name,
      'image_shape': list(image_shape),
      'optimizer': {'momentum': config.optimizer.momentum > 0},
  }
  if total_steps is not None:
    metadata['training'] = {
        'seed': config.seed,
        'batch_size': config.batch_size,
        'total_steps': total_steps,
        'label_smoothing': config.label_smoothing,
        'schedule': config.schedule.to_dict(),
        'optimizer': config.optimizer.to_dict(),
        'data': {k: data[k] for k in (
            'train_split', 'split_shuffle_seed', 'crop_padding',
            'random_flip', 'normalization', 'mean', 'std')},
        'model': {k: model[k] for k in ('bn_momentum', 'bn_epsilon', 'dtype')},
    }
  return metadata


def _flat(config) -> dict:
  """The config as flat scalars, for TensorBoard's hyperparameter view."""
  def walk(d, prefix):
    for k, v in d.items():
      if isinstance(v, dict):
        yield from walk(v, f'{prefix}{k}.')
      else:
        scalar = isinstance(v, (int, float, str, bool))
        yield f'{prefix}{k}', v if scalar else str(v)
  return dict(walk(config.to_dict(), ''))


class NonFiniteLossError(ValueError):
  """The training loss stopped being finite; nothing of it was saved."""


def _newest(checkpointer) -> str:
  step = checkpointer.latest_step()
  return ('no checkpoint was written' if step is None else
          f'the newest checkpoint, step {step}, is intact')


def _checked_sums(window: list, first_step: int, checkpointer) -> list[dict]:
  """The per-step metric sums of `window` on the host, all of them finite.

  Fetched only when the loop needs them (logging, evaluating, saving), so the
  host never waits for the device in between.
  """
  window = jax.device_get(window)
  for offset, sums in enumerate(window):
    if not np.isfinite(sums['loss']):
      step = first_step + offset
      raise NonFiniteLossError(
          f'the training loss is {float(sums["loss"])} at step {step}; '
          f'stopped without saving it ({_newest(checkpointer)}); lower '
          'config.schedule.base_learning_rate or add warm-up')
  return window


@jax.jit
def _all_finite(tree) -> jax.Array:
  leaves = [x for x in jax.tree.leaves(tree)
            if jnp.issubdtype(jnp.result_type(x), jnp.inexact)]
  return jnp.all(jnp.array([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _sum(total: dict | None, sums: dict) -> dict:
  # Accumulated on the host in float64, and saved with checkpoints in JSON
  # (which keeps float64 exactly), so a resumed run logs the same numbers.
  sums = {k: float(sums[k]) for k in ('loss', 'correct', 'count')}
  return sums if total is None else {k: total[k] + sums[k] for k in sums}


def train_and_evaluate(config, workdir: str, config_name: str = '',
                       stop_at_step: int | None = None) -> dict | None:
  """Trains and evaluates one run; returns the summary written to the workdir.

  Everything that can be checked is checked before the workdir is touched.
  A rerun with the same config resumes from the newest readable checkpoint
  and ends bit-identical to an uninterrupted run.

  With `stop_at_step`, training stops after that step with a checkpoint, as
  an interrupted run would, and returns None; rerunning resumes from there.

  Raises:
    ValueError: the config, data, workdir or checkpoints are unusable, or
      the loss became non-finite (NonFiniteLossError).
    preemption.Preempted: SIGTERM arrived; a checkpoint of the step reached
      was saved.
  """
  config_checks.validate(config)
  _check_workdir(workdir)
  input_pipeline.check_available(config.data)
  dp = parallel.DataParallel(config.parallelism)
  _check_batch_sizes(config, dp)
  train_ds, eval_ds, test_ds = _load_data(config)
  image_shape = train_ds.images.shape[1:]

  steps_per_epoch = input_pipeline.steps_per_epoch(train_ds.num_examples,
                                                   config.batch_size)
  total_steps = (round(config.num_epochs * steps_per_epoch)
                 if config.num_epochs > 0 else config.num_train_steps)
  learning_rate_fn = schedules.create_learning_rate_fn(
      config.schedule, config.batch_size, total_steps)
  tx = optimizer.create_optimizer(config.optimizer, learning_rate_fn)
  model = models.create_model(config.model, dp.axis_name)
  init_key, augment_key = jax.random.split(jax.random.key(config.seed))
  state = train_state.create_train_state(init_key, model, tx, image_shape)
  workdir_path = epath.Path(workdir)

  # Pending checkpoint writes and logs are finished even when a step fails.
  with contextlib.ExitStack() as cleanup:
    checkpointer = cleanup.enter_context(checkpoints.Checkpointer(
        workdir_path.absolute() / 'checkpoints',
        save_every_steps=config.checkpoint_every_steps,
        keep=config.keep_checkpoints,
        metadata=checkpoint_metadata(config, image_shape, total_steps)))
    state = checkpointer.restore(state)
    start_step = int(state.step)
    progress = checkpointer.progress(start_step) if start_step else {}
    if start_step:
      logging.info('Resuming from the checkpoint of step %d.', start_step)

    # Every check has passed: only now is the workdir written.
    workdir_path.mkdir(parents=True, exist_ok=True)
    if jax.process_index() == 0:
      _write_json(workdir_path / 'config.json', json.loads(
          config.to_json_best_effort()))
    checkpointer.tidy()
    state = dp.put_state(state)

    if config.data.normalization == 'measured':
      mean, std = input_pipeline.measure_channel_stats(train_ds)
    else:
      mean, std = config.data.mean, config.data.std
    train_step = functools.partial(
        steps.train_step, learning_rate_fn=learning_rate_fn,
        label_smoothing=config.label_smoothing,
        augment_fn=functools.partial(
            augment.augment, mean=mean, std=std,
            padding=config.data.crop_padding, flip=config.data.random_flip))
    batch_source = dict(
        seed=config.seed, start_step=start_step,
        global_batch_size=config.batch_size,
        process_index=jax.process_index(), process_count=jax.process_count())
    if config.data.on_device:
      data = (device_data.place(train_ds, dp),)
      train_step = dp.train_step(device_data.gathering(train_step),
                                 with_data=True)
      batches = device_data.row_batches(train_ds.num_examples, **batch_source)
    else:
      data = ()
      train_step = dp.train_step(train_step)
      batches = input_pipeline.train_batches(train_ds, **batch_source)
    batches = input_pipeline.prefetch(batches, dp.put_batch)
    eval_step = dp.eval_step(functools.partial(
        steps.eval_step, preprocess_fn=functools.partial(
            augment.normalize, mean=mean, std=std)))

    writer = metric_writers.create_default_writer(
        workdir, just_logging=jax.process_index() > 0)
    cleanup.callback(writer.close)
    if start_step == 0:
      writer.write_hparams(_flat(config))
    report_progress = periodic_actions.ReportProgress(
        num_train_steps=total_steps, writer=writer)
    logging.info('Training steps %d..%d of %d (%d per epoch of %d examples) on '
                 '%d device(s), %s, training split on the %s.', start_step,
                 total_steps, total_steps, steps_per_epoch,
                 train_ds.num_examples, dp.num_devices, config.parallelism,
                 'devices' if config.data.on_device else 'host')

    # What a resumed run must carry on with, saved with every checkpoint.
    train_sums = progress.get('train_sums')  # Since the last logged step.
    best = progress.get('best')  # [step, validation accuracy]
    val = None

    def validate(step):
      nonlocal val, best
      val = evaluate(eval_step, state, eval_ds, dp, config.eval_batch_size)
      writer.write_scalars(step, {'val_loss': val['loss'],
                                  'val_accuracy': val['accuracy']})
      if best is None or val['accuracy'] > best[1]:
        best = [step, val['accuracy']]

    if progress.get('eval_pending') and eval_ds:
      validate(start_step)  # Preempted before this step's evaluation.

    start_time = time.time()
    paused = 0.0  # Seconds spent evaluating and checkpointing.
    first_step_done = None
    window = []  # Metric sums of the steps since the last check, on device.
    last_step = total_steps if stop_at_step is None else min(stop_at_step,
                                                              total_steps)
    watcher = cleanup.enter_context(preemption.PreemptionWatcher())
    for step in range(start_step, last_step):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, sums = train_step(state, next(batches),
                                 jax.random.fold_in(augment_key, step), *data)
      window.append(sums)
      done = step + 1
      if first_step_done is None:  # Excludes compilation from the throughput.
        jax.block_until_ready(sums)
        first_step_done = time.time()
      report_progress(done)
      preempted = watcher.reached(done)
      log_due = done % config.log_every_steps == 0 or done == total_steps
      eval_due = bool(eval_ds) and (done % config.eval_every_steps == 0 or
                                    done == total_steps)
      # Decided here rather than by Orbax's should_save, which would query
      # the manager (and JAX's preemption sync point, asked above) every step.
      save_due = (done % config.checkpoint_every_steps == 0 or
                  done == last_step or preempted)
      if not (log_due or eval_due or save_due):
        continue

      pause_start = time.time()
      window = _checked_sums(window, done - len(window) + 1, checkpointer)
      for sums in window:
        train_sums = _sum(train_sums, sums)
      if log_due:
        means = compute_metrics(train_sums)
        writer.write_scalars(done, {
            'train_loss': means['loss'], 'train_accuracy': means['accuracy'],
            'learning_rate': float(window[-1]['learning_rate'])})
        train_sums = None
      window = []
      # A preempted job has seconds left: it saves first, evaluates on resume.
      if eval_due and not preempted:
        validate(done)
      if save_due:
        saved_state = dp.get_state(state)
        if not _all_finite(saved_state):
          raise NonFiniteLossError(
              f'the train state has non-finite values after step {done}; '
              f'stopped without saving it ({_newest(checkpointer)})')
        checkpointer.save(
            done, saved_state,
            progress={'train_sums': train_sums, 'best': best,
                      'eval_pending': eval_due and preempted},
            val_accuracy=val['accuracy'] if eval_due and not preempted
            else None)
      if preempted:
        checkpointer.wait_until_finished()
        raise preemption.Preempted(done, watcher.seconds_since_signal())
      paused += time.time() - pause_start
    jax.block_until_ready(state)
    end_time = time.time()
    # The last checkpoint is on disk before anything says the run is done.
    checkpointer.wait_until_finished()
    if last_step < total_steps:
      return None

    summary = {
        'config': config_name,
        'dataset': config.data.name,
        'steps': total_steps,
        'epochs': total_steps / steps_per_epoch,
        'batch_size': config.batch_size,
        'train_examples': train_ds.num_examples,
    }
    if eval_ds:
      if val is None:  # Resumed at the end: evaluate what was restored.
        val = evaluate(eval_step, state, eval_ds, dp, config.eval_batch_size)
      summary |= {'eval_examples': eval_ds.num_examples,
                  'final_val_accuracy': val['accuracy'],
                  'final_val_loss': val['loss']}
      if best:
        summary |= {'best_val_accuracy': best[1], 'best_val_step': best[0]}
    if test_ds:
      test = evaluate(eval_step, state, test_ds, dp, config.eval_batch_size)
      writer.write_scalars(total_steps, {'test_loss': test['loss'],
                                         'test_accuracy': test['accuracy']})
      summary |= {'test_examples': test_ds.num_examples,
                  'test_accuracy': test['accuracy'], 'test_loss': test['loss']}
    # Throughput of training alone: compilation (the first step), evaluation
    # and checkpointing excluded.
    timed_steps = total_steps - start_step - 1
    images_per_second = None
    if timed_steps > 0:
      images_per_second = round(timed_steps * config.batch_size / (
          end_time - first_step_done - paused), 1)
    summary |= {
        'steps_this_run': total_steps - start_step,
        'wall_seconds': round(time.time() - start_time, 2),
        'train_images_per_second': images_per_second,
    }
    if jax.process_index() == 0:
      _write_json(workdir_path / 'summary.json', summary)
      writer.flush()
      try:
        curves.write_curves(workdir)
      except Exception as e:  # pylint: disable=broad-except
        # A picture is not worth failing a finished run for.
        logging.warning('Could not draw the training curves: %s', e)
    logging.info('Summary: %s', json.dumps(summary))
    return summary
