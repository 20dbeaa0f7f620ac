"""Times the train and eval steps, the input pipeline and the training loop.

  python -m experiments.benchmark --config=configs/resnet20.py
  python -m experiments.benchmark --config=configs/resnet20.py \
      --config.model.dtype=bfloat16 --config.batch_size=1024 --input=host

The run is built as the trainer builds it (experiment.build), on random
uint8 images held in memory (--num_examples of them), so nothing here imports
TensorFlow; the pipeline's cost does not depend on the pixels. Each figure is
the median over timed repetitions after compiling and warming up; compile
time is that of the first train step (tracing, compiling and running it
once). What is timed:

- train step: the compiled train step alone (augmentation included, as in
  training) on a batch already on the device.
- eval step: the same for the eval step.
- pipeline: producing and transferring one batch without any step: with
  --input=host the host's gather and copy, with --input=device (the split on
  the devices, config.data.on_device) the row indices.
- loop: the steps as the trainer runs them (prefetched batches, one step
  each, metrics kept on the device) over --loop_steps steps, and the time of
  one epoch at that rate.

Peak memory is the device's allocator peak where JAX reports one (GPU, TPU),
else the process's peak resident memory. On a GPU, model FLOPs utilisation
is XLA's FLOP count of one train step over the step time, against the card's
dense peak for the dtype (float32 matmuls run as TF32 there).

The table goes to stdout; the last line is one JSON object.
"""

import json
import resource
import statistics
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from resnet_jax import batching, datasets, experiment, parallel

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/resnet20.py')
_INPUT = flags.DEFINE_enum(
    'input', 'device', ['host', 'device'],
    'host: batches gathered and copied by the host pipeline; device: the '
    'split on the devices, batches gathered in the step (device_data.py).')
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


def _train_step_flops(exp, state, batch) -> float | None:
  try:
    # The lowered program's count: once compiled for a GPU, convolutions
    # become cuDNN calls that XLA's cost analysis counts as no FLOPs.
    lowered = exp._compiled_train_step.lower(  # pylint: disable=protected-access
        state, batch, exp.step_key(0), *exp._train_data)  # pylint: disable=protected-access
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost['flops'])
  except Exception:  # pylint: disable=broad-except
    return None  # Not every backend reports costs.


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  config = _CONFIG.value
  config.data.on_device = _INPUT.value == 'device'
  parallel.configure_cpu_devices(config)
  batch_size = config.batch_size
  rng = np.random.default_rng(0)
  image_shape = (32, 32, 3)
  ds = datasets.InMemoryDataset(
      images=rng.integers(0, 256, (_EXAMPLES.value, *image_shape), np.uint8),
      labels=rng.integers(0, config.model.num_classes,
                          _EXAMPLES.value).astype(np.int32),
      class_names=tuple(map(str, range(config.model.num_classes))))
  exp = experiment.build(config, train_ds=ds)
  dp = exp.dp
  state = dp.put_state(exp.init_state())
  one_batch = next(exp.batches(0))
  start = time.perf_counter()
  state, _ = jax.block_until_ready(exp.train_step(state, one_batch, 0))
  compile_seconds = time.perf_counter() - start
  holder = [state]

  def train_once():
    holder[0], metrics = exp.train_step(holder[0], one_batch, 0)
    return metrics

  _median_seconds(train_once, _WARMUP.value)
  train_s = _median_seconds(train_once, _STEPS.value)
  eval_batch = dp.put_batch(next(batching.eval_batches(
      ds, global_batch_size=config.eval_batch_size)))
  jax.block_until_ready(exp.eval_step(holder[0], eval_batch))
  eval_s = _median_seconds(lambda: exp.eval_step(holder[0], eval_batch),
                           _STEPS.value)

  result = {
      'model': f'resnet{config.model.depth}',
      'batch_size': batch_size,
      'dtype': config.model.dtype,
      'input': _INPUT.value,
      'parallelism': config.parallelism,
      'devices': dp.num_devices,
      'platform': jax.devices()[0].platform,
      'device_kind': jax.devices()[0].device_kind,
      'train_images_per_second': round(batch_size / train_s, 1),
      'train_step_ms': round(1e3 * train_s, 3),
      'eval_images_per_second': round(config.eval_batch_size / eval_s, 1),
      'compile_seconds': round(compile_seconds, 2),
  }

  source = dict(seed=config.seed, start_step=0, global_batch_size=batch_size)
  host_batches = (batching.row_batches(ds.num_examples, **source)
                  if config.data.on_device else
                  batching.train_batches(ds, **source))
  pipeline_s = _median_seconds(lambda: dp.put_batch(next(host_batches)),
                               _STEPS.value)
  result['pipeline_images_per_second'] = round(batch_size / pipeline_s, 1)
  # The loop as train.py runs it: prefetched batches, one step each, the
  # metrics left on the device until the end.
  batches = exp.batches(0)
  for step in range(_WARMUP.value):
    holder[0], _ = exp.train_step(holder[0], next(batches), step)
  jax.block_until_ready(holder[0])
  loop_steps = _LOOP_STEPS.value or exp.steps_per_epoch
  start = time.perf_counter()
  window = []
  for step in range(loop_steps):
    holder[0], metrics = exp.train_step(holder[0], next(batches), step)
    window.append(metrics)
  jax.block_until_ready((holder[0], window))
  loop_seconds = time.perf_counter() - start
  loop_s = loop_seconds / loop_steps
  result |= {
      'loop_steps': loop_steps,
      'loop_images_per_second': round(batch_size / loop_s, 1),
      'loop_vs_step': round(train_s / loop_s, 3),
      # Measured when the loop ran one epoch, else extrapolated.
      'epoch_seconds': round(loop_seconds if loop_steps == exp.steps_per_epoch
                             else exp.steps_per_epoch * loop_s, 3),
      'epoch_images': exp.steps_per_epoch * batch_size,
  }

  peak, where = _peak_memory_bytes()
  result |= {'peak_memory_mb': round(peak / 2**20, 1),
             'peak_memory_of': where}
  peak_flops = PEAK_FLOPS.get(result['device_kind'], {}).get(
      config.model.dtype)
  if peak_flops and config.parallelism == 'jit':
    flops = _train_step_flops(exp, holder[0], one_batch)
    if flops:
      result |= {'train_step_gflops': round(flops / 1e9, 2),
                 'mfu': round(flops / train_s / peak_flops, 4)}

  width = max(map(len, result))
  for name, value in result.items():
    print(f'{name:<{width}}  {value}')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
