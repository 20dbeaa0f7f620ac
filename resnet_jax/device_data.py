"""The training split held on the devices: each step gathers its own batch.

A CIFAR training split (45,000 x 32x32x3 uint8, 138 MB) fits in any
accelerator's memory. Placed there once, each step receives only the indices
of its examples (from `input_pipeline.train_rows`: the rows the host pipeline
would copy, so the batches are exactly the same) and gathers the images inside
the jitted step. No image crosses the host-device link during training, and
the host's work per step is slicing a few hundred integers.

The split is replicated on every device rather than sharded: a batch draws
from a random permutation of the whole split, so with a sharded copy every
step would need an all-to-all exchange of images; replicating costs one copy
per device, once.
"""

from collections.abc import Iterator

import numpy as np

from resnet_jax import input_pipeline


def place(ds: input_pipeline.InMemoryDataset, dp) -> dict:
  """The split's images and labels on `dp`'s devices, laid out like a state."""
  return dp.put_state({'image': ds.images, 'label': ds.labels})


def row_batches(num_examples: int, *, seed: int, start_step: int,
                global_batch_size: int, process_index: int = 0,
                process_count: int = 1) -> Iterator[dict[str, np.ndarray]]:
  """{'rows': this process's example indices} for start_step, start_step + 1..."""
  step = start_step
  while True:
    rows = input_pipeline.train_rows(
        num_examples, seed=seed, step=step,
        global_batch_size=global_batch_size, process_index=process_index,
        process_count=process_count)
    yield {'rows': rows.astype(np.int32)}
    step += 1


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
