"""A reader (evaluate, predict) opened while a trainer saves and deletes
checkpoints: a listed step that vanishes before it is read makes the reader
list the steps again, never fail."""

import shutil
import threading
import time

import numpy as np
import orbax.checkpoint as ocp
import pytest

from resnet_jax.run import checkpoints


def saved(directory, steps):
  with checkpoints.Checkpointer(directory, keep=len(steps),
                                metadata={'run': 1}) as writer:
    for step in steps:
      writer.save(step, {'w': np.full(3, step, np.float32)})


def trainer_moves_on(directory, monkeypatch, deleted, new,
                     when='_read_json'):
  """Before the reader's first read (of its metadata or of the whole step):
  the trainer saves `new` (a copy of the newest here) and deletes `deleted`,
  as keep_checkpoints=1 does."""
  original, done = getattr(checkpoints.Checkpointer, when), []

  def read(self, *args):
    if not done:
      done.append(1)
      shutil.copytree(directory / str(max(deleted)), directory / str(new))
      for step in deleted:
        shutil.rmtree(directory / str(step))
    return original(self, *args)

  monkeypatch.setattr(checkpoints.Checkpointer, when, read)


@pytest.mark.parametrize('when', ['_read_json', '_read_step'])
def test_a_reader_lists_again_when_the_listed_steps_vanish(tmp_path,
                                                           monkeypatch, when):
  directory = tmp_path / 'checkpoints'
  saved(directory, [4, 8])
  with checkpoints.Checkpointer(directory, metadata={'run': 1},
                                read_only=True) as reader:
    assert reader.all_steps() == [4, 8]
    trainer_moves_on(directory, monkeypatch, deleted=[4, 8], new=12,
                     when=when)
    state = reader.restore({'w': np.zeros(3, np.float32)})
    assert reader.unreadable_steps == []  # Vanished is not damaged.
  np.testing.assert_array_equal(state['w'], 8)  # What step 12 holds here.


def test_a_step_asked_for_that_vanishes_is_named(tmp_path, monkeypatch):
  directory = tmp_path / 'checkpoints'
  saved(directory, [4, 8])
  with checkpoints.Checkpointer(directory, metadata={},
                                read_only=True) as reader:
    trainer_moves_on(directory, monkeypatch, deleted=[4], new=12,
                     when='_read_step')
    with pytest.raises(checkpoints.UnreadableCheckpointError,
                       match='checkpoint 4 in .* was deleted while it was '
                       'read'):
      reader.restore({'w': np.zeros(3, np.float32)}, step=4)


def delete_slowly(step_dir):
  """rmtree as on a slow disk: one file every 30 ms, then the folders."""
  for path in sorted(step_dir.rglob('*'), reverse=True):
    if path.is_file():
      path.unlink()
      time.sleep(0.03)
  shutil.rmtree(step_dir)


def test_a_step_being_deleted_is_not_called_unreadable(tmp_path, monkeypatch,
                                                       caplog):
  # Orbax deletes a step file by file (rmtree): the reader fails on a file
  # already gone while the step's folder is still there, gone a moment later.
  directory = tmp_path / 'checkpoints'
  saved(directory, [4, 8])
  original, deleting = checkpoints.Checkpointer._read_step, []

  def read(self, step, *args):
    if step == 8 and not deleting:
      shutil.rmtree(directory / '8' / 'state')
      deleting.append(threading.Thread(target=delete_slowly,
                                       args=[directory / '8']))
      deleting[0].start()
    return original(self, step, *args)

  monkeypatch.setattr(checkpoints.Checkpointer, '_read_step', read)
  with checkpoints.Checkpointer(directory, metadata={'run': 1},
                                read_only=True) as reader:
    state = reader.restore({'w': np.zeros(3, np.float32)})
    assert reader.unreadable_steps == []
  deleting[0].join()
  np.testing.assert_array_equal(state['w'], 4)
  assert 'unreadable' not in caplog.text


def test_a_damaged_step_that_stays_is_still_unreadable(tmp_path):
  directory = tmp_path / 'checkpoints'
  saved(directory, [4, 8])
  shutil.rmtree(directory / '8' / 'state')
  with checkpoints.Checkpointer(directory, metadata={'run': 1},
                                read_only=True) as reader:
    state = reader.restore({'w': np.zeros(3, np.float32)})
    assert reader.unreadable_steps == [8]
  np.testing.assert_array_equal(state['w'], 4)


@pytest.mark.parametrize('error', [FileNotFoundError, NotADirectoryError])
def test_a_step_deleted_while_orbax_lists_them_is_listed_again(
    tmp_path, monkeypatch, error):
  # Orbax stats each step's folder to list them: one deleted meanwhile makes
  # it raise (both seen with a trainer saving every step, keep=1).
  directory = tmp_path / 'checkpoints'
  saved(directory, [4, 8])
  original, raised = ocp.CheckpointManager.reload, []

  def reload(self):
    if not raised:
      raised.append(1)
      raise error(f'{directory}/8')
    return original(self)

  monkeypatch.setattr(ocp.CheckpointManager, 'reload', reload)
  with checkpoints.Checkpointer(directory, metadata={'run': 1},
                                read_only=True) as reader:
    trainer_moves_on(directory, monkeypatch, deleted=[4, 8], new=12,
                     when='_read_step')
    state = reader.restore({'w': np.zeros(3, np.float32)})
  assert raised and reader.unreadable_steps == []
  np.testing.assert_array_equal(state['w'], 8)
