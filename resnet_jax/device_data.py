"""The training split held on the devices: each step gathers its own batch.

A CIFAR split (138 MB) is placed once, replicated (batches draw from a
permutation of the whole split, so a sharded copy would need an all-to-all
per step); each step then receives only its rows (batching.train_rows, the
rows the host batches would copy: the same batches) and gathers the images
inside the jitted step.
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
