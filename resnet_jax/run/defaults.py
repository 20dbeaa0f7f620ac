"""Every config field: its default, its meaning and the values it may take.

The ResNet-20 recipe of He et al. 2015, section 4.2. Each entry of `FIELDS`
below is one field: its meaning in the comment above it, then
`'group.field': (default, allowed)`, where allowed is a `Range` of numbers, a
tuple of choices, or None where the default's type is the whole rule.
config_checks.validate checks a config against this table, and the rules
between fields that it states. The config files in configs/ start from
`get_config()` and change what differs. Any field can be overridden on the
command line, e.g. `--config.model.depth=56`. A field added later defaults to
the behaviour from before it: runs, checkpoints and releases written earlier,
which lack it, are read as if they held its default.
"""

import dataclasses
import math

import ml_collections

from resnet_jax.core import models, optimizer, schedules
from resnet_jax.run import parallel

MAX_STEPS = 2**31 - 1  # Step counters are int32 on the device.
# numpy's default_rng needs seeds >= 0; jax.random.key keeps 32 bits.
MAX_SEED = 2**32 - 1
# Batches are held whole in host memory: 2**16 exceeds the largest trained
# (32k) and CIFAR's 50,000 images.
MAX_BATCH = 2**16
MAX_RUNS = 64  # Each run keeps its own state and cached training order.


@dataclasses.dataclass(frozen=True)
class Range:
  """An interval of numbers, closed unless said otherwise. A tuple default
  (mean, std) must hold three numbers in it, one per channel."""
  low: float = -math.inf
  high: float = math.inf
  low_open: bool = False
  high_open: bool = False
  note: str = ''  # What a special value means.

  def __contains__(self, x) -> bool:
    return ((x > self.low if self.low_open else x >= self.low) and
            (x < self.high if self.high_open else x <= self.high))

  def requirement(self, integer: bool) -> str:
    """In words, e.g. 'must be an integer in [0, 10]'."""
    kind = 'an integer ' if integer else ''
    low, high = (f'{x:g}' if isinstance(x, float) else x
                 for x in (self.low, self.high))
    if integer and self.low == 1 and not self.low_open:
      text = 'a positive integer' + (
          f' <= {high}' if self.high < math.inf else '')
    elif self.high == math.inf:
      text = f"{kind}{'>' if self.low_open else '>='} {low}"
    elif self.low == -math.inf:
      text = f"{kind}{'<' if self.high_open else '<='} {high}"
    else:
      text = (f"{kind}in {'(' if self.low_open else '['}{low}, "
              f"{high}{')' if self.high_open else ']'}")
    return f'must be {text} ({self.note})' if self.note else f'must be {text}'


_STEPS, _FRACTION = Range(1, MAX_STEPS), Range(0, 1, high_open=True)
_SEED = Range(0, MAX_SEED, note='seeds are 32-bit')

# 'field': (default, allowed). Every number has a Range (floats must also be
# finite); a field a user adds to a config may hold any JSON value.
FIELDS = {
    # Seeds initialisation, the data order and the augmentation: with the
    # step, it determines every batch.
    'seed': (0, _SEED),

    # 'cifar10', 'cifar100' (TFDS) or 'image_folder'
    # (<data_dir>/<split>/<class>/*): datasets.py's names, checked by
    # config_checks (importing datasets here would deepen the import chain).
    'data.name': ('cifar10', None),
    # TFDS data_dir ('': TFDS's default, ~/tensorflow_datasets), or the root
    # of an image folder (required for 'image_folder').
    'data.data_dir': ('', None),
    # TFDS split syntax (datasets.parse_split), sliced after loading. He et
    # al. tune on 45k/5k.
    'data.train_split': ('train[:45000]', None),
    'data.eval_split': ('train[45000:]', None),  # '' for no validation.
    # '' for none (an image folder without one).
    'data.test_split': ('test', None),
    # Whether TFDS may download a dataset that is not prepared in data_dir.
    'data.download': (True, None),
    # Image folders are read in an arbitrary (often class-by-class) order, so
    # they are shuffled with this seed before slicing; TFDS splits are not.
    'data.split_shuffle_seed': (0, _SEED),
    # True: the training split is copied to every device once and each step
    # gathers its batch there (batching.place); False: the host copies each
    # batch over. Same batches either way. Needs the split to fit in device
    # memory (CIFAR: 138 MB).
    'data.on_device': (True, None),
    # The augmentation (augment.augment reads these fields). Random crops
    # from images zero-padded this much (< the images' side:
    # config_checks.validate_with_split).
    'data.crop_padding': (4, Range(0)),
    'data.random_flip': (True, None),  # Horizontal flips with probability 1/2.
    # Per-channel normalisation in 0..255 pixel units: 'constants' uses
    # mean/std below (CIFAR-10's training set); 'measured' computes them from
    # the training split.
    'data.normalization': ('constants', ('constants', 'measured')),
    # A std below 1e-3 would blow the inputs past 2.5e5.
    'data.mean': ((125.31, 122.95, 113.87), Range(0, 255)),
    'data.std': ((62.99, 62.09, 66.70), Range(1e-3, 255)),

    # 6n+2 for basic blocks (20, 32, 44, 56, 110, 1202); 9n+2 for
    # bottleneck (models.blocks_per_stage). Tracing takes ~20 s per 1,000
    # layers.
    'model.depth': (20, Range(1, 2000)),
    # 'basic' (two 3x3 convs) or 'bottleneck' (1x1-3x3-1x1).
    'model.block': ('basic', models.BLOCKS),
    # True: pre-activation blocks (He et al. 2016).
    'model.preact': (False, None),
    # Where a block changes shape: 'A' subsample + zero-pad channels (no
    # parameters, the paper's CIFAR choice); 'B' 1x1 projection.
    'model.shortcut': ('A', models.SHORTCUTS),
    # Multiplies the stage widths 16/32/64 (wide ResNets); 64: 4,096-channel
    # convolutions.
    'model.width': (1, Range(1, 64)),
    'model.num_classes': (10, Range(1, 100_000)),
    # Flax convention: running = momentum * running + (1 - momentum) * batch;
    # 0.9 here is PyTorch's default momentum=0.1.
    'model.bn_momentum': (0.9, _FRACTION),
    # Float32's smallest normal number, 1.2e-38, vanishes on the device.
    'model.bn_epsilon': (1e-5, Range(1e-30, 1)),
    # Computation (parameters are float32).
    'model.dtype': ('float32', ('float32', 'bfloat16')),

    'optimizer.momentum': (0.9, _FRACTION),
    'optimizer.nesterov': (False, None),
    'optimizer.weight_decay': (1e-4, Range(0, 1)),
    # 'l2': L2 penalty in the loss (the paper); 'decoupled': SGDW.
    'optimizer.weight_decay_mode': ('l2', optimizer.WEIGHT_DECAY_MODES),
    # 'all' parameters (as Caffe and the usual PyTorch reproduction) or only
    # conv/dense 'kernels'.
    'optimizer.weight_decay_on': ('all', optimizer.WEIGHT_DECAY_ON),
    'label_smoothing': (0.0, _FRACTION),  # 0 = plain one-hot cross-entropy.

    # 'paper', 'warmup_cosine' or 'one_cycle'.
    'schedule.name': ('paper', schedules.SCHEDULES),
    # Rates and warm-up are given at reference_batch_size and scaled linearly
    # with the actual batch size.
    'schedule.base_learning_rate': (0.1, Range(0, 100, low_open=True)),
    'schedule.reference_batch_size': (128, Range(1, MAX_BATCH)),
    # paper: multiply by decay_factor at these fractions of training (32k and
    # 48k of 64k iterations); increasing, in (0, 1).
    'schedule.decay_fractions': ((0.5, 0.75), None),
    'schedule.decay_factor': (0.1, Range(0, 1, low_open=True)),
    # Warm-up length in iterations at reference_batch_size, shorter than the
    # run. paper: constant warmup_learning_rate (ResNet-110: 400 at 0.01);
    # warmup_cosine: linear from 0.
    'schedule.warmup_steps': (0, Range(0, MAX_STEPS)),
    'schedule.warmup_learning_rate': (0.01, Range(0, 100)),
    # one_cycle: rise over this fraction, from peak/div_factor, end at
    # peak/(div_factor*final_div_factor). At 0 or 1 one of the cycle's halves
    # has no steps.
    'schedule.one_cycle_pct_start': (0.3, Range(0, 1, low_open=True,
                                                high_open=True)),
    # Their product must stay far from float32's overflow (3.4e38).
    'schedule.one_cycle_div_factor': (25.0, Range(1, 1e8)),
    'schedule.one_cycle_final_div_factor': (1e4, Range(1, 1e8)),

    # Global batch, over all devices and processes.
    'batch_size': (128, Range(1, MAX_BATCH)),
    # Global; the last batch is padded and masked.
    'eval_batch_size': (500, Range(1, MAX_BATCH)),
    # The paper's 64k iterations at batch 128.
    'num_train_steps': (64_000, _STEPS),
    # When > 0, train for this many epochs of the training split instead
    # (an epoch is floor(examples / batch_size) steps; batching.total_steps);
    # <= 0: num_train_steps.
    'num_epochs': (-1.0, Range(high=MAX_STEPS)),

    # Independent runs trained together in one program (runs.py): run i is
    # the run of seed + i (its own initialisation, data order, augmentation
    # and batch-norm statistics), in one process, one compilation and one
    # call per steps_per_call steps. A checkpoint holds all r.
    'num_runs': (1, Range(1, MAX_RUNS)),
    # How: False, a loop over the runs inside the program (each run as
    # alone); True, jax.vmap (grouped convolutions: 1.5-1.9x the time of
    # separate runs on an H200 in float32; see runs.py).
    'vectorize_runs': (False, None),
    # Training steps per jitted call (a lax.scan over them): fewer round
    # trips to the host, whose ~1 ms per call limits a small network on a
    # GPU. The result does not depend on it (to float32 rounding on a CPU): a
    # call ends early where logging, evaluation, a checkpoint or a profile is
    # due. Each distinct call length compiles once.
    'steps_per_call': (1, _STEPS),

    # Training metrics to TensorBoard and console.
    'log_every_steps': (100, _STEPS),
    # Validation; also at the end of training.
    'eval_every_steps': (2_000, _STEPS),
    'checkpoint_every_steps': (2_000, _STEPS),  # Also at the end of training.
    'keep_checkpoints': (3, _STEPS),  # The newest this many are kept.
    # How the steps use the devices (parallel.py), the same update in each:
    # 'sharded', jax.jit over a mesh of every device of every process (the
    # batch split, XLA adds the reductions: what JAX recommends);
    # 'shard_map', the same mesh, the step written per device; 'pmap', every
    # local device (JAX keeps it in maintenance only); 'jit', one device.
    'parallelism': ('sharded', parallel.MODES),
    # Several processes (multi-host: TPU pod slices, GPU clusters) with
    # parallelism='sharded' or 'shard_map'. enabled alone: JAX detects the
    # rest (TPU VMs, Slurm, Open MPI); else give all three (e.g.
    # '10.0.0.1:1234', 2, 0..1).
    'distributed.enabled': (False, None),
    'distributed.coordinator_address': ('', None),
    'distributed.num_processes': (0, Range(0, 2**16, note='0: detect')),
    # Less than num_processes.
    'distributed.process_id': (-1, Range(-1, 2**16 - 1, note='-1: detect')),
    # XLA CPU devices to split the CPU into (parallel.configure_cpu_devices):
    # 0 = one per core that the batch sizes divide over; no effect on GPU/TPU.
    'cpu_devices': (0, Range(0, 1024, note='0: one per core')),
    # JAX's persistent compilation cache ('' for none): a restarted run loads
    # its compiled steps from here instead of compiling them again. Shared by
    # runs; entries are keyed by program, JAX version and device.
    'compilation_cache_dir': ('~/.cache/resnet_jax/jax', None),
    # A profiler trace of num_steps training steps from first_step (after
    # compilation and warm-up), into <workdir>/plugins/profile for
    # TensorBoard's profile tab; 0 steps: none.
    'profile.first_step': (10, Range(0, MAX_STEPS)),
    'profile.num_steps': (0, Range(0, MAX_STEPS)),
}


def get_config() -> ml_collections.ConfigDict:
  """A new config of every field's default ('data.name' as config.data.name)."""
  config = ml_collections.ConfigDict()
  for field, (default, _) in FIELDS.items():
    *groups, name = field.split('.')
    group = config
    for part in groups:
      if part not in group:
        group[part] = ml_collections.ConfigDict()
      group = group[part]
    group[name] = default
  return config
