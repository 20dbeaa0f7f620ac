"""ResNet-56 on CIFAR-10 with the recipe of He et al. 2015 (Table 6 row).

Command:
  python -m resnet_jax.main --config=configs/resnet56.py

Model: 0.85M parameters, option-A shortcuts. Recipe: SGD momentum 0.9, weight
decay 1e-4, batch 128, learning rate 0.1 divided by 10 at 32k and 48k
iterations, 64k iterations, trained on 45k images with 5k held out.

Expected: the paper reports 6.97% test error (93.03% accuracy) on CIFAR-10.
Measured (README, Table 6): the full recipe on the JPEG copy of CIFAR-10
(lossy, quality 75; 45k/5k split of its training images), float32 (TF32) on
one NVIDIA H200: 89.04% validation accuracy for seed 0 in 465 s (7.7
minutes), released as pretrained/resnet56; seeds 1-2 not run yet.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.depth = 56
  return config
