"""Every shipped config is valid and documented; invalid values are refused."""

import importlib
import pathlib

import pytest

from configs import default
from resnet_jax import config_checks

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
    (dict(data=dict(std=(1.0, 0.0, 1.0))), 'config.data.mean/std'),
    (dict(parallelism='ddp'), "config.parallelism='ddp'"),
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
