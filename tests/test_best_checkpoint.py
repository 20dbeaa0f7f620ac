"""One notion of the best checkpoint: the first step to reach the highest
validation accuracy, as summary.json's best_val_step counts it (train.py's
LoopState.validated), in what the checkpointer keeps and in
`--checkpoint=best`."""

import shutil
import sys

from etils import epath
import numpy as np
import orbax.checkpoint as ocp
import pytest

import fake_cifar
from configs import smoke
from resnet_jax.run import checkpoints, experiment, train


def test_of_tied_accuracies_the_earliest_step_is_kept_and_named_best(
    tmp_path):
  directory = tmp_path / 'checkpoints'
  state = {'w': np.zeros(3, np.float32)}
  with checkpoints.Checkpointer(directory, keep=1, metadata={}) as writer:
    for step, accuracy in [(10, 0.5), (20, 0.7), (30, 0.7), (40, 0.6)]:
      writer.save(step, state, val_accuracy=accuracy)
    writer.wait_until_finished()
    assert writer.best_step() == 20
  assert sorted(int(p.name) for p in directory.iterdir()) == [20, 40]
  with checkpoints.Checkpointer(directory, metadata={},
                                read_only=True) as reader:
    assert reader.best_step() == 20


@pytest.mark.slow
def test_the_best_validation_is_saved_between_checkpoints(tmp_path,
                                                          monkeypatch):
  # Validations at steps 2, 4, 6, 8 with these accuracies; checkpoints
  # every 100 steps (so only at the end) and only the newest kept.
  accuracies = iter([0.5, 0.7, 0.7, 0.6])
  monkeypatch.setattr(
      experiment.Experiment, 'evaluate',
      lambda self, state, ds: [{'loss': 1.0, 'accuracy': next(accuracies)}])
  config = smoke.get_config()
  config.data.update(data_dir=fake_cifar.data_dir(), test_split='')
  config.update(parallelism='jit', num_train_steps=8, eval_every_steps=2,
                checkpoint_every_steps=100, keep_checkpoints=1)

  summary = train.train_and_evaluate(config, str(tmp_path))

  assert summary['best_val_step'] == 4 and summary['best_val_accuracy'] == 0.7
  assert sorted(int(p.name) for p in (tmp_path / 'checkpoints').iterdir()
                ) == [4, 8]
  with checkpoints.Checkpointer(tmp_path / 'checkpoints', metadata={},
                                read_only=True) as reader:
    assert reader.best_step() == 4


class Killed(BaseException):
  """The process ends here (as kill -9 would: nothing after it runs)."""


def test_a_kill_at_any_moment_of_a_replace_leaves_a_checkpoint(
    tmp_path, monkeypatch):
  # A preempted run's step 8 was saved without its accuracy; on resume it is
  # saved again with it (train.py). Each write or deletion this module makes
  # (Orbax's saves and deletes, its own renames and removals) is in turn
  # the moment of the kill, until a replace runs to its end.
  directory = tmp_path / 'checkpoints'
  old = {'w': np.full(3, 8, np.float32)}
  for kill_at in range(1, 20):
    shutil.rmtree(tmp_path, ignore_errors=True)
    with checkpoints.Checkpointer(directory, keep=1, metadata={}) as writer:
      writer.save(4, {'w': np.full(3, 4, np.float32)}, val_accuracy=0.9)
      writer.save(8, old, progress={'eval_pending': True})
    events = []

    def counted(original):
      def event(*args, **kwargs):
        if sys._getframe(1).f_globals['__name__'] == checkpoints.__name__:  # pylint: disable=protected-access
          events.append(original.__name__)
          if len(events) == kill_at:
            raise Killed(original.__name__)
        return original(*args, **kwargs)
      return event

    with monkeypatch.context() as patch:
      local = type(epath.Path(tmp_path))  # The class of local paths.
      for owner, name in [(ocp.CheckpointManager, 'save'),
                          (ocp.CheckpointManager, 'delete'),
                          (local, 'rename'), (local, 'rmtree')]:
        patch.setattr(owner, name, counted(getattr(owner, name)))
      writer = checkpoints.Checkpointer(directory, keep=1, metadata={})
      try:
        writer.save(8, old, progress={'eval_pending': False},
                    val_accuracy=0.95, replace=True)
        writer.close()
        finished = True
      except Killed:
        finished = False
    # The rerun trainer finds step 8, the old or the new copy, intact.
    with checkpoints.Checkpointer(directory, keep=1, metadata={}) as writer:
      assert writer.all_steps() == [4, 8], (kill_at, events)
      state, progress = writer.restore(
          {'w': np.zeros(3, np.float32)}, with_progress=True)
      np.testing.assert_array_equal(state['w'], old['w'])
      if progress['eval_pending']:  # The old copy: it is replaced again.
        writer.save(8, old, progress={'eval_pending': False},
                    val_accuracy=0.95, replace=True)
      writer.wait_until_finished()
      assert writer.best_step() == 8
    # Nothing of the interrupted replace is left beside.
    assert [p.name for p in tmp_path.iterdir()] == ['checkpoints']
    if finished:
      break
  assert finished and kill_at > 2, events  # Every moment was a kill once.
