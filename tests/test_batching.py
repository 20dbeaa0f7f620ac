"""Batches from a split in memory: the seeded training order, evaluation."""

import itertools

from hypothesis import given
from hypothesis import strategies as st
import ml_collections
import numpy as np
import pytest

from resnet_jax.data import batching as bt
from resnet_jax.data import datasets


def indexed_dataset(n: int, num_classes: int = 3) -> datasets.InMemoryDataset:
  """Image i holds i (in two bytes), so each batch row can be traced back."""
  images = np.zeros((n, 2, 2, 2), np.uint8)
  images[..., 0] = (np.arange(n) // 256)[:, None, None]
  images[..., 1] = (np.arange(n) % 256)[:, None, None]
  labels = (np.arange(n) % num_classes).astype(np.int32)
  return datasets.InMemoryDataset(images, labels,
                                  tuple(f'c{i}' for i in range(num_classes)))


def ids(batch) -> np.ndarray:
  high, low = batch['image'][:, 0, 0, 0], batch['image'][:, 0, 0, 1]
  return high.astype(int) * 256 + low


# ----------------------------------------------------------------------------
# Training order.


def test_steps_per_epoch_drops_the_last_partial_batch():
  assert bt.steps_per_epoch(45_000, 128) == 351
  for batch_size in (8, 0):
    with pytest.raises(ValueError, match='must be in 1..5, the training'):
      bt.steps_per_epoch(5, batch_size)


def test_total_steps_are_epochs_of_full_batches_or_num_train_steps():
  # The one count of the trainer (experiment.build) and the config checks.
  config = ml_collections.ConfigDict(dict(num_epochs=2.5, batch_size=8,
                                          num_train_steps=7))
  assert bt.total_steps(config, 50) == 15  # 2.5 epochs of 6 steps.
  config.num_epochs = -1.0
  assert bt.total_steps(config, 50) == 7


def test_train_batch_is_a_pure_function_of_seed_and_step():
  ds = indexed_dataset(100)
  batch = lambda seed, step: bt.train_batch(ds, seed=seed, step=step,
                                            global_batch_size=10)
  first = batch(0, 3)
  assert first['image'].dtype == np.uint8 and first['image'].shape == (10, 2,
                                                                       2, 2)
  assert first['label'].dtype == np.int32
  np.testing.assert_array_equal(first['label'], ids(first) % 3)
  np.testing.assert_array_equal(ids(batch(0, 3)), ids(first))
  assert not np.array_equal(ids(batch(0, 4)), ids(first))
  assert not np.array_equal(ids(batch(1, 3)), ids(first))


def test_each_epoch_is_a_permutation_of_the_examples():
  ds = indexed_dataset(24)
  epochs = [
      np.concatenate([ids(bt.train_batch(ds, seed=0, step=step,
                                         global_batch_size=8))
                      for step in range(3 * epoch, 3 * epoch + 3)])
      for epoch in range(3)]
  for order in epochs:
    np.testing.assert_array_equal(np.sort(order), np.arange(24))
  assert not np.array_equal(epochs[0], epochs[1])


def test_an_epoch_with_a_partial_batch_repeats_no_example():
  ds = indexed_dataset(26)  # 3 batches of 8; 2 examples sit out each epoch.
  order = np.concatenate([ids(bt.train_batch(ds, seed=0, step=step,
                                             global_batch_size=8))
                          for step in range(3)])
  assert len(set(order)) == 24


@pytest.mark.parametrize('process_count', [2, 4])
def test_process_slices_concatenate_to_the_global_batch(process_count):
  ds = indexed_dataset(100)
  for step in (0, 5, 13):  # 13 is in the second epoch.
    whole = bt.train_batch(ds, seed=3, step=step, global_batch_size=16)
    parts = [bt.train_batch(ds, seed=3, step=step, global_batch_size=16,
                            process_index=p, process_count=process_count)
             for p in range(process_count)]
    for key in ('image', 'label'):
      np.testing.assert_array_equal(
          np.concatenate([part[key] for part in parts]), whole[key])


def test_batch_not_divisible_by_processes_is_rejected():
  refusal = 'size=16 does not divide over 3 processes; use a multiple of 3'
  with pytest.raises(ValueError, match=refusal):
    bt.train_batch(indexed_dataset(100), seed=0, step=0, global_batch_size=16,
                   process_count=3)
  with pytest.raises(ValueError, match=refusal):
    next(bt.eval_batches(indexed_dataset(10), global_batch_size=16,
                         process_count=3))


def test_train_rows_pick_the_train_batch_for_every_process():
  dataset = indexed_dataset(50)
  # 50 examples, batch 16: 3 steps an epoch; steps 0..7 cross two epochs.
  for process_index in range(2):
    for step in range(8):
      source = dict(seed=3, step=step, global_batch_size=16,
                    process_index=process_index, process_count=2)
      batch = bt.train_batch(dataset, **source)
      rows = bt.train_rows(dataset.num_examples, **source)
      assert rows.shape == (8,)
      np.testing.assert_array_equal(dataset.images[rows], batch['image'])
      np.testing.assert_array_equal(dataset.labels[rows], batch['label'])


# ----------------------------------------------------------------------------
# Evaluation.


@given(n=st.integers(1, 60), per_process=st.integers(1, 9),
       process_count=st.integers(1, 4))
def test_eval_batches_cover_every_example_once(n, per_process, process_count):
  ds = indexed_dataset(n)
  batches = [list(bt.eval_batches(ds, global_batch_size=per_process *
                                  process_count, process_index=p,
                                  process_count=process_count))
             for p in range(process_count)]
  assert len({len(b) for b in batches}) == 1  # The eval step is a collective.
  seen = []
  for batch in itertools.chain(*batches):
    assert batch['image'].shape[0] == per_process
    assert batch['mask'].dtype == np.float32
    real = batch['mask'] == 1
    assert np.all(batch['mask'][~real] == 0)
    assert not batch['image'][~real].any() and not batch['label'][~real].any()
    np.testing.assert_array_equal(batch['label'][real], ids(batch)[real] % 3)
    seen.extend(ids(batch)[real])
  np.testing.assert_array_equal(np.sort(seen), np.arange(n))


def test_eval_batches_example_37_over_2_processes():
  ds = indexed_dataset(37)
  shards = [list(bt.eval_batches(ds, global_batch_size=8, process_index=p,
                                 process_count=2)) for p in range(2)]
  # Shards of 18 and 19 examples in batches of 4: 5 batches each.
  assert [len(s) for s in shards] == [5, 5]
  assert [sum(b['mask'].sum() for b in s) for s in shards] == [18, 19]


# ----------------------------------------------------------------------------
# Prefetching.


def test_prefetch_keeps_order_and_puts_ahead():
  put = []

  def put_fn(item):
    put.append(item)
    return item * 10

  received = []
  for value in bt.prefetch(iter(range(6)), put_fn, size=3):
    received.append(value)
    k = len(received) - 1  # While item k is in use, k+1 and k+2 are put.
    assert put == list(range(min(k + 3, 6)))
  assert received == [0, 10, 20, 30, 40, 50]
  with pytest.raises(ValueError, match='prefetch size must be >= 1, got 0'):
    next(bt.prefetch(iter([]), put_fn, size=0))
