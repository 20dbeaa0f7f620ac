"""ResNet-56 on CIFAR-100 with the CIFAR-10 recipe of He et al. 2015.

Command:
  python -m resnet_jax.main --config=configs/resnet56_cifar100.py

Model: ResNet-56 with a 100-way classifier (858,868 parameters), option-A
shortcuts. Recipe: configs/resnet56.py's, the paper's CIFAR-10 recipe
unchanged (SGD momentum 0.9, weight decay 1e-4, batch 128, learning rate 0.1
divided by 10 at 32k and 48k iterations, 64k iterations, 45k training images
with 5k held out); the paper itself reports no CIFAR-100 result. The data is
TFDS's cifar100 (fine labels), normalised with its training set's mean and
std (`--config.data.normalization=measured` measures them on the split).

Expected: not measured yet in this codebase (accuracy, time and hardware
to be filled in by the first full run).
"""

from configs import default


def get_config():
  config = default.get_config()
  config.model.depth = 56
  config.model.num_classes = 100
  config.data.name = 'cifar100'
  # CIFAR-100's training set in 0..255 units (0.5071, 0.4865, 0.4409 and
  # 0.2673, 0.2564, 0.2762 of 1).
  config.data.mean = (129.30, 124.07, 112.43)
  config.data.std = (68.17, 65.39, 70.42)
  return config
