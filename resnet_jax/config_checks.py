"""Rejects an invalid config before any work starts, with a one-line reason."""

from resnet_jax import input_pipeline, models, optimizer, parallel, schedules

DATASETS = input_pipeline.TFDS_DATASETS + (input_pipeline.IMAGE_FOLDER,)
NORMALIZATIONS = ('constants', 'measured')
DTYPES = ('float32', 'bfloat16')


def _check(ok: bool, field: str, value, requirement: str):
  if not ok:
    raise ValueError(f'config.{field}={value!r}: {requirement}')


def _get(config, field: str):
  for part in field.split('.'):
    config = config[part]
  return config


def _one_of(config, field, choices):
  value = _get(config, field)
  _check(value in choices, field, value, f'must be one of {choices}')


def _positive(config, *fields):
  for field in fields:
    value = _get(config, field)
    _check(isinstance(value, int) and value > 0, field, value,
           'must be a positive integer')


def validate(config) -> None:
  """Raises ValueError naming the first invalid field of `config`."""
  model = config.model
  _one_of(config, 'model.block', models.BLOCKS)
  _one_of(config, 'model.shortcut', models.SHORTCUTS)
  _one_of(config, 'model.dtype', DTYPES)
  try:
    models.blocks_per_stage(model.depth, model.block)
  except ValueError as e:
    raise ValueError(f'config.model.depth={model.depth!r}: {e}') from None
  _positive(config, 'model.width', 'model.num_classes', 'batch_size',
            'eval_batch_size', 'num_train_steps', 'log_every_steps',
            'eval_every_steps', 'checkpoint_every_steps', 'keep_checkpoints')
  _check(0 <= model.bn_momentum < 1, 'model.bn_momentum', model.bn_momentum,
         'must be in [0, 1)')
  _check(model.bn_epsilon > 0, 'model.bn_epsilon', model.bn_epsilon,
         'must be > 0')

  _one_of(config, 'optimizer.weight_decay_mode', optimizer.WEIGHT_DECAY_MODES)
  _one_of(config, 'optimizer.weight_decay_on', optimizer.WEIGHT_DECAY_ON)
  _check(0 <= config.optimizer.momentum < 1, 'optimizer.momentum',
         config.optimizer.momentum, 'must be in [0, 1)')
  _check(config.optimizer.weight_decay >= 0, 'optimizer.weight_decay',
         config.optimizer.weight_decay, 'must be >= 0')
  _check(0 <= config.label_smoothing < 1, 'label_smoothing',
         config.label_smoothing, 'must be in [0, 1)')

  schedule = config.schedule
  _one_of(config, 'schedule.name', schedules.SCHEDULES)
  _check(schedule.base_learning_rate > 0, 'schedule.base_learning_rate',
         schedule.base_learning_rate, 'must be > 0')
  _positive(config, 'schedule.reference_batch_size')
  fractions = tuple(schedule.decay_fractions)
  _check(all(0 < f < 1 for f in fractions) and list(fractions) == sorted(
      fractions), 'schedule.decay_fractions', fractions,
         'must be increasing fractions of training in (0, 1)')
  _check(schedule.warmup_steps >= 0, 'schedule.warmup_steps',
         schedule.warmup_steps, 'must be >= 0')

  data = config.data
  _one_of(config, 'data.name', DATASETS)
  _one_of(config, 'data.normalization', NORMALIZATIONS)
  _check(bool(data.train_split), 'data.train_split', data.train_split,
         'must name a split')
  for field in ('train_split', 'eval_split', 'test_split'):
    if data[field]:
      try:
        input_pipeline.parse_split(data[field])
      except ValueError as e:
        raise ValueError(f'config.data.{field}={data[field]!r}: {e}') from None
  _check(isinstance(data.on_device, bool), 'data.on_device', data.on_device,
         'must be True or False')
  _check(isinstance(data.crop_padding, int) and data.crop_padding >= 0,
         'data.crop_padding', data.crop_padding, 'must be an integer >= 0')
  _check(len(data.mean) == 3 and len(data.std) == 3 and min(data.std) > 0,
         'data.mean/std', (data.mean, data.std),
         'must be three means and three positive standard deviations')
  _check(data.name != 'image_folder' or bool(data.data_dir), 'data.data_dir',
         data.data_dir, "must be the folder's root for data.name='image_folder'")
  _one_of(config, 'parallelism', parallel.MODES)
  distributed = config.distributed
  _check(isinstance(distributed.num_processes, int) and
         distributed.num_processes >= 0, 'distributed.num_processes',
         distributed.num_processes, 'must be an integer >= 0 (0: detect)')
  _check(isinstance(distributed.process_id, int) and
         distributed.process_id >= -1, 'distributed.process_id',
         distributed.process_id, 'must be an integer >= -1 (-1: detect)')
  _check(not distributed.enabled or config.parallelism == 'shard_map',
         'parallelism', config.parallelism,
         "must be 'shard_map' with config.distributed.enabled")
  _check(isinstance(config.cpu_devices, int) and config.cpu_devices >= 0,
         'cpu_devices', config.cpu_devices,
         'must be an integer >= 0 (0: one per core)')
  _check(isinstance(config.compilation_cache_dir, str),
         'compilation_cache_dir', config.compilation_cache_dir,
         "must be a directory path, or '' for no cache")
