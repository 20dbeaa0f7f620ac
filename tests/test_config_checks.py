"""Every shipped config is valid and documented; invalid values are refused.

The property tests set each field of configs/default.py, one at a time, to
values of every kind on the smoke config: the check either passes, and the run
then builds and traces, or refuses with one line naming the field.
"""

import importlib
import math
import os
import pathlib
import re
import subprocess
import sys

from hypothesis import given, settings, strategies as st
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

from configs import default, smoke
from resnet_jax.core import schedules
from resnet_jax.data import datasets
from resnet_jax.run import config_checks, defaults, experiment, parallel

CONFIG_NAMES = sorted(p.stem for p in (
    pathlib.Path(__file__).resolve().parents[1] / 'configs').glob('*.py')
                      if p.stem != '__init__')


def test_the_paper_configs_and_smoke_exist():
  assert {'default', 'smoke', 'resnet20', 'resnet32', 'resnet44', 'resnet56',
          'resnet110'} <= set(CONFIG_NAMES)


@pytest.mark.parametrize('name', CONFIG_NAMES)
def test_each_config_validates_and_documents_command_and_expectations(name):
  module = importlib.import_module(f'configs.{name}')
  config_checks.validate(module.get_config())
  if name != 'default':
    assert f'--config=configs/{name}.py' in module.__doc__
    assert 'Expected' in module.__doc__


@pytest.mark.parametrize('override, message', [
    (dict(model=dict(depth=21)), 'config.model.depth=21: depth 21 is not 6n\\+2'),
    (dict(model=dict(block='dense')), "config.model.block='dense': must be one of"),
    (dict(model=dict(dtype='float16')), "config.model.dtype='float16'"),
    (dict(batch_size=0), 'config.batch_size=0: must be a positive integer'),
    (dict(batch_size=-128), 'config.batch_size=-128'),
    (dict(num_train_steps=0), 'config.num_train_steps=0'),
    (dict(schedule=dict(name='linear')), "config.schedule.name='linear'"),
    (dict(schedule=dict(decay_fractions=(0.75, 0.5))),
     'config.schedule.decay_fractions'),
    (dict(optimizer=dict(momentum=1.5)), 'config.optimizer.momentum=1.5'),
    (dict(data=dict(name='imagenet')), "config.data.name='imagenet'"),
    (dict(data=dict(train_split='train[:abc]')), 'config.data.train_split'),
    (dict(data=dict(name='image_folder')), "config.data.data_dir='': must be"),
    (dict(data=dict(std=(1.0, 0.0, 1.0))),
     'config.data.std=\\(1.0, 0.0, 1.0\\)'),
    (dict(parallelism='ddp'), "config.parallelism='ddp'"),
    (dict(parallelism='pmap', distributed=dict(enabled=True)),
     "config.parallelism='pmap': must be one of \\('sharded', 'shard_map'\\) "
     'with config.distributed.enabled'),
    (dict(label_smoothing=1.0), 'config.label_smoothing=1.0'),
])
def test_invalid_values_are_rejected_naming_the_field(override, message):
  config = default.get_config()
  config.update_from_flattened_dict({
      (f'{k}.{kk}' if isinstance(v, dict) else k): vv
      for k, v in override.items()
      for kk, vv in (v.items() if isinstance(v, dict) else [(None, v)])})
  with pytest.raises(ValueError, match=message):
    config_checks.validate(config)


def _leaf_fields(config, prefix=''):
  for key in config.keys():
    if isinstance(config[key], ml_collections.ConfigDict):
      yield from _leaf_fields(config[key], f'{prefix}{key}.')
    else:
      yield prefix + key


# From default.py, so that a field added there is covered here.
FIELDS = list(_leaf_fields(default.get_config()))
MAX_INT = 2**70

_numbers = st.one_of(
    st.integers(-MAX_INT, MAX_INT), st.integers(-3, 70),
    st.sampled_from([2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**63, -2**63]),
    st.floats(), st.floats(0, 2), st.sampled_from([-0.0, 1e-300, 1e300]))
_strings = st.one_of(
    st.text(max_size=12),
    st.sampled_from(['', 'train', 'test', 'train[:50%]', 'train[10:]',
                     'train[50%:]', 'train[:-1]', 'x[1:2]', '/tmp/x']))


def _values(field):
  """Values of every kind, and many near the field's default and choices."""
  near = st.sampled_from(_choices(field) + (_get(default.get_config(), field),))
  return st.one_of(
      near, _numbers, _strings, st.booleans(), st.none(),
      st.lists(_numbers, max_size=4).map(tuple),
      st.lists(st.floats(0, 255), min_size=3, max_size=3).map(tuple),
      st.lists(st.floats(0, 1), max_size=3).map(lambda v: tuple(sorted(v))))


def _choices(field):
  if field == 'data.name':  # datasets.py's names.
    return datasets.TFDS_DATASETS + (datasets.IMAGE_FOLDER,)
  allowed = defaults.FIELDS[field][1]
  return allowed if isinstance(allowed, tuple) else ()


def _get(config, field):
  for part in field.split('.'):
    config = config[part]
  return config


def _smoke_with(field, value, schedule='paper'):
  """The smoke config, type checks off, with `field` set to `value`."""
  config = ml_collections.ConfigDict(smoke.get_config().to_dict(),
                                     type_safe=False)
  # Each schedule reads its own fields.
  config.schedule.name = schedule
  section, _, name = field.rpartition('.')
  (_get(config, section) if section else config)[name] = value
  return config


_SCHEDULES = st.sampled_from(schedules.SCHEDULES)


# The range of every numeric field, as its refusal states it, written out here
# and not read from defaults.FIELDS, so that a range widened or narrowed
# there is caught: (low, high, low_open, high_open).
_MAX_STEPS = 2**31 - 1
DOCUMENTED_RANGES = {
    'seed': (0, 2**32 - 1, False, False),
    'data.split_shuffle_seed': (0, 2**32 - 1, False, False),
    'data.crop_padding': (0, math.inf, False, False),
    'model.depth': (1, 2000, False, False),
    'model.width': (1, 64, False, False),
    'model.num_classes': (1, 100_000, False, False),
    'model.bn_momentum': (0, 1, False, True),
    'model.bn_epsilon': (1e-30, 1, False, False),
    'optimizer.momentum': (0, 1, False, True),
    'optimizer.weight_decay': (0, 1, False, False),
    'label_smoothing': (0, 1, False, True),
    'schedule.base_learning_rate': (0, 100, True, False),
    'schedule.reference_batch_size': (1, 2**16, False, False),
    'schedule.decay_factor': (0, 1, True, False),
    'schedule.warmup_steps': (0, _MAX_STEPS, False, False),
    'schedule.warmup_learning_rate': (0, 100, False, False),
    'schedule.one_cycle_pct_start': (0, 1, True, True),
    'schedule.one_cycle_div_factor': (1, 1e8, False, False),
    'schedule.one_cycle_final_div_factor': (1, 1e8, False, False),
    'num_runs': (1, 64, False, False),
    'steps_per_call': (1, _MAX_STEPS, False, False),
    'batch_size': (1, 2**16, False, False),
    'eval_batch_size': (1, 2**16, False, False),
    'num_train_steps': (1, _MAX_STEPS, False, False),
    'num_epochs': (-math.inf, _MAX_STEPS, False, False),
    'log_every_steps': (1, _MAX_STEPS, False, False),
    'eval_every_steps': (1, _MAX_STEPS, False, False),
    'checkpoint_every_steps': (1, _MAX_STEPS, False, False),
    'keep_checkpoints': (1, _MAX_STEPS, False, False),
    'distributed.num_processes': (0, 2**16, False, False),
    'distributed.process_id': (-1, 2**16 - 1, False, False),
    'cpu_devices': (0, 1024, False, False),
    'profile.first_step': (0, _MAX_STEPS, False, False),
    'profile.num_steps': (0, _MAX_STEPS, False, False),
}


def _in_documented_range(field, value) -> bool:
  low, high, low_open, high_open = DOCUMENTED_RANGES[field]
  return ((value > low if low_open else value >= low) and
          (value < high if high_open else value <= high))


def _assert_refused_naming(error: ValueError, field: str):
  message = str(error)
  assert '\n' not in message, message
  assert re.search(rf'config\.{re.escape(field)}\b', message), (
      f'{field}: {message}')


@pytest.mark.slow
@pytest.mark.parametrize('field', FIELDS)
# 40 values a field (hypothesis tries the boundaries, NaN, inf and wrong types
# first); 100 took a tenth of the whole suite's time.
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_any_value_of_any_field_passes_or_is_refused_naming_it(field, data):
  config = _smoke_with(field, data.draw(_values(field), label=field),
                       data.draw(_SCHEDULES, label='schedule.name'))
  try:
    config_checks.validate(config)
  except ValueError as e:
    _assert_refused_naming(e, field)
    return
  # Accepted: then in its documented range (a number, as the type checks).
  value = _get(config, field)
  if field in DOCUMENTED_RANGES:
    assert _in_documented_range(field, value), (field, value)


_SPLIT = datasets.InMemoryDataset(
    images=np.random.default_rng(0).integers(0, 256, (64, 32, 32, 3),
                                             np.uint8),
    labels=np.random.default_rng(1).integers(0, 10, 64).astype(np.int32),
    class_names=tuple(map(str, range(10))))


def _trace(exp):
  """One train and one eval step, traced (not compiled) on abstract data."""
  config = exp.config
  state = jax.eval_shape(exp.init_state)
  spec = jax.ShapeDtypeStruct
  # One call of two steps; leaves (examples, steps, runs, ...).
  lead = (config.batch_size, 2, config.num_runs)
  if config.data.on_device:
    batch = {'rows': spec(lead, jnp.int32)}
  else:
    batch = {'image': spec((*lead, 32, 32, 3), jnp.uint8),
             'label': spec(lead, jnp.int32)}
  new_state, sums = jax.eval_shape(
      exp._compiled_train_steps, state, batch, exp._augment_keys,
      np.int32(0), *exp._train_data)
  assert new_state.step.shape == (config.num_runs,)
  assert sums['loss'].shape == (2, config.num_runs)
  n = config.eval_batch_size
  sums = jax.eval_shape(exp.eval_step, state, {
      'image': spec((n, 32, 32, 3), jnp.uint8),
      'label': spec((n,), jnp.int32), 'mask': spec((n,), jnp.float32)})
  assert sums['count'].shape == (config.num_runs,)


@pytest.mark.slow
@pytest.mark.parametrize('field', FIELDS)
# Each value builds and traces a model: 4 a field (8 took a tenth of the
# suite's time).
@settings(max_examples=4, deadline=None)
@given(data=st.data())
def test_a_config_that_passes_builds_and_traces_or_names_the_field(field,
                                                                   data):
  config = _smoke_with(field, data.draw(_values(field), label=field),
                       data.draw(_SCHEDULES, label='schedule.name'))
  try:
    config_checks.validate(config)
    exp = experiment.build(config, dp=parallel.DataParallel('jit'),
                           train_ds=_SPLIT)
  except ValueError as e:
    _assert_refused_naming(e, field)
    return
  total = exp.total_steps
  assert 1 <= total <= defaults.MAX_STEPS
  for step in (0, 1, total // 2, total - 1, total):
    rate = float(exp.learning_rate_fn(step))
    assert math.isfinite(rate) and rate >= 0, (step, rate)
  _trace(exp)


# The fields that defaults.py gives a Range of numbers.
RANGES = {f for f, (_, allowed) in defaults.FIELDS.items()
          if isinstance(allowed, defaults.Range)}


def test_every_numeric_field_has_a_range():
  # A new number in default.py needs its range here: finite is not enough.
  config = default.get_config()
  numeric = [f for f in FIELDS if isinstance(_get(config, f), (int, float))
             and not isinstance(_get(config, f), bool)]
  assert set(numeric) <= RANGES, set(numeric) - RANGES


def test_every_range_is_documented_here():
  # The channels' ranges (data.mean, data.std) are tested with their values.
  assert set(DOCUMENTED_RANGES) == RANGES - {'data.mean', 'data.std'}


# In-range values that other fields rule out in the smoke config, replaced by
# the nearest ones they allow: depths are 6n + 2, and the warm-up (in steps of
# the reference batch) must be shorter than the run.
_NEAREST_ALLOWED = {('model.depth', 1): 8, ('model.depth', 2000): 1994,
                    ('schedule.warmup_steps', _MAX_STEPS): _MAX_STEPS - 1}


@pytest.mark.parametrize('field', sorted(DOCUMENTED_RANGES))
def test_each_range_accepts_its_bounds_and_refuses_beyond(field):
  """Each closed bound (or, if open, the nearest number inside) is accepted;
  the nearest beyond is refused naming the field: neither widened nor
  narrowed."""
  low, high, low_open, high_open = DOCUMENTED_RANGES[field]
  integer = isinstance(_get(default.get_config(), field), int)

  def beyond(bound, direction):  # The next number past `bound`.
    return bound + direction if integer else math.nextafter(bound,
                                                            direction * math.inf)

  probes = []  # (value, accepted)
  for bound, is_open, inward in ((low, low_open, 1), (high, high_open, -1)):
    if math.isinf(bound):
      continue
    probes += [(bound, not is_open), (beyond(bound, -inward), False)]
    if is_open:
      probes.append((beyond(bound, inward), True))
  for value, accepted in probes:
    value = _NEAREST_ALLOWED.get((field, value), value)
    config = _smoke_with(field, value)
    if field == 'schedule.warmup_steps':
      config.update(num_train_steps=_MAX_STEPS,
                    batch_size=config.schedule.reference_batch_size)
    if accepted:
      config_checks.validate(config)
    else:
      with pytest.raises(ValueError) as error:
        config_checks.validate(config)
      _assert_refused_naming(error.value, field)


@pytest.mark.parametrize('value, ok', [
    (1, True), ('x', True), (None, True), ([1, 'a', {'b': 2.5}], True),
    (float('nan'), False), (float('inf'), False), (object(), False),
])
def test_an_added_field_may_hold_any_json_value(value, ok):
  config = smoke.get_config()
  config.model.added = value
  if ok:
    config_checks.validate(config)
  else:
    with pytest.raises(ValueError, match=r'^config\.model\.added=.*JSON'):
      config_checks.validate(config)


@pytest.mark.parametrize('field, value, message', [
    ('batch_size', 128, 'config.batch_size=128: must be at most the 64'),
    ('data.crop_padding', 1000,
     'config.data.crop_padding=1000: must be less than 32'),
    ('num_epochs', 0.1, 'config.num_epochs=0.1: must give 1 to'),
    ('num_epochs', 2e9, 'config.num_epochs=2000000000.0: must give 1 to'),
])
def test_what_the_training_split_rules_out_is_refused_naming_it(
    field, value, message):
  config = _smoke_with(field, value)
  config_checks.validate(config)
  with pytest.raises(ValueError, match=re.escape(message)):
    config_checks.validate_with_split(config, _SPLIT)


@pytest.mark.slow
def test_a_config_file_loads_from_any_working_directory(tmp_path):
  # The configs import `configs.default`: the package must be installed, not
  # just found in the current directory.
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  result = subprocess.run(
      [sys.executable, '-m', 'resnet_jax.main',
       f'--config={pathlib.Path(default.__file__).parent / "smoke.py"}',
       '--config.batch_size=0'],
      cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
  assert result.returncode == 1, result.stderr[-2000:]
  assert result.stderr.strip().splitlines()[-1].startswith(
      'error: config.batch_size=0'), result.stderr[-2000:]


@pytest.mark.parametrize('parallelism', ['sharded', 'shard_map'])
def test_several_processes_take_either_mesh_layout(parallelism):
  config = default.get_config()
  config.update(parallelism=parallelism)
  config.distributed.enabled = True
  config_checks.validate(config)
