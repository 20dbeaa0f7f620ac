"""ResNet-20 on CIFAR-10 with the recipe of He et al. 2015 (Table 6 row).

Command:
  python -m resnet_jax.main --config=configs/resnet20.py

Model: 0.27M parameters, option-A shortcuts. Recipe: SGD momentum 0.9, weight
decay 1e-4, batch 128, learning rate 0.1 divided by 10 at 32k and 48k
iterations, 64k iterations, trained on 45k images with 5k held out.

Expected: the paper reports 8.75% test error (91.25% accuracy) on CIFAR-10.
Measured (README, Table 6): the full recipe on the JPEG copy of CIFAR-10
(lossy, quality 75; 45k/5k split of its training images), float32 (TF32) on
one NVIDIA H200: 87.56%, 87.54% and 87.02% validation accuracy for seeds
0-2 (12.63 ± 0.31% error), 2.5 minutes a run (three runs of one program in
455 s). Seed 0 is released as pretrained/resnet20. On a 2-core CPU: 15
epochs (`--config.num_epochs=15`) reached 82.3% in 35 minutes; the full 64k
steps would take about 6 hours there.
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.depth = 20
  return config
