"""Batches from a split in memory: the seeded training order, evaluation.

The training order is a pure function of (seed, step): epoch e is the
permutation `default_rng([seed, e])` of the examples, cut into consecutive
global batches (the last partial one dropped), each process taking a
contiguous 1/P of each. So a run resumed at step k, or split over P
processes, sees exactly the batches of one uninterrupted process.

Evaluation covers every example once: each process pads its contiguous shard
into the same number of batches (the eval step is a collective), `mask` 0 on
padding. The host hands out raw uint8 images and int32 labels; augmentation
and normalisation run on the device.

Or the training split is placed on the devices once (`place`, replicated:
batches draw from all of it), and each step receives only its rows
(`train_rows`, the rows a host batch would copy: the same batches) and
gathers them inside the jitted step (`gathering`). A split is a
datasets.InMemoryDataset.
"""

import collections
from collections.abc import Callable, Iterable, Iterator
import functools

import numpy as np


def steps_per_epoch(num_examples: int, global_batch_size: int) -> int:
  """Full batches per epoch (the last partial batch is dropped)."""
  if not 0 < global_batch_size <= num_examples:
    raise ValueError(f'global batch size {global_batch_size} must be in '
                     f'1..{num_examples}, the training examples')
  return num_examples // global_batch_size


def total_steps(config, num_examples: int) -> int:
  """config.num_epochs epochs of `num_examples` when > 0, else
  config.num_train_steps."""
  if config.num_epochs <= 0:
    return config.num_train_steps
  return round(config.num_epochs *
               steps_per_epoch(num_examples, config.batch_size))


def equal_share(global_batch_size: int, parts: int, what: str,
                name: str = 'global batch size') -> int:
  """Each of `parts` equal shares of a global batch (processes, devices)."""
  if global_batch_size <= 0 or global_batch_size % parts:
    raise ValueError(f'{name}={global_batch_size} does not divide over '
                     f'{parts} {what}; use a multiple of {parts}')
  return global_batch_size // parts


def _per_process(global_batch_size: int, process_index: int,
                 process_count: int) -> int:
  if not 0 <= process_index < process_count:
    raise ValueError(f'process index {process_index} is not in '
                     f'0..{process_count - 1}')
  return equal_share(global_batch_size, process_count, 'processes')


# Two epochs (the current and, while prefetching, the next) of each of up to
# defaults.MAX_RUNS runs trained together; 360 KB each for CIFAR.
@functools.lru_cache(maxsize=128)
def _epoch_order(seed: int, epoch: int, num_examples: int) -> np.ndarray:
  order = np.random.default_rng([seed, epoch]).permutation(num_examples)
  order.flags.writeable = False  # Shared by every caller through the cache.
  return order


def train_rows(num_examples: int, *, seed: int, step: int,
               global_batch_size: int, process_index: int = 0,
               process_count: int = 1) -> np.ndarray:
  """Which examples make this process's part of the training batch of `step`
  (see the module docstring)."""
  per_process = _per_process(global_batch_size, process_index, process_count)
  if step < 0:
    raise ValueError(f'step must be >= 0, got {step}')
  spe = steps_per_epoch(num_examples, global_batch_size)
  order = _epoch_order(seed, step // spe, num_examples)
  start = (step % spe) * global_batch_size + process_index * per_process
  return order[start:start + per_process]


def train_batch(ds, *, seed: int, step: int, global_batch_size: int,
                process_index: int = 0, process_count: int = 1) -> dict[str, np.ndarray]:
  """This process's part of the global training batch of `step`."""
  rows = train_rows(ds.num_examples, seed=seed, step=step,
                    global_batch_size=global_batch_size,
                    process_index=process_index, process_count=process_count)
  return {'image': ds.images[rows], 'label': ds.labels[rows]}


def eval_batches(ds, *, global_batch_size: int, process_index: int = 0,
                 process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """Every example once over all processes, in padded, masked batches."""
  per_process = _per_process(global_batch_size, process_index, process_count)
  n = ds.num_examples
  # Contiguous shards whose sizes differ by at most one, as
  # tfds.split_for_jax_process makes them.
  shard_start = process_index * n // process_count
  shard_stop = (process_index + 1) * n // process_count
  largest_shard = -(-n // process_count)
  num_batches = -(-largest_shard // per_process)
  for i in range(num_batches):
    start = min(shard_start + i * per_process, shard_stop)
    stop = min(start + per_process, shard_stop)
    real = stop - start
    image = np.zeros((per_process,) + ds.images.shape[1:], np.uint8)
    label = np.zeros(per_process, np.int32)
    mask = np.zeros(per_process, np.float32)
    image[:real], label[:real], mask[:real] = (
        ds.images[start:stop], ds.labels[start:stop], 1)
    yield {'image': image, 'label': label, 'mask': mask}


def prefetch(iterator: Iterable, put_fn: Callable, size: int = 2) -> Iterator:
  """Yields put_fn(item) for each item, applied `size` items ahead: with an
  (asynchronous) transfer to the devices, the next batches travel while the
  devices compute."""
  if size < 1:
    raise ValueError(f'prefetch size must be >= 1, got {size}')
  queue = collections.deque()
  for item in iterator:
    queue.append(put_fn(item))
    if len(queue) == size:
      yield queue.popleft()
  while queue:
    yield queue.popleft()


def place(ds, dp) -> dict:
  """The split's images and labels on `dp`'s devices, laid out like a state."""
  return dp.put_state({'image': ds.images, 'label': ds.labels})


def gathering(step_fn):
  """A train step on batches to one on rows of the data on the devices.

  `step_fn(state, batch, rng, **kwargs)` becomes
  `step(state, {'rows': ...}, rng, data, **kwargs)`, for
  `DataParallel.train_step(..., with_data=True)`.
  """

  def step(state, batch, rng, data, **kwargs):
    rows = batch['rows']
    gathered = {'image': data['image'][rows], 'label': data['label'][rows]}
    return step_fn(state, gathered, rng, **kwargs)

  return step
