"""A few steps of a ResNet-8 on CIFAR-10: checks that everything runs.

Command:
  python -m resnet_jax.main --config=configs/smoke.py --workdir=/tmp/smoke

Expected: finishes in about 20 s on a 2-core CPU (compilation dominates);
accuracy is meaningless. The tests run it on TFDS mock data.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.depth = 8
  # Fractions, so that any dataset size (mock data in the tests) works.
  config.data.train_split = 'train[:90%]'
  config.data.eval_split = 'train[90%:]'
  config.batch_size = 16
  config.eval_batch_size = 40
  config.num_train_steps = 6
  config.log_every_steps = 2
  config.eval_every_steps = 3
  config.checkpoint_every_steps = 3
  config.keep_checkpoints = 2
  return config
