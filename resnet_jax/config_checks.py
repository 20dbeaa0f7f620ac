"""Rejects an invalid config before anything is written, with a one-line reason.

`validate` checks every field of resnet_jax/defaults.py: its type is the default
value's (an int also does for a float, a bool never does for an int), every
number is finite and lies in the range the code supports, and the fields
agree with each other. A field that defaults.py lacks (added by a user) may
hold any JSON value. `validate_with_split` checks what needs the training
split: its size and its images' side.

Every error is one line, `config.<field>=<value>: <requirement>`.
"""

import dataclasses
import json
import math

from resnet_jax import defaults
from resnet_jax import datasets, models, optimizer, parallel, schedules
from resnet_jax import tools

DATASETS = datasets.TFDS_DATASETS + (datasets.IMAGE_FOLDER,)
NORMALIZATIONS = ('constants', 'measured')
DTYPES = ('float32', 'bfloat16')

# Steps are counted in int32 on the device (the train state's and Optax's
# step counters).
MAX_STEPS = 2**31 - 1
# Seeds go to numpy's default_rng, which needs them >= 0, and to
# jax.random.key, which keeps their low 32 bits: 2**32 would repeat seed 0.
MAX_SEED = 2**32 - 1
# Batches are held whole in host memory, an eval batch with its padding: 2**16
# exceeds the largest batches trained (32k) and CIFAR's 50,000 images.
MAX_BATCH = 2**16
# Tracing alone takes ~20 s per 1,000 layers; the paper's deepest is 1202.
MAX_DEPTH = 2000
# Channels are 16/32/64 times this: 64 makes 4,096-channel convolutions.
MAX_WIDTH = 64
MAX_CLASSES = 100_000
MAX_PROCESSES = 2**16  # Far beyond the largest TPU pod slices' hosts.
MAX_CPU_DEVICES = 1024  # More than any CPU's cores.
# Each run keeps its own training order (batching.py caches the epochs'
# permutations) and state; a sweep wider than this is several programs.
MAX_RUNS = 64


@dataclasses.dataclass(frozen=True)
class _Range:
  """An interval of numbers, closed unless said otherwise."""
  low: float = -math.inf
  high: float = math.inf
  low_open: bool = False
  high_open: bool = False
  note: str = ''

  def __contains__(self, x) -> bool:
    return ((x > self.low if self.low_open else x >= self.low) and
            (x < self.high if self.high_open else x <= self.high))

  def requirement(self, integer: bool) -> str:
    """'must be ...' in words, e.g. 'must be an integer in [0, 10]'."""
    kind = 'an integer ' if integer else ''
    low, high = (f'{x:g}' if isinstance(x, float) else x
                 for x in (self.low, self.high))
    if integer and self.low == 1 and not self.low_open:
      text = 'must be a positive integer' + (
          f' <= {high}' if self.high < math.inf else '')
    elif self.high == math.inf:
      text = f"must be {kind}{'>' if self.low_open else '>='} {low}"
    elif self.low == -math.inf:
      text = f"must be {kind}{'<' if self.high_open else '<='} {high}"
    else:
      text = (f"must be {kind}in {'(' if self.low_open else '['}{low}, "
              f"{high}{')' if self.high_open else ']'}")
    return f'{text} ({self.note})' if self.note else text


_POSITIVE_STEPS = _Range(1, MAX_STEPS)
_SEED = _Range(0, MAX_SEED, note='seeds are 32-bit')
_FRACTION = _Range(0, 1, high_open=True)  # [0, 1)
_LEARNING_RATE = _Range(0, 100, low_open=True)

# The range of every numeric field (of defaults.py) that has one; floats must
# also be finite.
RANGES = {
    'seed': _SEED,
    'data.split_shuffle_seed': _SEED,
    # Its bound is the images' side: validate_with_split.
    'data.crop_padding': _Range(0),
    'model.depth': _Range(1, MAX_DEPTH),
    'model.width': _Range(1, MAX_WIDTH),
    'model.num_classes': _Range(1, MAX_CLASSES),
    'model.bn_momentum': _FRACTION,
    # Near float32's (and bfloat16's) smallest normal number, 1.2e-38, it
    # vanishes on the device and a constant channel divides by 0; above 1 it
    # outweighs the variance.
    'model.bn_epsilon': _Range(1e-30, 1),
    'optimizer.momentum': _FRACTION,
    'optimizer.weight_decay': _Range(0, 1),
    'label_smoothing': _FRACTION,
    'schedule.base_learning_rate': _LEARNING_RATE,
    'schedule.reference_batch_size': _Range(1, MAX_BATCH),
    'schedule.decay_factor': _Range(0, 1, low_open=True),
    'schedule.warmup_steps': _Range(0, MAX_STEPS),
    'schedule.warmup_learning_rate': _Range(0, 100),
    # At 0 or 1 one of the cycle's halves has no steps.
    'schedule.one_cycle_pct_start': _Range(0, 1, low_open=True,
                                           high_open=True),
    # Divisors of the peak rate, so the start and end are at most the peak;
    # their product must stay far from float32's overflow (3.4e38).
    'schedule.one_cycle_div_factor': _Range(1, 1e8),
    'schedule.one_cycle_final_div_factor': _Range(1, 1e8),
    'num_runs': _Range(1, MAX_RUNS),
    'steps_per_call': _POSITIVE_STEPS,
    'batch_size': _Range(1, MAX_BATCH),
    'eval_batch_size': _Range(1, MAX_BATCH),
    'num_train_steps': _POSITIVE_STEPS,
    # <= 0: num_train_steps instead. An epoch is one step at the least.
    'num_epochs': _Range(high=MAX_STEPS),
    'log_every_steps': _POSITIVE_STEPS,
    'eval_every_steps': _POSITIVE_STEPS,
    'checkpoint_every_steps': _POSITIVE_STEPS,
    'keep_checkpoints': _POSITIVE_STEPS,
    'distributed.num_processes': _Range(0, MAX_PROCESSES, note='0: detect'),
    'distributed.process_id': _Range(-1, MAX_PROCESSES - 1,
                                     note='-1: detect'),
    'cpu_devices': _Range(0, MAX_CPU_DEVICES, note='0: one per core'),
    'profile.first_step': _Range(0, MAX_STEPS),
    'profile.num_steps': _Range(0, MAX_STEPS),
}

CHOICES = {
    'data.name': DATASETS,
    'data.normalization': NORMALIZATIONS,
    'model.block': models.BLOCKS,
    'model.shortcut': models.SHORTCUTS,
    'model.dtype': DTYPES,
    'optimizer.weight_decay_mode': optimizer.WEIGHT_DECAY_MODES,
    'optimizer.weight_decay_on': optimizer.WEIGHT_DECAY_ON,
    'schedule.name': schedules.SCHEDULES,
    'parallelism': parallel.MODES,
}

# Pixel units, 0..255. A std below 1e-3 would blow the inputs past 2.5e5.
_MEAN = _Range(0, 255)
_STD = _Range(1e-3, 255)


def _fail(field: str, value, requirement: str):
  shown = tools.one_line(repr(value), 200)  # The value, not too long.
  raise ValueError(f'config.{field}={shown}: {requirement}')


def _check(ok: bool, field: str, value, requirement: str):
  if not ok:
    _fail(field, value, requirement)


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
  """An int, or a finite float."""
  return _is_int(x) or (isinstance(x, float) and math.isfinite(x))


def _check_type(field: str, value, default_value) -> None:
  """`value` has the type of `default_value`, the field's default."""
  if isinstance(default_value, bool):
    _check(isinstance(value, bool), field, value, 'must be True or False')
  elif isinstance(default_value, int):
    _check(_is_int(value), field, value, 'must be an integer')
  elif isinstance(default_value, float):
    _check(_is_number(value), field, value, 'must be a finite number')
  elif isinstance(default_value, str):
    _check(isinstance(value, str), field, value, 'must be a string')
  elif isinstance(default_value, (tuple, list)):
    _check(isinstance(value, (tuple, list)) and all(map(_is_number, value)),
           field, value, 'must be a list of finite numbers')
  else:
    raise TypeError(f'resnet_jax/defaults.py: no check for the type of '
                    f'config.{field}={default_value!r}')


def _check_json(field: str, value) -> None:
  if hasattr(value, 'to_dict'):
    value = value.to_dict()
  try:
    json.dumps(value, allow_nan=False)
  except (TypeError, ValueError):
    _fail(field, value, 'must be a JSON value (added fields are saved with '
          'the checkpoints)')


def _check_types(config, defaults, prefix: str = '') -> None:
  """Every field of `defaults` present with its type; added fields JSON."""
  for key in defaults.keys():
    field, default_value = prefix + key, defaults[key]
    if key not in config:
      raise ValueError(f'config.{field} is missing (resnet_jax/defaults.py has '
                       'it)')
    value = config[key]
    if hasattr(default_value, 'keys'):
      _check(hasattr(value, 'keys'), field, value, 'must be a group of fields')
      _check_types(value, default_value, field + '.')
    else:
      _check_type(field, value, default_value)
  for key in config.keys():
    if key not in defaults:
      _check_json(prefix + key, config[key])


def _check_channels(field: str, values, allowed: _Range) -> None:
  _check(len(values) == 3 and all(v in allowed for v in values), field,
         values, 'must be three numbers (one per channel) in '
         f'[{allowed.low}, {allowed.high}]')


def _check_schedule(config, total_steps: int, field: str, value) -> None:
  """The schedule of `total_steps` steps exists (warm-up shorter than them)."""
  try:
    schedules.create_learning_rate_fn(config.schedule, config.batch_size,
                                      total_steps)
  except ValueError as e:
    _fail(field, value, str(e))


def validate(config) -> None:
  """Raises ValueError naming the first invalid field of `config`."""
  default = defaults.get_config()
  _check_types(config, default)
  values = tools.flatten(config.to_dict())
  for field, default_value in tools.flatten(default.to_dict()).items():
    value = values[field]
    if field in CHOICES:
      _check(value in CHOICES[field], field, value,
             f'must be one of {CHOICES[field]}')
    if field in RANGES:
      _check(value in RANGES[field], field, value,
             RANGES[field].requirement(_is_int(default_value)))

  model = config.model
  try:
    models.blocks_per_stage(model.depth, model.block)
  except ValueError as e:
    _fail('model.depth', model.depth, f'{e} (config.model.block='
          f'{model.block!r})')

  data = config.data
  _check(bool(data.train_split), 'data.train_split', data.train_split,
         'must name a split')
  for field in datasets.SPLIT_FIELDS:
    if data[field]:
      try:
        datasets.parse_split(data[field])
      except ValueError as e:
        _fail(f'data.{field}', data[field], str(e))
  _check(data.name != datasets.IMAGE_FOLDER or bool(data.data_dir),
         'data.data_dir', data.data_dir,
         "must be the folder's root for config.data.name='image_folder'")
  _check_channels('data.mean', data.mean, _MEAN)
  _check_channels('data.std', data.std, _STD)

  fractions = tuple(config.schedule.decay_fractions)
  _check(all(0 < f < 1 for f in fractions) and all(
      a < b for a, b in zip(fractions, fractions[1:])),
         'schedule.decay_fractions', fractions,
         'must be increasing fractions of training in (0, 1)')
  if config.num_epochs <= 0:  # Else the length needs the split's size.
    _check_schedule(config, config.num_train_steps, 'schedule.warmup_steps',
                    config.schedule.warmup_steps)

  _check(config.seed + config.num_runs - 1 <= MAX_SEED, 'num_runs',
         config.num_runs, f'must keep the last run\'s seed, config.seed + '
         f'num_runs - 1, at most {MAX_SEED} (config.seed={config.seed})')

  distributed = config.distributed
  _check(not distributed.enabled or config.parallelism == 'shard_map',
         'parallelism', config.parallelism,
         "must be 'shard_map' with config.distributed.enabled")
  _check(not distributed.num_processes or
         distributed.process_id < distributed.num_processes,
         'distributed.process_id', distributed.process_id,
         'must be -1 (detect) or less than config.distributed.num_processes='
         f'{distributed.num_processes}')


def validate_with_split(config, train_ds: datasets.InMemoryDataset) -> None:
  """Raises ValueError naming the field that the training split rules out.

  For a config that passed `validate`: the batch must fit in the split, the
  crop padding must leave image pixels in every crop, and num_epochs must
  give 1 to MAX_STEPS steps, more than the warm-up.
  """
  n = train_ds.num_examples
  _check(config.batch_size <= n, 'batch_size', config.batch_size,
         f'must be at most the {n} examples of the training split '
         f'{config.data.train_split!r}')
  side = min(train_ds.images.shape[1:3])
  # Padded by `side` or more, a crop can hold no pixel of the image.
  _check(config.data.crop_padding < side, 'data.crop_padding',
         config.data.crop_padding,
         f'must be less than {side}, the side of the training images')
  if config.num_epochs > 0:
    steps_per_epoch = n // config.batch_size
    # As experiment.build counts them.
    total_steps = round(config.num_epochs * steps_per_epoch)
    _check(1 <= total_steps <= MAX_STEPS, 'num_epochs', config.num_epochs,
           f'must give 1 to {MAX_STEPS} steps of training; it gives '
           f'{total_steps} ({steps_per_epoch} per epoch)')
    _check_schedule(config, total_steps, 'num_epochs', config.num_epochs)
