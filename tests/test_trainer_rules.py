"""The trainer's rules for the best step and for resuming on changed data, in
the fast tier (test_best_checkpoint.py and test_train.py run them end to end,
slow)."""

import dataclasses

import numpy as np
import pytest

from resnet_jax.run import checkpoints, experiment, parallel, train
import oracle


def test_of_tied_validations_the_first_step_stays_the_best():
  loop = train.LoopState()
  for step, accuracy in [(2, 0.5), (4, 0.7), (6, 0.7), (8, 0.6)]:
    loop.validated(step, accuracy)
  assert (loop.best_step, loop.best_accuracy) == (4, 0.7)
  loop.validated(10, 0.71)
  assert (loop.best_step, loop.best_accuracy) == (10, 0.71)


def _metadata(ds):
  config = oracle.config()
  return experiment.build(config, dp=parallel.DataParallel('jit'),
                          train_ds=ds).checkpoint_metadata()


def test_a_resume_on_changed_training_data_is_refused(tmp_path):
  # What the trainer checks before it resumes: the checkpoints record the
  # training split's source (InMemoryDataset.source; test_datasets.py shows
  # that it changes with the pixels), and another one is refused.
  ds = oracle.dataset()
  changed = dataclasses.replace(ds, images=ds.images[::-1].copy(),
                                source='oracle, other pixels')
  state = {'w': np.zeros(3, np.float32)}
  directory = tmp_path / 'checkpoints'
  with checkpoints.Checkpointer(directory, metadata=_metadata(ds)) as writer:
    writer.save(3, state)
  with checkpoints.Checkpointer(directory, metadata=_metadata(ds)) as same:
    assert same.restore(state) is not None  # The same data resumes.
  with checkpoints.Checkpointer(directory,
                                metadata=_metadata(changed)) as other:
    with pytest.raises(checkpoints.IncompatibleCheckpointError,
                       match=r'training.train_data: checkpoint "oracle", '
                       r'this run "oracle, other pixels"'):
      other.restore(state)
