"""The training loop: one run from a config into a workdir.

`train_and_evaluate` validates everything it can before any work, loads the
data into memory, restores the latest checkpoint if the workdir has one, and
trains with the jitted steps of parallel.py, evaluating, logging and
checkpointing as the config says. At the end it evaluates the test split
(when there is one) and writes `summary.json` into the workdir.

Every batch is a pure function of (seed, step), and so is its augmentation
(`fold_in(key, step)`), so a resumed run continues exactly where the
checkpointed one stood.
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
import jax
import numpy as np

from resnet_jax import augment
from resnet_jax import checkpoints
from resnet_jax import config_checks
from resnet_jax import input_pipeline
from resnet_jax import models
from resnet_jax import optimizer
from resnet_jax import parallel
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
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir={workdir} exists and is not a directory')
  os.makedirs(workdir, exist_ok=True)
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise ValueError(f'--workdir={workdir} is not writable')


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
  # Every process feeds its devices an equal share of the global batch.
  shards = jax.process_count() * dp.num_devices
  if config.parallelism == 'jit' and jax.process_count() > 1:
    raise ValueError("config.parallelism='jit' runs on one device of one "
                     'process; use pmap or shard_map with several processes')
  for field in ('batch_size', 'eval_batch_size'):
    if config[field] % shards:
      raise ValueError(
          f'config.{field}={config[field]} does not divide over '
          f'{shards} devices ({jax.process_count()} processes x '
          f'{dp.num_devices}); use a multiple of {shards}')


def checkpoint_metadata(config, image_shape) -> dict:
  """What a checkpoint must agree with to be resumed by this config."""
  model = config.model
  return {
      'model': {k: model[k] for k in ('depth', 'block', 'preact', 'shortcut',
                                      'width', 'num_classes')},
      'dataset': config.data.name,
      'image_shape': list(image_shape),
      'optimizer': {'momentum': config.optimizer.momentum > 0},
  }


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


def train_and_evaluate(config, workdir: str, config_name: str = '',
                       stop_at_step: int | None = None) -> dict | None:
  """Trains and evaluates one run; returns the summary written to the workdir.

  With `stop_at_step`, training stops after that step with a checkpoint, as
  an interrupted run would, and returns None; rerunning resumes from there.
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

  # Pending checkpoint writes and logs are finished even when a step fails.
  with contextlib.ExitStack() as cleanup:
    checkpointer = cleanup.enter_context(checkpoints.Checkpointer(
        os.path.join(os.path.abspath(workdir), 'checkpoints'),
        save_every_steps=config.checkpoint_every_steps,
        keep=config.keep_checkpoints,
        metadata=checkpoint_metadata(config, image_shape)))
    checkpointer.check_compatible()
    if checkpointer.latest_step() is not None:
      state = checkpointer.restore(state)
      logging.info('Resuming from the checkpoint of step %d.', int(state.step))
    start_step = int(state.step)
    state = dp.put_state(state)

    if config.data.normalization == 'measured':
      mean, std = input_pipeline.measure_channel_stats(train_ds)
    else:
      mean, std = config.data.mean, config.data.std
    train_step = dp.train_step(functools.partial(
        steps.train_step, learning_rate_fn=learning_rate_fn,
        label_smoothing=config.label_smoothing,
        augment_fn=functools.partial(
            augment.augment, mean=mean, std=std,
            padding=config.data.crop_padding, flip=config.data.random_flip)))
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
    batches = input_pipeline.prefetch(
        input_pipeline.train_batches(
            train_ds, seed=config.seed, start_step=start_step,
            global_batch_size=config.batch_size,
            process_index=jax.process_index(),
            process_count=jax.process_count()),
        dp.put_batch)
    logging.info('Training steps %d..%d of %d (%d per epoch of %d examples) on '
                 '%d device(s), %s.', start_step, total_steps, total_steps,
                 steps_per_epoch, train_ds.num_examples, dp.num_devices,
                 config.parallelism)

    start_time = time.time()
    paused = 0.0  # Seconds spent evaluating and checkpointing.
    first_step_done = None
    train_sums, val, best = None, None, None
    last_step = total_steps if stop_at_step is None else min(stop_at_step,
                                                              total_steps)
    for step in range(start_step, last_step):
      with jax.profiler.StepTraceAnnotation('train', step_num=step):
        state, sums = train_step(state, next(batches),
                                 jax.random.fold_in(augment_key, step))
      train_sums = _add(train_sums, sums)
      done = step + 1
      if first_step_done is None:  # Excludes compilation from the throughput.
        jax.block_until_ready(sums)
        first_step_done = time.time()
      report_progress(done)
      if done % config.log_every_steps == 0 or done == total_steps:
        train_sums = jax.device_get(train_sums)
        means = compute_metrics(train_sums)
        writer.write_scalars(done, {
            'train_loss': means['loss'], 'train_accuracy': means['accuracy'],
            'learning_rate': float(sums['learning_rate'])})
        train_sums = None
      pause_start = time.time()
      if eval_ds and (done % config.eval_every_steps == 0 or done == total_steps):
        val = evaluate(eval_step, state, eval_ds, dp, config.eval_batch_size)
        writer.write_scalars(done, {'val_loss': val['loss'],
                                    'val_accuracy': val['accuracy']})
        if best is None or val['accuracy'] > best[1]:
          best = (done, val['accuracy'])
      # Taking pmap's copy off device 0 costs a dispatch per array: only
      # when saving.
      checkpointer.maybe_save(done, lambda: dp.get_state(state))
      paused += time.time() - pause_start
    jax.block_until_ready(state)
    end_time = time.time()
    checkpointer.save(last_step, dp.get_state(state))
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
      with open(os.path.join(workdir, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    logging.info('Summary: %s', json.dumps(summary))
    return summary
