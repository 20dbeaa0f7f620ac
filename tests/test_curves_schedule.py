"""curves.png: the learning rate as the schedule gives it, a readable title."""

import json

import numpy as np
import pytest

from configs import smoke
from resnet_jax.read import report
from resnet_jax.run import metric_writer


@pytest.fixture(name='drawn')
def fixture_drawn(monkeypatch):
  """What write_curves would draw: curves_png's arguments."""
  calls = []
  monkeypatch.setattr(report, 'curves_png', lambda scalars, path, **kwargs:
                      calls.append(dict(kwargs, scalars=scalars)) or path)
  return calls


def _workdir(path, summary=None, num_epochs=-1.0):
  # A paper schedule over 100 steps (decays after steps 50 and 75), logged
  # every 40 steps and at the end, as the trainer logs it.
  config = smoke.get_config()
  config.update(num_train_steps=100, log_every_steps=40, num_epochs=num_epochs)
  (path / 'config.json').write_text(config.to_json_best_effort())
  with metric_writer.MetricWriter(str(path)) as writer:
    for step, rate in ((40, 0.0125), (80, 0.000125), (100, 0.000125)):
      writer.write_scalars(step, {'learning_rate': rate, 'train_loss': 2.0})
  if summary:
    (path / 'summary.json').write_text(json.dumps(summary))
  return str(path)


def test_the_learning_rate_is_the_schedule_of_every_step(tmp_path, drawn):
  report.write_curves(_workdir(tmp_path))
  steps, rates = drawn[0]['scalars']['learning_rate']
  assert list(steps) == list(range(1, 101))
  # Batch 16: 0.1 * 16 / 128; the rate a step trained at, as logged.
  expected = np.repeat([0.0125, 0.00125, 0.000125], [50, 25, 25])
  np.testing.assert_allclose(rates, expected, rtol=1e-6)
  # The other curves are the logged ones.
  assert list(drawn[0]['scalars']['train_loss'][0]) == [40, 80, 100]


def test_without_a_known_length_the_logged_rates_are_drawn(tmp_path, drawn):
  # An epoch-based run still training: its length depends on the split.
  report.write_curves(_workdir(tmp_path, num_epochs=3.0))
  assert list(drawn[0]['scalars']['learning_rate'][0]) == [40, 80, 100]


def test_the_title_gives_steps_and_epochs_rounded(tmp_path, drawn):
  report.write_curves(_workdir(tmp_path, summary={
      'config': 'smoke', 'dataset': 'cifar10', 'steps': 100,
      'epochs': 0.569801}))
  assert drawn[0]['title'].endswith(
      ': smoke, cifar10, 100 steps (0.57 epochs)')


@pytest.mark.parametrize('epochs, shown', [
    (1.0, '1 epoch'), (15.0, '15 epochs'), (30.5, '30.5 epochs'),
    (182.04, '182 epochs'), (9.999, '10 epochs')])
def test_epochs_are_rounded_to_what_matters(epochs, shown):
  assert report._length({'steps': 64_000, 'epochs': epochs}) == (  # pylint: disable=protected-access
      f'64,000 steps ({shown})')
