"""One notion of the best checkpoint: the first step to reach the highest
validation accuracy, as summary.json's best_val_step counts it (train.py's
LoopState.validated), in what the checkpointer keeps and in
`--checkpoint=best`."""

import numpy as np
import pytest

import fake_cifar
from configs import smoke
from resnet_jax import checkpoints, experiment, train


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
