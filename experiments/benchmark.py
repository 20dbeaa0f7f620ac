"""Times the jitted train and eval steps on synthetic data.

  python -m experiments.benchmark --config=configs/resnet20.py --config.batch_size=128

Reports compile time and the median images/s over timed steps after warm-up;
the last line is one JSON object. Synthetic data: TensorFlow is not imported.
"""

import functools
import json
import statistics
import time

from absl import app
from absl import flags
import jax
from ml_collections import config_flags
import numpy as np

from resnet_jax import models, optimizer, parallel, schedules, steps, train_state

_CONFIG = config_flags.DEFINE_config_file('config', 'configs/resnet20.py')
_WARMUP = flags.DEFINE_integer('warmup_steps', 3, 'Untimed steps after compiling.')
_STEPS = flags.DEFINE_integer('timed_steps', 20, 'Timed steps.')


def _time_steps(fn, num_steps):
  """Seconds per call of `fn`, each call waited for (median, all)."""
  times = []
  for _ in range(num_steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return statistics.median(times), times


def main(_):
  config = _CONFIG.value
  dp = parallel.DataParallel(config.parallelism)
  model = models.create_model(config.model, dp.axis_name)
  lr = schedules.create_learning_rate_fn(config.schedule, config.batch_size,
                                         config.num_train_steps)
  tx = optimizer.create_optimizer(config.optimizer, lr)
  state = dp.put_state(train_state.create_train_state(
      jax.random.key(config.seed), model, tx, (32, 32, 3)))
  rng = np.random.default_rng(0)
  batch = dp.put_batch({
      'image': rng.normal(size=(config.batch_size, 32, 32, 3)).astype(
          np.float32),
      'label': rng.integers(0, config.model.num_classes,
                            config.batch_size).astype(np.int32)})
  train_step = dp.train_step(functools.partial(
      steps.train_step, learning_rate_fn=lr,
      label_smoothing=config.label_smoothing))
  eval_step = dp.eval_step(steps.eval_step)

  start = time.perf_counter()
  state, _ = jax.block_until_ready(train_step(state, batch, jax.random.key(0)))
  compile_seconds = time.perf_counter() - start
  holder = [state]

  def train_once():
    holder[0], metrics = train_step(holder[0], batch, jax.random.key(0))
    return metrics

  _time_steps(train_once, _WARMUP.value)
  train_s, _ = _time_steps(train_once, _STEPS.value)
  jax.block_until_ready(eval_step(holder[0], batch))
  eval_s, _ = _time_steps(lambda: eval_step(holder[0], batch), _STEPS.value)

  result = {
      'model': f'resnet{config.model.depth}',
      'batch_size': config.batch_size,
      'dtype': config.model.dtype,
      'input': 'synthetic',
      'parallelism': config.parallelism,
      'devices': dp.num_devices,
      'platform': jax.devices()[0].platform,
      'train_images_per_second': round(config.batch_size / train_s, 1),
      'train_step_ms': round(1e3 * train_s, 2),
      'eval_images_per_second': round(config.batch_size / eval_s, 1),
      'compile_seconds': round(compile_seconds, 2),
  }
  width = max(map(len, result))
  for key, value in result.items():
    print(f'{key:<{width}}  {value}')
  print(json.dumps(result))


if __name__ == '__main__':
  app.run(main)
