"""ResNet-110 on CIFAR-10 with the recipe of He et al. 2015 (Table 6 row).

Command:
  python -m resnet_jax.main --config=configs/resnet110.py

Model: 1.7M parameters, option-A shortcuts. Recipe: SGD momentum 0.9, weight
decay 1e-4, batch 128, learning rate 0.1 divided by 10 at 32k and 48k
iterations, 64k iterations, trained on 45k images with 5k held out.

Expected: the paper reports 6.43% test error (93.57% accuracy). In this
codebase: not measured yet (accuracy, time and hardware to be filled in by the
first full run).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.depth = 110
  # The paper warms ResNet-110 up at 0.01 for about 400 iterations (until the
  # training error falls below 80%), then returns to 0.1.
  config.schedule.warmup_steps = 400
  return config
