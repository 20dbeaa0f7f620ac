"""ResNet-32 on CIFAR-10 with the recipe of He et al. 2015 (Table 6 row).

Command:
  python -m resnet_jax.main --config=configs/resnet32.py

Model: 0.46M parameters, option-A shortcuts. Recipe: SGD momentum 0.9, weight
decay 1e-4, batch 128, learning rate 0.1 divided by 10 at 32k and 48k
iterations, 64k iterations, trained on 45k images with 5k held out.

Expected: the paper reports 7.51% test error (92.49% accuracy). In this
codebase: not measured yet (accuracy, time and hardware to be filled in by the
first full run).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.depth = 32
  return config
