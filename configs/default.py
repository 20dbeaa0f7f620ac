"""Defaults for every run: the ResNet-20 recipe of He et al. 2015, section 4.2.

Other configs start from this one and change what differs. Any field can be
overridden on the command line, e.g. `--config.model.depth=56`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  config.seed = 0  # Seeds initialisation (and, with the step, the data order).

  config.model = ml_collections.ConfigDict()
  # 6n+2 for basic blocks (20, 32, 44, 56, 110, 1202); 9n+2 for bottleneck.
  config.model.depth = 20
  config.model.block = 'basic'  # 'basic' (two 3x3 convs) or 'bottleneck' (1x1-3x3-1x1).
  config.model.preact = False  # True: pre-activation blocks (He et al. 2016).
  # Where a block changes shape: 'A' subsample + zero-pad channels (no
  # parameters, the paper's CIFAR choice); 'B' 1x1 projection.
  config.model.shortcut = 'A'
  config.model.width = 1  # Multiplies the stage widths 16/32/64 (wide ResNets).
  config.model.num_classes = 10
  # Flax convention: running = momentum * running + (1 - momentum) * batch;
  # 0.9 here is PyTorch's default momentum=0.1.
  config.model.bn_momentum = 0.9
  config.model.bn_epsilon = 1e-5
  config.model.dtype = 'float32'  # Computation: 'float32' or 'bfloat16'.

  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.momentum = 0.9
  config.optimizer.nesterov = False
  config.optimizer.weight_decay = 1e-4
  # 'l2': L2 penalty in the loss (the paper); 'decoupled': SGDW.
  config.optimizer.weight_decay_mode = 'l2'
  # 'all' parameters (as Caffe and the usual PyTorch reproduction) or only
  # conv/dense 'kernels'.
  config.optimizer.weight_decay_on = 'all'
  config.label_smoothing = 0.0  # 0 = plain one-hot cross-entropy.

  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = 'paper'  # 'paper', 'warmup_cosine' or 'one_cycle'.
  # Rates and warm-up are given at reference_batch_size and scaled linearly
  # with the actual batch size.
  config.schedule.base_learning_rate = 0.1
  config.schedule.reference_batch_size = 128
  # paper: multiply by decay_factor at these fractions of training (32k and
  # 48k of 64k iterations).
  config.schedule.decay_fractions = (0.5, 0.75)
  config.schedule.decay_factor = 0.1
  # Warm-up length in iterations at reference_batch_size. paper: constant
  # warmup_learning_rate (ResNet-110: 400 at 0.01); warmup_cosine: linear from 0.
  config.schedule.warmup_steps = 0
  config.schedule.warmup_learning_rate = 0.01
  # one_cycle: rise over this fraction, from peak/div_factor, end at
  # peak/(div_factor*final_div_factor).
  config.schedule.one_cycle_pct_start = 0.3
  config.schedule.one_cycle_div_factor = 25.0
  config.schedule.one_cycle_final_div_factor = 1e4

  config.batch_size = 128  # Global batch, over all devices and processes.
  config.num_train_steps = 64_000  # The paper's 64k iterations at batch 128.
  # 'pmap' (all local devices), 'shard_map' (jit over a device mesh) or 'jit'
  # (one device). The first two average gradients and batch-norm statistics.
  config.parallelism = 'pmap'
  return config
