"""Times the train and eval steps, the input pipeline and the training loop.

  python -m experiments.benchmark --config=configs/resnet20.py
  python -m experiments.benchmark --config=configs/resnet20.py \
      --config.model.dtype=bfloat16 --config.batch_size=1024 --input=device

Each figure is the median over timed repetitions after compiling and warming
up; compile time is that of the first train step (tracing, compiling and
running it once). What is timed:

- train step: the jitted (or pmapped) train step alone on a batch already on
  the device. With --input=synthetic that batch is float32 noise and the step
  does no augmentation (the bare network); otherwise it is uint8 pixels and
  the step augments them as in training.
- eval step: the same for the eval step.
- pipeline (--input=host/device): producing and transferring one batch
  without any step: the host pipeline's gather and copy, or the device
  path's row indices.
- loop (--input=host/device): the training loop as train.py runs it
  (prefetching, the step, metrics kept on the device) over --loop_steps
  steps, and the time of one epoch of --num_examples images at that rate.

The data is random uint8 images held in memory (--num_examples of them), so
nothing here imports TensorFlow; the pipeline's cost does not depend on the
pixels. Peak memory is the device's allocator peak where JAX reports one
(GPU, TPU), else the process's peak resident memory. On a GPU, model FLOPs
utilisation is XLA's FLOP count of one train step over the step time, against
the card's dense peak for the dtype (float32 matmuls run as TF32 there).

The table goes to stdout; the last line is one JSON object.
"""

import functools
import json
import resource
import statistics
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from resnet_jax import augment, device_data, input_pipeline, models, optimizer
from resnet_jax import parallel, schedules, steps, train_state

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/resnet20.py')
_INPUT = flags.DEFINE_enum(
    'input', 'synthetic', ['synthetic', 'host', 'device'],
    'synthetic: the bare step on a float batch already on the device; host: '
    'uint8 batches gathered and copied by the host pipeline; device: the '
    'split on the device, batches gathered in the step (device_data.py).')
_WARMUP = flags.DEFINE_integer('warmup_steps', 3, 'Untimed steps after compiling.')
_STEPS = flags.DEFINE_integer('timed_steps', 20, 'Timed repetitions of each step.')
_LOOP_STEPS = flags.DEFINE_integer(
    'loop_steps', 50, 'Steps of the timed training loop; 0 for one epoch of '
    '--num_examples images.')
_EXAMPLES = flags.DEFINE_integer('num_examples', 50_000,
                                 'Random images in the in-memory split.')

# Dense peak FLOP/s by device kind and dtype (NVIDIA's datasheets, SXM, no
# sparsity); float32 convolutions and matmuls run as TF32 under XLA's default
# precision on these cards.
PEAK_FLOPS = {
    'NVIDIA H100 80GB HBM3': {'bfloat16': 989e12, 'float32': 494e12},
    'NVIDIA H200': {'bfloat16': 989e12, 'float32': 494e12},
}


def _median_seconds(fn, repetitions):
  times = []
  for _ in range(repetitions):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times)


def _peak_memory_bytes() -> tuple[int, str]:
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'], 'device'
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'process'


def _train_step_flops(step_fn, *args) -> float | None:
  try:
    # The lowered program's count: once compiled for a GPU, convolutions
    # become cuDNN calls that XLA's cost analysis counts as no FLOPs.
    cost = jax.jit(step_fn).lower(*args).cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost['flops'])
  except Exception:  # pylint: disable=broad-except
    return None  # Not every backend reports costs.


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  input_mode = _INPUT.value
  parallel.configure_cpu_devices(config)
  dp = parallel.DataParallel(config.parallelism)
  batch_size = config.batch_size
  dp.check_batch_size(batch_size)
  model = models.create_model(config.model, dp.axis_name)
  lr = schedules.create_learning_rate_fn(config.schedule, batch_size,
                                         config.num_train_steps)
  tx = optimizer.create_optimizer(config.optimizer, lr)
  image_shape = (32, 32, 3)
  state = dp.put_state(train_state.create_train_state(
      jax.random.key(config.seed), model, tx, image_shape))
  rng = np.random.default_rng(0)
  ds = input_pipeline.InMemoryDataset(
      images=rng.integers(0, 256, (_EXAMPLES.value, *image_shape), np.uint8),
      labels=rng.integers(0, config.model.num_classes,
                          _EXAMPLES.value).astype(np.int32),
      class_names=tuple(map(str, range(config.model.num_classes))))
  data = ()
  augment_fn = None
  if input_mode == 'synthetic':
    batch = {'image': rng.normal(size=(batch_size, *image_shape)).astype(
        np.float32), 'label': ds.labels[:batch_size]}
    eval_batch = batch
  else:
    augment_fn = functools.partial(
        augment.augment, mean=config.data.mean, std=config.data.std,
        padding=config.data.crop_padding, flip=config.data.random_flip)
    eval_batch = {'image': ds.images[:batch_size],
                  'label': ds.labels[:batch_size]}
  step_fn = functools.partial(
      steps.train_step, learning_rate_fn=lr,
      label_smoothing=config.label_smoothing, augment_fn=augment_fn)
  source = dict(seed=config.seed, start_step=0, global_batch_size=batch_size)
  if input_mode == 'device':
    data = (device_data.place(ds, dp),)
    train_step = dp.train_step(device_data.gathering(step_fn), with_data=True)
    make_batches = lambda: device_data.row_batches(ds.num_examples, **source)
  else:
    train_step = dp.train_step(step_fn)
    make_batches = lambda: input_pipeline.train_batches(ds, **source)
  if input_mode == 'synthetic':
    make_batches = None
  eval_step = dp.eval_step(functools.partial(
      steps.eval_step, preprocess_fn=None if input_mode == 'synthetic' else
      functools.partial(augment.normalize, mean=config.data.mean,
                        std=config.data.std)))

  one_batch = dp.put_batch(next(make_batches()) if make_batches else batch)
  key = jax.random.key(0)
  start = time.perf_counter()
  state, _ = jax.block_until_ready(train_step(state, one_batch, key, *data))
  compile_seconds = time.perf_counter() - start
  holder = [state]

  def train_once():
    holder[0], metrics = train_step(holder[0], one_batch, key, *data)
    return metrics

  _median_seconds(train_once, _WARMUP.value)
  train_s = _median_seconds(train_once, _STEPS.value)
  eval_batch = dp.put_batch(eval_batch)
  jax.block_until_ready(eval_step(holder[0], eval_batch))
  eval_s = _median_seconds(lambda: eval_step(holder[0], eval_batch),
                           _STEPS.value)

  result = {
      'model': f'resnet{config.model.depth}',
      'batch_size': batch_size,
      'dtype': config.model.dtype,
      'input': input_mode,
      'parallelism': config.parallelism,
      'devices': dp.num_devices,
      'platform': jax.devices()[0].platform,
      'device_kind': jax.devices()[0].device_kind,
      'train_images_per_second': round(batch_size / train_s, 1),
      'train_step_ms': round(1e3 * train_s, 3),
      'eval_images_per_second': round(batch_size / eval_s, 1),
      'compile_seconds': round(compile_seconds, 2),
  }

  if make_batches:
    batches = make_batches()
    pipeline_s = _median_seconds(
        lambda: dp.put_batch(next(batches)), _STEPS.value)
    result['pipeline_images_per_second'] = round(batch_size / pipeline_s, 1)
    # The loop as train.py runs it: prefetched batches, one step each, the
    # metrics left on the device until the end.
    batches = input_pipeline.prefetch(make_batches(), dp.put_batch)
    for i in range(_WARMUP.value):
      holder[0], _ = train_step(holder[0], next(batches),
                                jax.random.fold_in(key, i), *data)
    jax.block_until_ready(holder[0])
    steps_per_epoch = input_pipeline.steps_per_epoch(ds.num_examples,
                                                     batch_size)
    loop_steps = _LOOP_STEPS.value or steps_per_epoch
    start = time.perf_counter()
    window = []
    for i in range(loop_steps):
      holder[0], metrics = train_step(holder[0], next(batches),
                                      jax.random.fold_in(key, i), *data)
      window.append(metrics)
    jax.block_until_ready((holder[0], window))
    loop_seconds = time.perf_counter() - start
    loop_s = loop_seconds / loop_steps
    result |= {
        'loop_steps': loop_steps,
        'loop_images_per_second': round(batch_size / loop_s, 1),
        'loop_vs_step': round(train_s / loop_s, 3),
        # Measured when the loop ran one epoch, else extrapolated.
        'epoch_seconds': round(loop_seconds if loop_steps == steps_per_epoch
                               else steps_per_epoch * loop_s, 3),
        'epoch_images': steps_per_epoch * batch_size,
    }

  peak, where = _peak_memory_bytes()
  result |= {'peak_memory_mb': round(peak / 2**20, 1),
             'peak_memory_of': where}
  peak_flops = PEAK_FLOPS.get(result['device_kind'], {}).get(
      config.model.dtype)
  if peak_flops and config.parallelism == 'jit':
    flops = _train_step_flops(
        functools.partial(step_fn, axis_name=None) if not data else
        functools.partial(device_data.gathering(step_fn), axis_name=None),
        dp.get_state(holder[0]), one_batch, key, *data)
    if flops:
      result |= {'train_step_gflops': round(flops / 1e9, 2),
                 'mfu': round(flops / train_s / peak_flops, 4)}

  width = max(map(len, result))
  for name, value in result.items():
    print(f'{name:<{width}}  {value}')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
