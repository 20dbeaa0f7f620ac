"""Defaults for every run: the ResNet-20 recipe of He et al. 2015, section 4.2.

Every config field, documented here: the library validates configs against
this schema (config_checks.py). The config files in configs/ start from it
and change what differs. Any field can be overridden on the command line,
e.g. `--config.model.depth=56`.
"""

import ml_collections


def get_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()
  # Seeds initialisation, the data order and the augmentation: with the step,
  # it determines every batch.
  config.seed = 0

  config.data = ml_collections.ConfigDict()
  # 'cifar10', 'cifar100' (TFDS) or 'image_folder' (<data_dir>/<split>/<class>/*).
  config.data.name = 'cifar10'
  # TFDS data_dir ('': TFDS's default, ~/tensorflow_datasets), or the root
  # of an image folder.
  config.data.data_dir = ''
  # TFDS split syntax, sliced after loading. He et al. tune on 45k/5k.
  config.data.train_split = 'train[:45000]'
  config.data.eval_split = 'train[45000:]'  # '' for no validation.
  config.data.test_split = 'test'  # '' for none (an image folder without one).
  # Whether TFDS may download a dataset that is not prepared in data_dir.
  config.data.download = True
  # Image folders are read in an arbitrary (often class-by-class) order, so
  # they are shuffled with this seed before slicing; TFDS splits are not.
  config.data.split_shuffle_seed = 0
  # True: the training split is copied to every device once and each step
  # gathers its batch there (batching.place); False: the host copies each
  # batch over. Same batches either way. Needs the split to fit in device
  # memory (CIFAR: 138 MB).
  config.data.on_device = True
  config.data.crop_padding = 4  # Random crops from images zero-padded this much.
  config.data.random_flip = True  # Horizontal flips with probability 1/2.
  # Per-channel normalisation in 0..255 pixel units: 'constants' uses
  # mean/std below (CIFAR-10's training set); 'measured' computes them from
  # the training split.
  config.data.normalization = 'constants'
  config.data.mean = (125.31, 122.95, 113.87)
  config.data.std = (62.99, 62.09, 66.70)

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
  config.eval_batch_size = 500  # Global; the last batch is padded and masked.
  config.num_train_steps = 64_000  # The paper's 64k iterations at batch 128.
  # When > 0, train for this many epochs of the training split instead
  # (an epoch is floor(examples / batch_size) steps; batching.total_steps).
  config.num_epochs = -1.0

  # Independent runs trained together in one program (runs.py): run i is
  # the run of seed + i (its own initialisation, data order, augmentation and
  # batch-norm statistics), in one process, one compilation and one call
  # per steps_per_call steps. A checkpoint holds all r.
  config.num_runs = 1
  # How: False, a loop over the runs inside the program (each run as
  # alone); True, jax.vmap (grouped convolutions: 1.5-1.9x the time of
  # separate runs on an H200 in float32; see runs.py).
  config.vectorize_runs = False
  # Training steps per jitted call (a lax.scan over them): fewer round trips
  # to the host, whose ~1 ms per call limits a small network on a GPU. The
  # result does not depend on it (to float32 rounding on a CPU): a call ends
  # early where logging, evaluation, a checkpoint or a profile is due. Each
  # distinct call length compiles once.
  config.steps_per_call = 1

  config.log_every_steps = 100  # Training metrics to TensorBoard and console.
  config.eval_every_steps = 2_000  # Validation; also at the end of training.
  config.checkpoint_every_steps = 2_000  # Also at the end of training.
  config.keep_checkpoints = 3  # The newest this many are kept.
  # How the steps use the devices (parallel.py), the same update in each:
  # 'sharded', jax.jit over a mesh of every device of every process (the
  # batch split, XLA adds the reductions: what JAX recommends); 'shard_map',
  # the same mesh, the step written per device; 'pmap', every local device
  # (JAX keeps it in maintenance only); 'jit', one device.
  config.parallelism = 'sharded'
  # Several processes (multi-host: TPU pod slices, GPU clusters) with
  # parallelism='sharded' or 'shard_map'. enabled alone: JAX detects the rest (TPU VMs,
  # Slurm, Open MPI); else give all three (e.g. '10.0.0.1:1234', 2, 0..1).
  config.distributed = ml_collections.ConfigDict()
  config.distributed.enabled = False
  config.distributed.coordinator_address = ''
  config.distributed.num_processes = 0
  config.distributed.process_id = -1
  # XLA CPU devices to split the CPU into (parallel.configure_cpu_devices):
  # 0 = one per core that the batch sizes divide over; no effect on GPU/TPU.
  config.cpu_devices = 0
  # JAX's persistent compilation cache ('' for none): a restarted run loads
  # its compiled steps from here instead of compiling them again. Shared by
  # runs; entries are keyed by program, JAX version and device.
  config.compilation_cache_dir = '~/.cache/resnet_jax/jax'
  # A profiler trace of num_steps training steps from first_step (after
  # compilation and warm-up), into <workdir>/plugins/profile for
  # TensorBoard's profile tab; 0 steps: none.
  config.profile = ml_collections.ConfigDict()
  config.profile.first_step = 10
  config.profile.num_steps = 0
  return config
