"""experiment.build: one run's pieces, and what a resume must agree with."""

import jax
import numpy as np
import pytest

from configs import smoke
from resnet_jax.data import datasets
from resnet_jax.run import checkpoints, experiment, parallel


def _split(num_examples=64):
  rng = np.random.default_rng(0)
  return datasets.InMemoryDataset(
      images=rng.integers(0, 256, (num_examples, 32, 32, 3), np.uint8),
      labels=rng.integers(0, 10, num_examples).astype(np.int32),
      class_names=tuple(map(str, range(10))))


def _build(config, **kwargs):
  return experiment.build(config, dp=parallel.DataParallel('jit'),
                          image_shape=(32, 32, 3), **kwargs)


def _refusal(tmp_path, saved_config, resumed_config) -> str | None:
  """The error a checkpoint of `saved_config` gives `resumed_config`."""
  saved = _build(saved_config)
  directory = tmp_path / 'checkpoints'
  with checkpoints.Checkpointer(
      directory, metadata=saved.checkpoint_metadata()) as writer:
    writer.save(1, jax.device_get(saved.init_state()))
  with checkpoints.Checkpointer(directory, metadata=_build(
      resumed_config).checkpoint_metadata()) as reader:
    try:
      reader.check_compatible()
    except checkpoints.IncompatibleCheckpointError as e:
      return str(e)
  return None


def test_a_field_added_to_the_config_is_part_of_the_recipe(tmp_path):
  # Nothing lists the recipe's fields: a new one is compared on resume.
  saved, resumed = smoke.get_config(), smoke.get_config()
  saved.new_setting = 1
  resumed.new_setting = 2
  message = _refusal(tmp_path, saved, resumed)
  assert message and 'training.new_setting: checkpoint 1, this run 2' in (
      message)


@pytest.mark.parametrize('field, value', [
    ('seed', 1), ('batch_size', 32), ('label_smoothing', 0.1),
    ('schedule.decay_factor', 0.2), ('data.crop_padding', 2),
    ('optimizer.nesterov', True), ('model.dtype', 'bfloat16'),
    ('data.eval_split', 'train[80%:]'), ('num_runs', 2),
    ('vectorize_runs', True),
])
def test_every_recipe_field_must_match_to_resume(tmp_path, field, value):
  resumed = smoke.get_config()
  section, _, name = field.rpartition('.')
  (resumed[section] if section else resumed)[name] = value
  message = _refusal(tmp_path, smoke.get_config(), resumed)
  assert message and f'training.{field}: checkpoint' in message


@pytest.mark.parametrize('field, value', [
    ('log_every_steps', 7), ('eval_every_steps', 5),
    ('checkpoint_every_steps', 1), ('keep_checkpoints', 9),
    ('eval_batch_size', 8), ('parallelism', 'shard_map'), ('cpu_devices', 1),
    ('compilation_cache_dir', ''), ('distributed.num_processes', 2),
    ('profile.num_steps', 3), ('data.on_device', False),
    ('data.data_dir', '/elsewhere'), ('data.download', False),
    ('steps_per_call', 8),
])
def test_how_a_run_is_observed_laid_out_or_saved_may_change(
    tmp_path, field, value):
  resumed = smoke.get_config()
  section, _, name = field.rpartition('.')
  (resumed[section] if section else resumed)[name] = value
  assert _refusal(tmp_path, smoke.get_config(), resumed) is None


def test_the_length_comes_from_epochs_of_the_split_or_the_step_count():
  config = smoke.get_config()
  exp = experiment.build(config, train_ds=_split(64))
  assert exp.total_steps == config.num_train_steps
  assert exp.steps_per_epoch == 64 // config.batch_size
  config.num_epochs = 2.5
  exp = experiment.build(config, train_ds=_split(64))
  assert exp.total_steps == 10 and exp.image_shape == (32, 32, 3)


def test_batch_sizes_must_divide_over_the_devices():
  config = smoke.get_config()
  config.batch_size = 20  # conftest gives 8 CPU devices.
  with pytest.raises(ValueError, match=r'^config.batch_size=20 does not '
                     r'divide over 8 devices .* multiple of 8'):
    experiment.build(config, dp=parallel.DataParallel('pmap'),
                     train_ds=_split())


def test_measured_normalisation_needs_the_training_split():
  config = smoke.get_config()
  config.data.normalization = 'measured'
  with pytest.raises(ValueError, match="normalization='measured'"):
    _build(config)
  ds = _split()
  exp = experiment.build(config, dp=parallel.DataParallel('jit'),
                         train_ds=ds)
  mean, std = datasets.measure_channel_stats(ds)
  np.testing.assert_array_equal(exp.mean, mean)
  np.testing.assert_array_equal(exp.std, std)


def test_the_abstract_state_is_the_initial_states_shape_without_running_it():
  exp = _build(smoke.get_config())
  abstract, state = exp.abstract_state(), exp.init_state()
  assert (jax.tree.map(lambda a: (a.shape, a.dtype), abstract) ==
          jax.tree.map(lambda a: (np.shape(a), jax.numpy.result_type(a)),
                       state))
  assert all(isinstance(leaf, jax.ShapeDtypeStruct)
             for leaf in jax.tree.leaves(abstract))
