"""Rejects an invalid config before anything is written, in one line:
`config.<field>=<value>: <requirement>`.

`validate` checks every field of defaults.FIELDS: its default's type, its range
or choices, and the rules between fields; a field a user adds may hold any JSON
value. ml_collections' type safety is not enough: it lets None, a bool for an
int, NaN and lists of anything through, and configs read back from JSON have
none. `validate_with_split` checks what needs the training split,
`learning_rate_fn` the schedule it builds; `read_config` reads a config.json.
"""

import json
import math
import os

import ml_collections

from resnet_jax import utils
from resnet_jax.core import models
from resnet_jax.core import schedules
from resnet_jax.data import batching, datasets
from resnet_jax.run import defaults, parallel

CONFIG_FILE = 'config.json'  # A workdir's (and a release's) config.
# data.name's choices: datasets.py's names. Not in defaults.FIELDS: defaults
# importing datasets (and so utils) would make the import chain 7 levels deep.
_DATA_NAMES = datasets.TFDS_DATASETS + (datasets.IMAGE_FOLDER,)


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x) -> bool:
  return _is_int(x) or (isinstance(x, float) and math.isfinite(x))


# (type of a default, test of a value, requirement), the first that matches.
_TYPES = (
    (bool, lambda v: isinstance(v, bool), 'must be True or False'),
    (int, _is_int, 'must be an integer'),
    (float, _is_number, 'must be a finite number'),
    (str, lambda v: isinstance(v, str), 'must be a string'),
    ((tuple, list), lambda v: isinstance(v, (tuple, list)) and all(
        map(_is_number, v)), 'must be a list of finite numbers'),
)


def _fail(field: str, value, requirement: str):
  shown = utils.one_line(repr(value), 200)  # The value, not too long.
  raise ValueError(f'config.{field}={shown}: {requirement}')


def _check(ok: bool, field: str, value, requirement: str) -> None:
  if not ok:
    _fail(field, value, requirement)


def _check_types(config, default, prefix: str = '') -> None:
  """Every field of `default` present with its type; added fields JSON."""
  for key in default.keys():
    field, want = prefix + key, default[key]
    if key not in config:
      raise ValueError(f'config.{field} is missing '
                       '(resnet_jax/run/defaults.py has it)')
    value = config[key]
    if hasattr(want, 'keys'):
      _check(hasattr(value, 'keys'), field, value, 'must be a group of fields')
      _check_types(value, want, field + '.')
    else:
      kinds = [(t, r) for kind, t, r in _TYPES if isinstance(want, kind)]
      if not kinds:
        raise TypeError(f'resnet_jax/run/defaults.py: no check for the type of '
                        f'config.{field}={want!r}')
      _check(kinds[0][0](value), field, value, kinds[0][1])
  for key in [k for k in config.keys() if k not in default]:
    value = config[key]
    try:
      json.dumps(value.to_dict() if hasattr(value, 'to_dict') else value,
                 allow_nan=False)
    except (TypeError, ValueError):
      _fail(prefix + key, value, 'must be a JSON value (added fields are '
            'saved with the checkpoints)')


def validate(config) -> None:
  """Raises ValueError naming the first invalid field of `config`."""
  default = defaults.get_config()
  _check_types(config, default)
  values = utils.flatten(config.to_dict())
  for field, default_value in utils.flatten(default.to_dict()).items():
    value = values[field]
    allowed = _DATA_NAMES if field == 'data.name' else defaults.FIELDS[field][1]
    if allowed is None:
      continue
    if isinstance(allowed, tuple):  # Choices.
      _check(value in allowed, field, value, f'must be one of {allowed}')
    elif isinstance(default_value, tuple):  # A Range for each channel.
      _check(len(value) == 3 and all(v in allowed for v in value), field,
             value, 'must be three numbers (one per channel) in '
             f'[{allowed.low}, {allowed.high}]')
    else:
      _check(value in allowed, field, value,
             allowed.requirement(_is_int(default_value)))

  model, data = config.model, config.data
  try:
    models.blocks_per_stage(model.depth, model.block)
  except ValueError as e:
    _fail('model.depth', model.depth,
          f'{e} (config.model.block={model.block!r})')
  _check(bool(data.train_split), 'data.train_split', data.train_split,
         'must name a split')
  for field in datasets.SPLIT_FIELDS:
    try:
      if data[field]:
        datasets.parse_split(data[field])
    except ValueError as e:
      _fail(f'data.{field}', data[field], str(e))
  _check(data.name != datasets.IMAGE_FOLDER or bool(data.data_dir),
         'data.data_dir', data.data_dir,
         "must be the folder's root for config.data.name='image_folder'")

  fractions = tuple(config.schedule.decay_fractions)
  _check(all(0 < f < 1 for f in fractions) and all(
      a < b for a, b in zip(fractions, fractions[1:])),
         'schedule.decay_fractions', fractions,
         'must be increasing fractions of training in (0, 1)')
  _check(config.seed + config.num_runs - 1 <= defaults.MAX_SEED, 'num_runs',
         config.num_runs, f'must keep the last run\'s seed, config.seed + '
         f'num_runs - 1, at most {defaults.MAX_SEED} (config.seed='
         f'{config.seed})')

  distributed = config.distributed
  _check(not distributed.enabled or config.parallelism in parallel.GLOBAL_MODES,
         'parallelism', config.parallelism,
         f'must be one of {parallel.GLOBAL_MODES} with '
         'config.distributed.enabled')
  _check(not distributed.num_processes or
         distributed.process_id < distributed.num_processes,
         'distributed.process_id', distributed.process_id,
         'must be -1 (detect) or less than config.distributed.num_processes='
         f'{distributed.num_processes}')


def validate_with_split(config, train_ds: datasets.InMemoryDataset
                        ) -> tuple[int, int]:
  """(steps per epoch, total steps) of the run on `train_ds`, or a ValueError
  naming the field that the split rules out (for a config that passed
  `validate`): a batch larger than the split, a crop padding that leaves no
  image pixel in a crop, a num_epochs giving not 1 to MAX_STEPS steps."""
  n = train_ds.num_examples
  try:
    per_epoch = batching.steps_per_epoch(n, config.batch_size)
  except ValueError:
    _fail('batch_size', config.batch_size, f'must be at most the {n} '
          f'examples of the training split {config.data.train_split!r}')
  side = min(train_ds.images.shape[1:3])
  _check(config.data.crop_padding < side, 'data.crop_padding',
         config.data.crop_padding,
         f'must be less than {side}, the side of the training images')
  total_steps = batching.total_steps(config, n)
  max_steps = defaults.MAX_STEPS
  _check(config.num_epochs <= 0 or 1 <= total_steps <= max_steps, 'num_epochs',
         config.num_epochs, f'must give 1 to {max_steps} steps of training; '
         f'it gives {total_steps} ({per_epoch} per epoch)')
  return per_epoch, total_steps


def learning_rate_fn(config, total_steps: int):
  """The run's schedule over `total_steps` steps, built (to train, to draw)
  and so checked here alone: a warm-up as long as the run is refused naming
  num_epochs, or schedule.warmup_steps where num_train_steps is the length."""
  try:
    return schedules.create_learning_rate_fn(config.schedule,
                                             config.batch_size, total_steps)
  except ValueError as e:
    if config.num_epochs > 0:
      _fail('num_epochs', config.num_epochs, str(e))
    _fail('schedule.warmup_steps', config.schedule.warmup_steps, str(e))


def read_config(workdir: str,
                data_dir: str | None = None) -> ml_collections.ConfigDict:
  """The config.json the run in `workdir` trained with, validated as the
  trainer's; with `data_dir`, the dataset is there instead."""
  if not os.path.isdir(workdir):
    raise ValueError(f'workdir {workdir} does not exist or is not a directory')
  path = os.path.join(workdir, CONFIG_FILE)
  if not os.path.exists(path):
    raise ValueError(
        f'{path} is missing: {workdir} is not a workdir written by '
        'resnet_jax.main (or was written before runs saved their config)')
  try:
    with open(path) as f:
      # JSON has no tuples: tuple fields (mean, std, ...) come back as lists.
      recorded = ml_collections.ConfigDict(json.load(f)).to_dict()
  except (OSError, ValueError, TypeError, AttributeError) as e:
    raise ValueError(f'{path} is not a config written by the trainer: '
                     f'{str(e) or type(e).__name__}') from None
  if 'num_runs' not in recorded:
    raise ValueError(
        f'{path} has no num_runs: {workdir} was written before checkpoints '
        'held several runs, and cannot be loaded by this version; train it '
        'again')
  # A field added to defaults.py since the run was written is read as its
  # default, which keeps the behaviour the run had (defaults.py's rule).
  config = ml_collections.ConfigDict(
      _with_defaults(recorded, defaults.get_config().to_dict()))
  if data_dir:
    config.data.data_dir = data_dir
  try:
    validate(config)
  except (ValueError, TypeError, KeyError, AttributeError) as e:
    raise ValueError(f'{path} is not a valid config: {e}; restore it as the '
                     'trainer wrote it') from None
  return config


def _with_defaults(recorded, default):
  """`recorded` (nested dicts) with the fields it lacks taken from `default`."""
  if not (isinstance(recorded, dict) and isinstance(default, dict)):
    return recorded
  return default | {key: _with_defaults(value, default.get(key))
                    for key, value in recorded.items()}
