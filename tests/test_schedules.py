"""Learning-rate schedules at their boundary steps, and batch-size scaling."""

import importlib

import ml_collections
import pytest

from resnet_jax.core import schedules


def schedule_config(**overrides):
  config = ml_collections.ConfigDict(dict(
      name='paper', base_learning_rate=0.1, reference_batch_size=128,
      decay_fractions=(0.5, 0.75), decay_factor=0.1, warmup_steps=0,
      warmup_learning_rate=0.01, one_cycle_pct_start=0.3,
      one_cycle_div_factor=25.0, one_cycle_final_div_factor=1e4))
  config.update(overrides)
  return config


def lr_at(fn, *steps):
  return [float(fn(s)) for s in steps]


def test_paper_schedule_divides_by_ten_at_32k_and_48k_of_64k():
  fn = schedules.create_learning_rate_fn(schedule_config(), 128, 64_000)
  assert lr_at(fn, 0, 31_999, 32_000, 47_999, 48_000, 63_999) == pytest.approx(
      [0.1, 0.1, 0.01, 0.01, 0.001, 0.001])


def test_resnet110_warm_up_runs_at_001_for_400_iterations_then_returns_to_01():
  fn = schedules.create_learning_rate_fn(
      schedule_config(warmup_steps=400), 128, 64_000)
  assert lr_at(fn, 0, 399, 400, 31_999, 32_000) == pytest.approx(
      [0.01, 0.01, 0.1, 0.1, 0.01])


def test_rate_scales_linearly_with_batch_and_warm_up_covers_the_same_images():
  fn = schedules.create_learning_rate_fn(
      schedule_config(warmup_steps=400), 256, 32_000)
  assert lr_at(fn, 199, 200, 15_999, 16_000, 24_000) == pytest.approx(
      [0.02, 0.2, 0.2, 0.02, 0.002])


def test_warmup_cosine_rises_linearly_then_falls_to_zero():
  fn = schedules.create_learning_rate_fn(
      schedule_config(name='warmup_cosine', warmup_steps=100), 128, 1100)
  assert lr_at(fn, 0, 50, 100, 600, 1100) == pytest.approx(
      [0.0, 0.05, 0.1, 0.05, 0.0], abs=1e-7)


def test_one_cycle_starts_low_peaks_at_pct_start_and_ends_lower_still():
  fn = schedules.create_learning_rate_fn(
      schedule_config(name='one_cycle'), 128, 1000)
  start, peak, end = lr_at(fn, 0, 300, 1000)
  assert start == pytest.approx(0.1 / 25)
  assert peak == pytest.approx(0.1)
  assert end == pytest.approx(0.1 / 25 / 1e4)
  assert max(lr_at(fn, *range(0, 1000, 10))) == pytest.approx(0.1)


def test_unknown_schedule_and_impossible_warm_up_are_rejected():
  with pytest.raises(ValueError, match="unknown schedule 'linear'"):
    schedules.create_learning_rate_fn(schedule_config(name='linear'), 128, 10)
  with pytest.raises(ValueError, match='total steps > warm-up steps'):
    schedules.create_learning_rate_fn(
        schedule_config(name='warmup_cosine', warmup_steps=400), 128, 300)


@pytest.mark.parametrize('name, warmup', [('resnet20', 0), ('resnet110', 400)])
def test_paper_configs_reproduce_the_paper_schedule(name, warmup):
  config = importlib.import_module(f'configs.{name}').get_config()
  fn = schedules.create_learning_rate_fn(config.schedule, config.batch_size,
                                         config.num_train_steps)
  assert config.batch_size == 128 and config.num_train_steps == 64_000
  assert lr_at(fn, warmup, 32_000, 48_000) == pytest.approx([0.1, 0.01, 0.001])
  if warmup:
    assert lr_at(fn, warmup - 1) == pytest.approx([0.01])
