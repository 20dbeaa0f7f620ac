"""Times the train and eval steps, the input pipeline and the training loop.

  python -m experiments.benchmark --config=configs/resnet20.py
  python -m experiments.benchmark --config=configs/resnet20.py \
      --config.model.dtype=bfloat16 --config.batch_size=1024 --input=host
  python -m experiments.benchmark --config=configs/resnet20.py \
      --config.parallelism=jit --config.steps_per_call=32 --config.num_runs=8

The run is built as the trainer builds it (experiment.build), on random uint8
images in memory (no TensorFlow). Each figure is the median of timed
repetitions after compiling and warming up; times are per step of all
config.num_runs runs, images/s per run and in aggregate. Timed: the train
call of config.steps_per_call steps on batches already on the device, queued
back to back; the eval step; the pipeline alone (--input=host: the host's
gather and copy; device: the row indices); and the loop as the trainer runs
it over --loop_steps (loop_vs_step 1.0: the host's work is hidden). Peak
memory is the allocator's (GPU, TPU) or the process's; on a GPU, MFU is XLA's
FLOP count of a step over its time against the card's dense peak. The last
line of the output is one JSON object.
"""

import collections
import itertools
import json
import pathlib
import resource
import statistics
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from resnet_jax import cli
from resnet_jax.data import batching, datasets
from resnet_jax.run import experiment, parallel

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/resnet20.py')
_INPUT = flags.DEFINE_enum(
    'input', 'device', ['host', 'device'],
    'host: batches gathered and copied by the host pipeline; device: the '
    'split on the devices, batches gathered in the step (batching.gathering).')
_WARMUP = flags.DEFINE_integer('warmup_steps', 3, 'Untimed steps after compiling.')
_STEPS = flags.DEFINE_integer('timed_steps', 20, 'Timed repetitions of each step.')
_LOOP_STEPS = flags.DEFINE_integer(
    'loop_steps', 50, 'Steps of the timed training loop; 0 for one epoch of '
    '--num_examples images.')
_EXAMPLES = flags.DEFINE_integer('num_examples', 50_000,
                                 'Random images in the in-memory split.')
_TRACE = flags.DEFINE_string(
    'trace', '', 'If set, a folder: trace --timed_steps more steps with '
    "jax.profiler and print where a step's time on the GPU goes (kernels "
    'per step, time per kind, idle gaps).')

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


def _seconds_per_call(fn, calls):
  """Wall time of `calls` calls queued back to back, per call."""
  start = time.perf_counter()
  outputs = [fn() for _ in range(calls)]
  jax.block_until_ready(outputs)
  return (time.perf_counter() - start) / calls


def _peak_memory_bytes() -> tuple[int, str]:
  stats = jax.local_devices()[0].memory_stats() or {}
  if 'peak_bytes_in_use' in stats:
    return stats['peak_bytes_in_use'], 'device'
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, 'process'


def _train_step_flops(exp, state, batch) -> float | None:
  """FLOPs of one step of all runs (the lowered call's count over k)."""
  try:
    # The lowered program's count: once compiled for a GPU, convolutions
    # become cuDNN calls that XLA's cost analysis counts as no FLOPs. A
    # scan's body is counted once, so the count is already per step.
    lowered = exp._compiled_train_steps.lower(  # pylint: disable=protected-access
        state, batch, exp._augment_keys, np.int32(0), *exp._train_data)  # pylint: disable=protected-access
    cost = lowered.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return float(cost['flops'])
  except Exception:  # pylint: disable=broad-except
    return None  # Not every backend reports costs.


# Kernel kinds by name: cuDNN's convolution kernels name their pass (fprop,
# dgrad, wgrad); XLA's own kernels are named after their fusion.
KERNEL_KINDS = (
    ('conv forward', ('fprop', 'fwd')),
    ('conv data grad', ('dgrad', 'bwd_data')),
    ('conv weight grad', ('wgrad', 'bwd_filter')),
    ('layout transpose', ('nchwtonhwc', 'nhwctonchw', 'transpose')),
    ('gemm / other cuDNN', ('gemm', 'cutlass', 'cudnn', 'xmma', 'conv')),
    ('reduction (batch norm, loss)', ('reduce', 'reduction')),
    ('copy / memset', ('memcpy', 'memset', 'copy')),
    ('fusion (elementwise)', ('fusion', 'loop_')),
)


def kernel_kind(name: str) -> str:
  name = name.lower()
  for kind, keys in KERNEL_KINDS:
    if any(key in name for key in keys):
      return kind
  return 'other'


def trace_summary(trace_dir: str, steps: int) -> dict | None:
  """Per-step kernel count and time by kind from a jax.profiler trace."""
  paths = sorted(pathlib.Path(trace_dir).glob('**/*.xplane.pb'))
  if not paths:
    return None
  data = jax.profiler.ProfileData.from_file(str(paths[-1]))
  kernels = [(event.name, event.start_ns, event.duration_ns)
             for plane in data.planes if plane.name.startswith('/device:GPU')
             for line in plane.lines if line.name.startswith('Stream')
             for event in line.events]
  if not kernels:
    print('trace planes and lines:', [(p.name, [l.name for l in p.lines][:6])
                                      for p in data.planes])
    return None
  by_kind, by_name = collections.Counter(), collections.Counter()
  counts = collections.Counter()
  for name, _, duration in kernels:
    by_kind[kernel_kind(name)] += duration
    counts[kernel_kind(name)] += 1
    by_name[name[:90]] += duration
  # Busy time: the union of kernel intervals (streams may overlap).
  busy, end = 0.0, -1.0
  for start, duration in sorted((s, d) for _, s, d in kernels):
    busy += max(0.0, start + duration - max(start, end))
    end = max(end, start + duration)
  span = max(s + d for _, s, d in kernels) - min(s for _, s, _ in kernels)
  us = lambda ns: round(ns / steps / 1e3, 1)  # noqa: E731
  return {
      'kernels_per_step': round(len(kernels) / steps, 1),
      'kernel_us_per_step': us(sum(d for _, _, d in kernels)),
      'busy_us_per_step': us(busy),
      'span_us_per_step': us(span),
      'idle_fraction': round(1 - busy / span, 3),
      'by_kind_us_per_step': {k: (us(v), round(counts[k] / steps, 1))
                              for k, v in by_kind.most_common()},
      'top_kernels_us_per_step': {k: us(v) for k, v in by_name.most_common(12)},
  }


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_start()  # No INFO lines of JAX's, such as its search for a TPU.
  config = _CONFIG.value
  config.data.on_device = _INPUT.value == 'device'
  parallel.configure_cpu_devices(config)
  batch_size = config.batch_size
  k, runs = config.steps_per_call, config.num_runs
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
  one_call = next(exp.batches([(0, k)]))
  start = time.perf_counter()
  state, _ = jax.block_until_ready(exp.train_steps(state, one_call, 0))
  compile_seconds = time.perf_counter() - start
  holder = [state]

  def train_once():
    holder[0], metrics = exp.train_steps(holder[0], one_call, 0)
    return metrics

  calls = max(1, -(-_STEPS.value // k))  # At least --timed_steps steps.
  _seconds_per_call(train_once, max(1, -(-_WARMUP.value // k)))
  train_s = _seconds_per_call(train_once, calls) / k
  eval_batch = dp.put_batch(next(batching.eval_batches(
      ds, global_batch_size=config.eval_batch_size)))
  jax.block_until_ready(exp.eval_step(holder[0], eval_batch))
  eval_s = _median_seconds(lambda: exp.eval_step(holder[0], eval_batch),
                           _STEPS.value)

  result = {
      'model': f'resnet{config.model.depth}',
      'batch_size': batch_size,
      'steps_per_call': k,
      'num_runs': runs,
      'dtype': config.model.dtype,
      'input': _INPUT.value,
      'parallelism': config.parallelism,
      'devices': dp.num_devices,
      'platform': jax.devices()[0].platform,
      'device_kind': jax.devices()[0].device_kind,
      'train_images_per_second': round(batch_size / train_s, 1),
      'train_images_per_second_aggregate': round(runs * batch_size / train_s,
                                                 1),
      'train_step_ms': round(1e3 * train_s, 3),
      'eval_images_per_second': round(config.eval_batch_size / eval_s, 1),
      'compile_seconds': round(compile_seconds, 2),
  }

  # The host's part of a call: each step's rows (or images) for every run,
  # stacked and put on the devices.
  pipeline = exp.batches((step, k) for step in itertools.count(0, k))
  pipeline_s = _median_seconds(lambda: next(pipeline), calls) / k
  result['pipeline_images_per_second'] = round(runs * batch_size / pipeline_s,
                                               1)
  # The loop as train.py runs it: prefetched batches, k steps per call, the
  # metrics left on the device until the end.
  loop_steps = -(-(_LOOP_STEPS.value or exp.steps_per_epoch) // k) * k
  warmup = max(1, -(-_WARMUP.value // k)) * k
  loop_calls = [(step, k) for step in range(0, warmup + loop_steps, k)]
  batches = exp.batches(loop_calls)
  for first, _ in loop_calls[:warmup // k]:
    holder[0], _ = exp.train_steps(holder[0], next(batches), first)
  jax.block_until_ready(holder[0])
  start = time.perf_counter()
  window = []
  for first, _ in loop_calls[warmup // k:]:
    holder[0], metrics = exp.train_steps(holder[0], next(batches), first)
    window.append(metrics)
  jax.block_until_ready((holder[0], window))
  loop_seconds = time.perf_counter() - start
  loop_s = loop_seconds / loop_steps
  result |= {
      'loop_steps': loop_steps,
      'loop_images_per_second': round(batch_size / loop_s, 1),
      'loop_images_per_second_aggregate': round(runs * batch_size / loop_s,
                                                1),
      'loop_vs_step': round(train_s / loop_s, 3),
      # Measured when the loop ran one epoch, else extrapolated.
      'epoch_seconds': round(loop_seconds if loop_steps == exp.steps_per_epoch
                             else exp.steps_per_epoch * loop_s, 3),
      'epoch_images': exp.steps_per_epoch * batch_size,  # Per run.
  }

  peak, where = _peak_memory_bytes()
  result |= {'peak_memory_mb': round(peak / 2**20, 1),
             'peak_memory_of': where}
  peak_flops = PEAK_FLOPS.get(result['device_kind'], {}).get(
      config.model.dtype)
  if peak_flops and dp.num_devices == 1 and config.parallelism != 'pmap':
    flops = _train_step_flops(exp, holder[0], one_call)
    if flops:
      result |= {'train_step_gflops': round(flops / 1e9, 2),
                 'mfu': round(flops / train_s / peak_flops, 4)}

  if _TRACE.value:
    calls = max(1, -(-_STEPS.value // k))
    jax.block_until_ready(holder[0])
    with jax.profiler.trace(_TRACE.value):
      jax.block_until_ready([train_once() for _ in range(calls)])
    summary = trace_summary(_TRACE.value, calls * k)
    if summary:
      print(json.dumps(summary, indent=1))
      result |= {key: summary[key] for key in (
          'kernels_per_step', 'busy_us_per_step', 'idle_fraction')}
    else:
      print('trace: no GPU kernels found (a GPU trace is summarised only)')

  width = max(map(len, result))
  for name, value in result.items():
    print(f'{name:<{width}}  {value}')
  print(json.dumps(result))


if __name__ == '__main__':
  cli.start(main)  # --help and errors as in every command.
