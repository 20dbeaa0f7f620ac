"""What a model gets right and wrong: metrics, pictures, training curves.

Pure functions of NumPy arrays and of a workdir's TensorBoard events. The
confusion matrix has true classes along rows, predictions along columns; a
class's accuracy is its recall. A ratio with nothing to count is NaN (null in
JSON), never a made-up 0; macro averages skip it. Pictures use Matplotlib
`Figure`s, never pyplot: no window opens and a notebook's state is untouched.
"""

from collections.abc import Mapping, Sequence
import functools
import io
import math
import os

import numpy as np

from resnet_jax.run import config_checks
from resnet_jax.run import workdir as workdir_lib

# The trainer's TensorBoard tags (train.py) that the curves show.
LOSS_TAGS = ('train_loss', 'val_loss', 'test_loss')
ACCURACY_TAGS = ('train_accuracy', 'val_accuracy', 'test_accuracy')
LEARNING_RATE_TAG = 'learning_rate'
_LABELS = {'val': 'validation'}  # Else the tag's split as it is.


# ----------------------------------------------------------------------------
# Numbers.


def _log_softmax(logits) -> np.ndarray:
  shifted = np.asarray(logits, np.float64)
  shifted = shifted - shifted.max(axis=-1, keepdims=True)
  return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def softmax(logits) -> np.ndarray:
  """Class probabilities, computed in float64."""
  return np.exp(_log_softmax(logits))


def cross_entropy(logits, labels) -> np.ndarray:
  """Per-example softmax cross-entropy (natural log), as the eval step's."""
  log_probs = _log_softmax(logits)
  return -np.take_along_axis(log_probs, np.asarray(labels)[:, None], -1)[:, 0]


def confusion_matrix(labels, predictions, num_classes: int) -> np.ndarray:
  """counts[true, predicted], int64 (num_classes, num_classes)."""
  labels = np.asarray(labels).astype(np.int64).ravel()
  predictions = np.asarray(predictions).astype(np.int64).ravel()
  if labels.shape != predictions.shape:
    raise ValueError(f'{labels.size} labels but {predictions.size} '
                     'predictions')
  for name, values in (('label', labels), ('prediction', predictions)):
    if values.size and (values.min() < 0 or values.max() >= num_classes):
      raise ValueError(f'a {name} is outside 0..{num_classes - 1}')
  return np.bincount(labels * num_classes + predictions,
                     minlength=num_classes**2).reshape(num_classes, -1)


def overall_accuracy(confusion) -> float:
  """Correct predictions over all examples: trace / total."""
  confusion = np.asarray(confusion)
  total = confusion.sum()
  return float(np.trace(confusion) / total) if total else math.nan


def _ratio(numerator, denominator) -> np.ndarray:
  numerator = np.asarray(numerator, np.float64)
  denominator = np.asarray(denominator, np.float64)
  out = np.full(numerator.shape, np.nan)
  np.divide(numerator, denominator, out=out, where=denominator > 0)
  return out


def per_class_metrics(confusion) -> dict[str, np.ndarray]:
  """Per-class counts and ratios from a confusion matrix (see module doc).

  Returns arrays of length num_classes: 'support' (examples of the class),
  'predicted' (predictions of it), 'correct', and the ratios 'accuracy'
  (= 'recall'), 'precision', 'f1'.
  """
  confusion = np.asarray(confusion, np.int64)
  correct = np.diag(confusion)
  support = confusion.sum(axis=1)
  predicted = confusion.sum(axis=0)
  recall = _ratio(correct, support)
  return {
      'support': support,
      'predicted': predicted,
      'correct': correct,
      'accuracy': recall,
      'recall': recall,
      'precision': _ratio(correct, predicted),
      # 2TP / (2TP + FP + FN), where FP + FN = predicted + support - 2TP.
      'f1': _ratio(2 * correct, support + predicted),
  }


def _json_number(x):
  x = float(x)
  return None if math.isnan(x) else x


def _nanmean(values) -> float:
  values = np.asarray(values, np.float64)
  values = values[~np.isnan(values)]
  return float(values.mean()) if values.size else math.nan


def display_names(class_names: Sequence[str] | None,
                  num_classes: int) -> list[str]:
  """The class names, or the class indices as strings when unknown."""
  if class_names is None:
    return [str(i) for i in range(num_classes)]
  if len(class_names) != num_classes:
    raise ValueError(f'{len(class_names)} class names for {num_classes} '
                     'classes')
  return list(class_names)


def classification_summary(labels, logits,
                           class_names: Sequence[str] | None = None) -> dict:
  """Accuracy, mean loss, per-class figures and the confusion matrix, as JSON.

  `logits` (N, num_classes) are the model's outputs; predictions are their
  argmax (ties go to the lower class, as in the eval step).
  """
  logits = np.asarray(logits)
  labels = np.asarray(labels)
  if logits.ndim != 2 or len(logits) != len(labels):
    raise ValueError(f'logits {logits.shape} do not match {len(labels)} '
                     'labels')
  num_classes = logits.shape[1]
  names = display_names(class_names, num_classes)
  confusion = confusion_matrix(labels, logits.argmax(-1), num_classes)
  metrics = per_class_metrics(confusion)
  per_class = [{
      'index': i, 'name': name,
      **{key: int(metrics[key][i]) for key in ('support', 'predicted',
                                               'correct')},
      **{key: _json_number(metrics[key][i])
         for key in ('accuracy', 'precision', 'recall', 'f1')},
  } for i, name in enumerate(names)]
  return {
      'num_examples': int(confusion.sum()),
      'accuracy': _json_number(overall_accuracy(confusion)),
      'loss': _json_number(cross_entropy(logits, labels).mean()),
      'macro_avg': {key: _json_number(_nanmean(metrics[key]))
                    for key in ('precision', 'recall', 'f1')},
      'per_class': per_class,
      'confusion_matrix': confusion.tolist(),
  }


# The most images one picture shows: 8x8, drawn in a few seconds (400 took
# 34 s, and are too small to see).
MAX_PICTURED = 64


def most_confident_mistakes(labels, probabilities, k: int) -> np.ndarray:
  """Indices of up to `k` wrong predictions, the most confident first.

  Confidence is the probability of the predicted class; ties keep the
  examples' order.
  """
  probabilities = np.asarray(probabilities)
  predictions = probabilities.argmax(-1)
  confidence = probabilities.max(-1)
  wrong = np.flatnonzero(predictions != np.asarray(labels))
  order = np.argsort(-confidence[wrong], kind='stable')
  return wrong[order[:max(k, 0)]]


# ----------------------------------------------------------------------------
# Pictures.


def _figure(**kwargs):
  # Imported here: the numbers (and so inference) need no Matplotlib.
  from matplotlib import figure  # pylint: disable=g-import-not-at-top
  return figure.Figure(dpi=100, layout='constrained', **kwargs)


def _save(fig, path: str) -> str:
  # Whole or not at all (workdir.write_file): a full disk leaves no
  # truncated picture.
  png = io.BytesIO()
  fig.savefig(png, format='png', bbox_inches='tight')
  workdir_lib.write_file(path, png.getvalue())
  return path


def confusion_png(confusion, class_names: Sequence[str] | None, path: str,
                  title: str = '') -> str:
  """A heat map of the confusion matrix with counts in the cells.

  A cell's colour is its share of the true class (its row), so rows of
  classes of any size read alike. Above 25 classes the counts are left out
  (they would not be legible).
  """
  confusion = np.asarray(confusion, np.int64)
  num_classes = confusion.shape[0]
  names = display_names(class_names, num_classes)
  shares = np.nan_to_num(_ratio(confusion, confusion.sum(axis=1,
                                                         keepdims=True)))
  size = min(max(4.0, 0.55 * num_classes + 2.0), 16.0)
  fig = _figure(figsize=(size + 1.2, size))
  ax = fig.add_subplot()
  image = ax.imshow(shares, cmap='Blues', vmin=0.0, vmax=1.0)
  fig.colorbar(image, ax=ax, shrink=0.8,
               label='share of the true class (row)')
  ticks = np.arange(num_classes)
  font = 9 if num_classes <= 25 else 6
  ax.set_xticks(ticks, names, rotation=45, ha='right', fontsize=font,
                rotation_mode='anchor')
  ax.set_yticks(ticks, names, fontsize=font)
  ax.set_xlabel('predicted class')
  ax.set_ylabel('true class')
  if num_classes <= 25:
    for (row, col), count in np.ndenumerate(confusion):
      colour = 'white' if shares[row, col] > 0.5 else (
          'black' if count else 'silver')  # Zeros recede.
      ax.text(col, row, str(count), ha='center', va='center', fontsize=8,
              color=colour)
  accuracy = overall_accuracy(confusion)
  ax.set_title(f'{title}{" - " if title else ""}accuracy {accuracy:.2%} of '
               f'{confusion.sum():,}', fontsize=10)
  return _save(fig, path)


def misclassified_grid_png(images, labels, predictions, confidences,
                           class_names: Sequence[str] | None, path: str,
                           title: str = '') -> str:
  """The given images in a grid, each titled true / predicted (confidence).

  Pass the mistakes to show, e.g. `most_confident_mistakes`'s; with none, the
  picture says so.
  """
  images = np.asarray(images)
  count = len(images)
  name = str if class_names is None else class_names.__getitem__
  columns = min(8, max(count, 1))
  rows = max(1, -(-count // columns))
  fig = _figure(figsize=(1.45 * columns, 1.75 * rows + 0.4))
  if title:
    fig.suptitle(title, fontsize=10)
  if not count:
    ax = fig.add_subplot()
    ax.axis('off')
    ax.text(0.5, 0.5, 'no misclassified examples', ha='center', va='center')
    return _save(fig, path)
  axes = fig.subplots(rows, columns, squeeze=False)
  for i, ax in enumerate(axes.flat):
    ax.axis('off')
    if i >= count:
      continue
    image = images[i]
    if image.ndim == 3 and image.shape[-1] == 1:
      image = image[..., 0]
    ax.imshow(image, cmap='gray' if image.ndim == 2 else None,
              interpolation='nearest')
    ax.set_title(f'true: {name(int(labels[i]))}\npred: '
                 f'{name(int(predictions[i]))} ({confidences[i]:.1%})',
                 fontsize=7)
  return _save(fig, path)


# ----------------------------------------------------------------------------
# Training curves from TensorBoard event files.

Scalars = Mapping[str, tuple[np.ndarray, np.ndarray]]  # tag: (steps, values)


def read_scalars(workdir: str) -> Scalars:
  """Every scalar tag in the workdir's event files: tag -> (steps, values).

  Steps are sorted and unique. Which value of a step logged twice wins, and
  which damage to a file is a ValueError: as in metric_writer.scalars.
  """
  # Not at the top: tensorboard's protos are only needed here.
  from resnet_jax.run import metric_writer  # pylint: disable=g-import-not-at-top
  by_tag: dict[str, list[tuple[int, float]]] = {}
  for (tag, step), value in metric_writer.scalars(workdir).items():
    by_tag.setdefault(tag, []).append((step, value))  # Sorted by step.
  return {tag: (np.array([s for s, _ in pairs], np.int64),
                np.array([v for _, v in pairs], np.float64))
          for tag, pairs in by_tag.items()}


def run_band(runs: Sequence[Scalars],
             tag: str) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
  """(steps, min, max) of `tag` over the runs, at the steps all runs logged.

  `runs`: each run's scalars as `read_scalars` returns them. None when a run
  lacks the tag: a band over some runs would pass for one over all.
  """
  if not runs or any(tag not in run for run in runs):
    return None
  # The runs train together, so they log the same steps; a run's event file
  # cut short by a crash may end earlier.
  steps = functools.reduce(np.intersect1d, [run[tag][0] for run in runs])
  values = np.stack([run[tag][1][np.isin(run[tag][0], steps)]
                     for run in runs])  # Steps are sorted: rows line up.
  return steps, values.min(0), values.max(0)


def _plot(ax, scalars, tag, runs, **kwargs):
  if tag not in scalars:
    return False
  steps, values = scalars[tag]
  split = tag.split('_')[0]
  label = _LABELS.get(split, split)
  # A single point (the test split, evaluated once) would not show as a line.
  marker = 'o' if len(steps) <= 20 or split == 'test' else None
  ax.plot(steps, values, label=label, marker=marker, markersize=4, **kwargs)
  band = run_band(runs, tag)
  if band is not None:
    steps, low, high = band
    if len(steps) > 1:
      ax.fill_between(steps, low, high, alpha=0.2, linewidth=0, **kwargs)
    else:  # One step has no area to shade: a bar from min to max.
      ax.vlines(steps, low, high, alpha=0.5, linewidth=4, **kwargs)
  return True


def curves_png(scalars: Scalars, path: str, title: str = '',
               runs: Sequence[Scalars] = ()) -> str:
  """Loss, accuracy and learning rate against the step, side by side.

  `scalars` as `read_scalars` returns them; missing tags are left out (a run
  without validation has no validation curve). The best validation accuracy
  is marked. With `runs` (each run's scalars, when `scalars` are their mean)
  each curve gets a shaded band from the runs' min to max (see `run_band`).
  """
  fig = _figure(figsize=(13.5, 3.9))
  loss_ax, accuracy_ax, lr_ax = fig.subplots(1, 3)
  runs = list(runs) if len(runs) > 1 else []  # One run's band is its curve.
  if runs:
    note = f'mean of {len(runs)} runs, band: min-max'
    title = f'{title} ({note})' if title else note
  if title:
    fig.suptitle(title, fontsize=11)
  colours = {'train': 'tab:blue', 'val': 'tab:orange', 'test': 'tab:green'}
  for ax, tags, name in ((loss_ax, LOSS_TAGS, 'loss (cross-entropy)'),
                         (accuracy_ax, ACCURACY_TAGS, 'accuracy'),
                         (lr_ax, (), 'learning rate')):
    shown = [_plot(ax, scalars, tag, runs, color=colours[tag.split('_')[0]])
             for tag in tags]
    ax.set_title(name, fontsize=10)
    ax.set_xlabel('step')
    ax.grid(alpha=0.3)
    if any(shown):
      ax.legend(fontsize=8)
    elif ax is not lr_ax or LEARNING_RATE_TAG not in scalars:
      ax.text(0.5, 0.5, 'not logged', ha='center', va='center',
              transform=ax.transAxes)
  if 'val_accuracy' in scalars:
    steps, values = scalars['val_accuracy']
    best = int(np.argmax(values))
    accuracy_ax.annotate(
        f'best {values[best]:.2%}\nstep {steps[best]:,}',
        (steps[best], values[best]), textcoords='offset points',
        xytext=(-10, -30), ha='right', fontsize=8,
        arrowprops={'arrowstyle': '->', 'lw': 0.8})
  if LEARNING_RATE_TAG in scalars:
    steps, values = scalars[LEARNING_RATE_TAG]
    # Each logged rate is the last of the steps up to it: a step schedule
    # drops within the interval before the first lower value.
    lr_ax.plot(steps, values, color='tab:purple', drawstyle='steps-pre')
    if values.size and values.min() > 0 and values.max() / values.min() > 20:
      lr_ax.set_yscale('log')  # Step schedules: each tenth gets its row.
  return _save(fig, path)


def write_curves(workdir: str) -> str:
  """Writes <workdir>/curves.png from the workdir's events; returns its path.

  Raises:
    ValueError: the workdir does not exist or holds no scalar events.
  """
  if not os.path.isdir(workdir):
    raise ValueError(f'workdir {workdir} does not exist or is not a directory')
  scalars = read_scalars(workdir)
  if not scalars:
    raise ValueError(f'no TensorBoard scalars in {workdir} (no '
                     'events.out.tfevents.* file with any): nothing to draw')
  schedule = _schedule(workdir)
  if schedule is not None:
    scalars = {**scalars, LEARNING_RATE_TAG: schedule}
  return curves_png(scalars, os.path.join(workdir, 'curves.png'),
                    title=_title(workdir), runs=_runs(workdir))


def _schedule(workdir: str) -> tuple[np.ndarray, np.ndarray] | None:
  """(steps 1..T, the learning rate of each) from the run's config.

  Step s is drawn with the rate it trained at, as the trainer logs it
  (schedules are indexed by the steps done before it). None when the
  config or the number of steps is unknown: an epoch-based run still
  training (the steps depend on its split's size).
  """
  import jax  # pylint: disable=g-import-not-at-top
  try:
    config = config_checks.read_config(workdir)
    total_steps = workdir_lib.read_summary(workdir).get('steps') or (
        config.num_train_steps if config.num_epochs <= 0 else None)
    if not isinstance(total_steps, int) or total_steps <= 0:
      return None
    rate = config_checks.learning_rate_fn(config, total_steps)
  except ValueError:
    return None
  steps = np.arange(total_steps)
  return steps + 1, np.asarray(jax.vmap(rate)(steps), np.float64)


def _runs(workdir: str) -> list:
  """Each run's scalars, from run_0/, run_1/, ... (none for a single run)."""
  from resnet_jax.run import metric_writer  # pylint: disable=g-import-not-at-top
  runs = []
  while os.path.isdir(path := os.path.join(
      workdir, metric_writer.run_dir(len(runs)))):
    runs.append(read_scalars(path))
  return [run for run in runs if run]  # A run just started has none yet.


def _length(summary: dict) -> str | None:
  """'64,000 steps (182 epochs)', '200 steps (0.57 epochs)'."""
  steps, epochs = summary.get('steps'), summary.get('epochs')
  if not isinstance(epochs, (int, float)):
    return f'{steps:,} steps' if isinstance(steps, int) else None
  # Two decimals below 10 epochs, one below 100, none above.
  epochs = f'{epochs:.{2 if epochs < 10 else 1 if epochs < 100 else 0}f}'
  if '.' in epochs:
    epochs = epochs.rstrip('0').rstrip('.')
  epochs = f'{epochs} epoch{"" if epochs == "1" else "s"}'
  return f'{steps:,} steps ({epochs})' if isinstance(steps, int) else epochs


def _title(workdir: str) -> str:
  """The workdir's name, and what ran there when summary.json says."""
  title = os.path.basename(os.path.normpath(os.path.abspath(workdir)))
  summary = workdir_lib.read_summary(workdir)  # {} while still training.
  details = [summary.get('config'), summary.get('dataset'), _length(summary)]
  details = ', '.join(str(d) for d in details if d)
  return f'{title}: {details}' if details else title
