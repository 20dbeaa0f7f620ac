"""The training split held on the devices: each step gathers its own batch.

A CIFAR training split (45,000 x 32x32x3 uint8, 138 MB) fits in any
accelerator's memory. Placed there once, each step receives only the indices
of its examples (from `batching.train_rows`: the rows the host batches would
copy, so the batches are exactly the same) and gathers the images inside the
jitted step. No image crosses the host-device link during training, and the
host's work per step is slicing a few hundred integers.

The split is replicated on every device rather than sharded: a batch draws
from a random permutation of the whole split, so with a sharded copy every
step would need an all-to-all exchange of images; replicating costs one copy
per device, once.
"""

from resnet_jax import datasets


def place(ds: datasets.InMemoryDataset, dp) -> dict:
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
