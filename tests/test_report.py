"""Evaluation numbers, pictures and training curves (report.py)."""

import json
import math
import os

import numpy as np
from PIL import Image
import pytest

from resnet_jax.read import report
from resnet_jax.run import metric_writer


def assert_picture(path):
  """A PNG that PIL reads, with something drawn on it."""
  with Image.open(path) as image:
    assert image.format == 'PNG'
    pixels = np.asarray(image.convert('RGB'))
  assert min(pixels.shape[:2]) >= 100
  assert pixels.std() > 0
  assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1


# ----------------------------------------------------------------------------
# Numbers.

# Six examples of three classes, worked out by hand:
#   class 0: examples 0, 1  -> predicted 0, 1
#   class 1: examples 2-4   -> predicted 1, 1, 0
#   class 2: example 5      -> predicted 1
LABELS = np.array([0, 0, 1, 1, 1, 2])
PREDICTIONS = np.array([0, 1, 1, 1, 0, 1])
CONFUSION = np.array([[1, 1, 0],
                      [1, 2, 0],
                      [0, 1, 0]])


def test_the_confusion_matrix_has_true_classes_in_rows_predictions_in_columns():
  confusion = report.confusion_matrix(LABELS, PREDICTIONS, num_classes=3)
  np.testing.assert_array_equal(confusion, CONFUSION)
  assert confusion.dtype == np.int64


def test_per_class_figures_match_the_hand_computed_ones():
  metrics = report.per_class_metrics(CONFUSION)
  np.testing.assert_array_equal(metrics['support'], [2, 3, 1])
  np.testing.assert_array_equal(metrics['predicted'], [2, 4, 0])
  np.testing.assert_array_equal(metrics['correct'], [1, 2, 0])
  np.testing.assert_allclose(metrics['accuracy'], [1 / 2, 2 / 3, 0])
  np.testing.assert_array_equal(metrics['recall'], metrics['accuracy'])
  # Class 2 is never predicted: its precision is undefined, not 0.
  np.testing.assert_allclose(metrics['precision'], [1 / 2, 2 / 4, np.nan])
  # 2TP / (2TP + FP + FN): class 0 2/4, class 1 4/7, class 2 0/1.
  np.testing.assert_allclose(metrics['f1'], [1 / 2, 4 / 7, 0])
  assert report.overall_accuracy(CONFUSION) == 3 / 6


@pytest.mark.parametrize('seed', range(5))
def test_the_figures_add_up_on_random_predictions(seed):
  rng = np.random.default_rng(seed)
  num_classes, n = 7, 200
  labels = rng.integers(0, num_classes, n)
  predictions = np.where(rng.random(n) < 0.6, labels,
                         rng.integers(0, num_classes, n))
  confusion = report.confusion_matrix(labels, predictions, num_classes)
  metrics = report.per_class_metrics(confusion)
  assert confusion.sum() == n
  np.testing.assert_array_equal(confusion.sum(1),
                                np.bincount(labels, minlength=num_classes))
  np.testing.assert_array_equal(confusion.sum(0),
                                np.bincount(predictions, minlength=num_classes))
  assert metrics['correct'].sum() == np.sum(labels == predictions)
  accuracy = report.overall_accuracy(confusion)
  assert accuracy == np.mean(labels == predictions) == np.trace(confusion) / n
  # Overall accuracy is the support-weighted mean of the per-class ones.
  defined = metrics['support'] > 0
  assert math.isclose(
      np.sum(metrics['accuracy'][defined] * metrics['support'][defined]) / n,
      accuracy)


def test_labels_outside_the_classes_are_refused():
  with pytest.raises(ValueError, match='outside 0..2'):
    report.confusion_matrix([0, 3], [0, 1], num_classes=3)
  with pytest.raises(ValueError, match='2 labels but 1 predictions'):
    report.confusion_matrix([0, 1], [0], num_classes=3)


def test_the_summary_is_strict_json_with_the_loss_and_undefined_as_null():
  logits = np.full((6, 3), -2.0)
  logits[np.arange(6), PREDICTIONS] = 1.0
  summary = report.classification_summary(LABELS, logits, ['a', 'b', 'c'])
  json.dumps(summary, allow_nan=False)  # No NaN: null where undefined.
  assert summary['num_examples'] == 6 and summary['accuracy'] == 0.5
  assert summary['confusion_matrix'] == CONFUSION.tolist()
  # Right: -log(e / (e + 2 e^-2)); wrong: -log(e^-2 / (e + 2 e^-2)).
  normaliser = np.log(np.e + 2 * np.exp(-2.0))
  want = (3 * (normaliser - 1) + 3 * (normaliser + 2)) / 6
  assert math.isclose(summary['loss'], want, rel_tol=1e-12)
  c = summary['per_class'][2]
  assert (c['name'], c['support'], c['predicted']) == ('c', 1, 0)
  assert c['precision'] is None and c['accuracy'] == 0.0
  # Macro averages are over the classes where the figure is defined.
  assert math.isclose(summary['macro_avg']['precision'], 0.5)
  assert math.isclose(summary['macro_avg']['recall'], (1 / 2 + 2 / 3) / 3)


def test_unknown_class_names_show_as_indices():
  summary = report.classification_summary([0, 1], np.eye(2), None)
  assert [c['name'] for c in summary['per_class']] == ['0', '1']
  with pytest.raises(ValueError, match='3 class names for 2 classes'):
    report.classification_summary([0, 1], np.eye(2), ['a', 'b', 'c'])


def test_the_most_confident_mistakes_come_first():
  probabilities = np.array([[0.9, 0.1],   # right
                            [0.2, 0.8],   # wrong, 0.8
                            [0.05, 0.95],  # wrong, 0.95
                            [0.4, 0.6],   # wrong, 0.6
                            [0.3, 0.7]])  # right
  labels = np.array([0, 0, 0, 0, 1])
  np.testing.assert_array_equal(
      report.most_confident_mistakes(labels, probabilities, 2), [2, 1])
  np.testing.assert_array_equal(
      report.most_confident_mistakes(labels, probabilities, 10), [2, 1, 3])


# ----------------------------------------------------------------------------
# Pictures.


def test_the_confusion_picture_is_a_real_image(tmp_path):
  path = report.confusion_png(CONFUSION, ['cat', 'dog', 'bird'],
                              str(tmp_path / 'confusion.png'), title='test')
  assert_picture(path)


def test_a_hundred_class_confusion_picture_stays_drawable(tmp_path):
  rng = np.random.default_rng(0)
  confusion = rng.integers(0, 5, (100, 100))
  assert_picture(report.confusion_png(confusion, None,
                                      str(tmp_path / 'confusion.png')))


def test_the_misclassified_grid_is_a_real_image(tmp_path):
  rng = np.random.default_rng(0)
  images = rng.integers(0, 256, (5, 32, 32, 3), dtype=np.uint8)
  path = report.misclassified_grid_png(
      images, [0, 1, 2, 0, 1], [1, 2, 0, 2, 0], [0.9, 0.8, 0.7, 0.6, 0.5],
      ['cat', 'dog', 'bird'], str(tmp_path / 'grid.png'))
  assert_picture(path)


def test_a_grid_without_mistakes_says_so(tmp_path):
  path = report.misclassified_grid_png(
      np.zeros((0, 32, 32, 3), np.uint8), [], [], [], None,
      str(tmp_path / 'grid.png'))
  with Image.open(path) as image:
    assert image.format == 'PNG'
    assert np.asarray(image.convert('L')).std() > 0  # The sentence.


# ----------------------------------------------------------------------------
# Training curves from event files.


def write_events(workdir, values_by_step, hparams=None):
  """Logs like the trainer: its writer, one new event file."""
  writer = metric_writer.create_writer(str(workdir), just_logging=False)
  if hparams:
    writer.write_hparams(hparams)
  for step, values in values_by_step.items():
    writer.write_scalars(step, values)
  writer.close()
  return max(workdir.glob('events.out.tfevents.*'), key=os.path.getmtime)


def test_scalars_are_read_from_the_tensors_clu_writes(tmp_path):
  write_events(tmp_path, {
      100: {'train_loss': 2.0, 'learning_rate': 0.1},
      200: {'train_loss': 1.5, 'learning_rate': 0.1, 'val_accuracy': 0.4},
  }, hparams={'batch_size': 128, 'schedule.name': 'paper'})
  scalars = report.read_scalars(str(tmp_path))
  assert set(scalars) == {'train_loss', 'learning_rate', 'val_accuracy'}
  steps, values = scalars['train_loss']
  np.testing.assert_array_equal(steps, [100, 200])
  np.testing.assert_allclose(values, [2.0, 1.5])
  np.testing.assert_array_equal(scalars['val_accuracy'][0], [200])


def test_a_step_logged_again_by_a_resumed_run_keeps_the_later_value(tmp_path):
  # The first run logged steps 1-3 and checkpointed at 1; the resumed run
  # logs 2-4 again, into a new file.
  first = write_events(tmp_path, {s: {'train_loss': 10.0 + s}
                                  for s in (1, 2, 3)})
  second = write_events(tmp_path, {s: {'train_loss': 20.0 + s}
                                   for s in (2, 3, 4)})
  # Which file is later is told by its events, not by its name.
  first.rename(tmp_path / 'events.out.tfevents.9999.b.v2')
  second.rename(tmp_path / 'events.out.tfevents.0000.a.v2')
  steps, values = report.read_scalars(str(tmp_path))['train_loss']
  np.testing.assert_array_equal(steps, [1, 2, 3, 4])
  np.testing.assert_allclose(values, [11, 22, 23, 24])


def test_a_truncated_event_file_is_read_up_to_its_last_complete_event(
    tmp_path):
  path = write_events(tmp_path, {s: {'train_loss': float(s)}
                                 for s in range(1, 21)})
  size = path.stat().st_size
  with open(path, 'r+b') as f:
    f.truncate(size - 10)  # A crash in the middle of the last record.
  steps, _ = report.read_scalars(str(tmp_path))['train_loss']
  np.testing.assert_array_equal(steps, np.arange(1, 20))


def test_the_curves_picture_is_written_into_the_workdir(tmp_path):
  logged = {s: {'train_loss': 2.0 / s, 'train_accuracy': 1 - 1.0 / (s + 1),
                'learning_rate': 0.1 if s < 5 else 0.01} for s in range(1, 9)}
  logged[4].update(val_loss=0.7, val_accuracy=0.6)
  logged[8].update(val_loss=0.5, val_accuracy=0.8, test_loss=0.6,
                   test_accuracy=0.7)
  write_events(tmp_path, logged)
  path = report.write_curves(str(tmp_path))
  assert path == os.path.join(str(tmp_path), 'curves.png')
  assert_picture(path)


def test_curves_of_a_workdir_without_events_is_a_one_line_error(tmp_path):
  with pytest.raises(ValueError, match='no TensorBoard scalars'):
    report.write_curves(str(tmp_path))
  with pytest.raises(ValueError, match='does not exist'):
    report.write_curves(str(tmp_path / 'missing'))


def test_runs_are_drawn_as_their_mean_with_a_min_max_band(tmp_path):
  # Two runs, as the trainer's RunsWriter leaves them: the mean in the
  # workdir, each run's own scalars in run_<i>/.
  per_run = [{1: {'train_loss': 2.0, 'val_accuracy': 0.5},
              2: {'train_loss': 1.0, 'val_accuracy': 0.7},
              3: {'train_loss': 0.5}},
             {1: {'train_loss': 3.0, 'val_accuracy': 0.4},
              2: {'train_loss': 0.8, 'val_accuracy': 0.9}}]  # Cut short.
  for i, logged in enumerate(per_run):
    with metric_writer.MetricWriter(tmp_path / metric_writer.run_dir(i),
                                    log=False) as writer:
      for step, values in logged.items():
        writer.write_scalars(step, values)
  write_events(tmp_path, {1: {'train_loss': 2.5, 'val_accuracy': 0.45},
                          2: {'train_loss': 0.9, 'val_accuracy': 0.8}})
  runs = report._runs(str(tmp_path))  # pylint: disable=protected-access
  assert len(runs) == 2
  # At the steps every run logged; float32 in the event files.
  steps, low, high = report.run_band(runs, 'train_loss')
  np.testing.assert_array_equal(steps, [1, 2])
  np.testing.assert_allclose(low, [2.0, 0.8], rtol=1e-6)
  np.testing.assert_allclose(high, [3.0, 1.0], rtol=1e-6)
  steps, low, high = report.run_band(runs, 'val_accuracy')
  np.testing.assert_allclose(low, [0.4, 0.7], rtol=1e-6)
  np.testing.assert_allclose(high, [0.5, 0.9], rtol=1e-6)
  # A tag some run lacks gets no band, rather than one over fewer runs.
  assert report.run_band([runs[0], {}], 'train_loss') is None
  assert report.run_band([], 'train_loss') is None
  assert_picture(report.write_curves(str(tmp_path)))


def test_one_run_draws_the_same_curves_as_before(tmp_path):
  scalars = {'train_loss': (np.arange(1, 9), 2.0 / np.arange(1, 9)),
             'val_accuracy': (np.array([4, 8]), np.array([0.6, 0.8]))}
  pictures = []
  for name, runs in (('plain', ()), ('one', [scalars])):
    path = report.curves_png(scalars, str(tmp_path / f'{name}.png'), 'x',
                             runs=runs)
    with Image.open(path) as image:
      pictures.append(np.asarray(image.convert('RGB')))
  np.testing.assert_array_equal(*pictures)
  assert report._runs(str(tmp_path)) == []  # pylint: disable=protected-access
