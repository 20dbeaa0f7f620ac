"""ResNet-20 on CIFAR-10 with the recipe of He et al. 2015 (Table 6 row).

Command:
  python -m resnet_jax.main --config=configs/resnet20.py

Model: 0.27M parameters, option-A shortcuts. Recipe: SGD momentum 0.9, weight
decay 1e-4, batch 128, learning rate 0.1 divided by 10 at 32k and 48k
iterations, 64k iterations, trained on 45k images with 5k held out.

Expected: the paper reports 8.75% test error (91.25% accuracy). In this
codebase the full recipe is not measured yet. Measured: 15 epochs (this
schedule compressed, `--config.num_epochs=15`) on the JPEG copy of CIFAR-10
reached 82.3% validation accuracy in 35 min on a 2-core CPU (2 XLA devices);
the full 64k steps would take about 6 h there.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.depth = 20
  return config
