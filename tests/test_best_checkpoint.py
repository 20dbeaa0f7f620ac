"""One notion of the best checkpoint: the first step to reach the highest
validation accuracy, as summary.json's best_val_step counts it (train.py's
LoopState.validated), in what the checkpointer keeps and in
`--checkpoint=best`."""

import numpy as np

from resnet_jax import checkpoints


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
