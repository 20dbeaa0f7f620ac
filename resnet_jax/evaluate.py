"""Evaluates a trained run on one split: numbers, confusion matrix, mistakes.

  python -m resnet_jax.evaluate --workdir=runs/resnet20 --split=test --tta
  python -m resnet_jax.evaluate --workdir=runs/resnet20 --ensemble

--split is 'validation', 'test' (the run's eval_split, test_split; where it
has none, the dataset's split of that name, such as an image folder's test/)
or any split of its dataset, e.g. 'train[45000:]'; --run=i picks run i (seed
config.seed + i), --ensemble the mean of all runs' logits. Every example is
classified once. Written into the workdir, named by `file_tag`
(eval_test.json, eval_test_run1.json, eval_test_ensemble.json, ...):
eval_<tag>.json (accuracy, loss, per-class figures, the confusion matrix with
rows true and columns predicted, the step and run; with --tta also the
flip-averaged figures under "tta"; with --ensemble each run's own under
"runs"), confusion_<tag>.png and misclassified_<tag>.png (the most confident
mistakes of the plain predictions).
"""

import os

from absl import app
from absl import flags
from absl import logging

from resnet_jax import cli
from resnet_jax.data import datasets
from resnet_jax.read import inference
from resnet_jax.read import report
from resnet_jax.run import config_checks
from resnet_jax.run import workdir as workdir_lib

FLAGS = flags.FLAGS


def split_tag(split: str) -> str:
  """The split as it appears in file names: letters, digits, '_', '-', '.'.

  A plain name stays as it is ('validation', 'test', 'train'); a slice
  becomes _<start>-<stop>, an open end 'start' or 'end', a percentage 'pct',
  a negative bound 'minus': 'train[45000:]' -> 'train_45000-end',
  'train[:10%]' -> 'train_start-10pct', 'train[-500:]' -> 'train_minus500-end'.
  """
  split = split.strip()
  base, bounds = datasets.parse_split(split)
  if '[' not in split:
    return base

  def bound(value, open_end):
    if value is None:
      return open_end
    text = f'minus{-value}' if value < 0 else str(value)
    return text + ('pct' if bounds.percent else '')

  return f'{base}_{bound(bounds.start, "start")}-{bound(bounds.stop, "end")}'


def file_tag(split: str, run: int, ensemble: bool) -> str:
  """split_tag, then which run unless run 0 (whose names predate runs)."""
  tag = split_tag(split)
  if ensemble:
    return f'{tag}_ensemble'
  return tag if run == 0 else f'{tag}_run{run}'


def evaluate(workdir: str, split: str = 'test', checkpoint='latest',
             tta: bool = False, num_misclassified: int = 24, *, run: int = 0,
             ensemble: bool = False, data_dir: str | None = None) -> dict:
  """Evaluates a checkpoint of `workdir` on `split`; writes, returns the JSON.

  `run` picks one of the workdir's runs; `ensemble` all of them (see
  inference.load). `data_dir`, when given, is where the run's dataset is
  (another machine's path than its config.json's, say).

  Raises:
    ValueError: a one-line reason (workdir, checkpoint, split or data).
  """
  if num_misclassified < 0:
    raise ValueError(f'--num_misclassified must be >= 0, got '
                     f'{num_misclassified}')
  config = config_checks.read_config(workdir, data_dir)
  inference.check_run(config, workdir, run, ensemble)  # Before any data.
  tfds_split = inference.resolve_split(config, split)
  tag = file_tag(split, run, ensemble)
  if not os.access(workdir, os.W_OK | os.X_OK):
    raise ValueError(f'cannot write the results into {workdir}: not writable')
  loaded = inference.load(workdir, checkpoint, run=run, ensemble=ensemble,
                          config=config)  # Read and validated once, above.
  ds, summary, logits, trained_on = inference.evaluate_split(loaded,
                                                             tfds_split, tta)
  class_names = loaded.class_names or ds.class_names
  if ensemble:
    # Each run's own figures on the same images, to set the ensemble's
    # against: one more pass, all runs in one program.
    per_run = loaded.per_run_logits(ds.images, config.eval_batch_size)
    summary['runs'] = []
    for i, (seed, run_logits) in enumerate(zip(loaded.seeds, per_run,
                                               strict=True)):
      figures = report.classification_summary(ds.labels, run_logits)
      summary['runs'].append({'run': i, 'seed': seed, **{
          key: figures[key] for key in ('accuracy', 'loss')}})

  probabilities = report.softmax(logits)
  mistakes = report.most_confident_mistakes(
      ds.labels, probabilities, min(num_misclassified, report.MAX_PICTURED))
  files = {'json': f'eval_{tag}.json', 'confusion': f'confusion_{tag}.png',
           'misclassified': f'misclassified_{tag}.png'}
  path = {kind: os.path.join(workdir, name) for kind, name in files.items()}
  result = {
      'workdir': os.path.abspath(workdir),
      'dataset': config.data.name,
      'split': split,
      'tfds_split': tfds_split,
      'checkpoint': inference.parse_checkpoint(checkpoint),
      'checkpoint_step': loaded.step,
      **loaded.selection,
      'training_examples': trained_on,
      'class_names': list(class_names),
      **summary,
      # How many mistakes the picture shows: --num_misclassified, at most
      # report.MAX_PICTURED, at most the mistakes made.
      'misclassified_shown': len(mistakes),
      'misclassified_asked': num_misclassified,
      'files': files,
  }
  what = (f'{config.data.name} {tfds_split}, step {loaded.step}, '
          f'{loaded.describe()}')
  report.confusion_png(summary['confusion_matrix'], class_names,
                       path['confusion'], title=what)
  report.misclassified_grid_png(
      ds.images[mistakes], ds.labels[mistakes],
      probabilities[mistakes].argmax(-1), probabilities[mistakes].max(-1),
      class_names, path['misclassified'],
      title=f'{len(mistakes)} most confident mistakes: {what}')
  workdir_lib.write_json(path['json'], result)
  return result


def format_summary(result: dict) -> str:
  """A few readable lines: overall figures, then one line per class."""
  if result.get('ensemble'):
    which = f'ensemble of {result["num_runs"]} runs'
  else:
    which = f'run {result["run"]} (seed {result["seed"]})'
  lines = [f'{result["dataset"]} {result["tfds_split"]} '
           f'({result["num_examples"]} examples), checkpoint step '
           f'{result["checkpoint_step"]}, {which}:',
           f'  accuracy {result["accuracy"]:.2%}, loss {result["loss"]:.4f}']
  if result.get('training_examples'):
    lines.insert(1, f'  warning: {result["training_examples"]} of these '
                 f'{result["num_examples"]} examples are training examples '
                 'of this run: these figures do not measure how it '
                 'generalises')
  if 'tta' in result:
    lines.append(f'  with flip TTA: accuracy {result["tta"]["accuracy"]:.2%}, '
                 f'loss {result["tta"]["loss"]:.4f}')
  for r in result.get('runs', []):
    lines.append(f'  run {r["run"]} (seed {r["seed"]}) alone: accuracy '
                 f'{r["accuracy"]:.2%}, loss {r["loss"]:.4f}')
  show = lambda x: '   n/a' if x is None else f'{x:6.1%}'
  width = max(len(c['name']) for c in result['per_class'])
  lines.append(f'  {"class":<{width}}  support  accuracy  precision      f1')
  for c in result['per_class']:
    lines.append(f'  {c["name"]:<{width}}  {c["support"]:7d}    '
                 f'{show(c["accuracy"])}     {show(c["precision"])}  '
                 f'{show(c["f1"])}')
  if result.get('misclassified_asked', 0) > report.MAX_PICTURED:
    lines.append(f'  {result["files"]["misclassified"]} shows '
                 f'{result["misclassified_shown"]} mistakes: one picture '
                 f'shows at most {report.MAX_PICTURED} (--num_misclassified='
                 f'{result["misclassified_asked"]})')
  lines.append('wrote ' + ', '.join(result['files'].values()))
  return '\n'.join(lines)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_start(logging.WARNING)
  result = evaluate(**cli.selection_from_flags(), split=FLAGS.split,
                    tta=FLAGS.tta, num_misclassified=FLAGS.num_misclassified,
                    data_dir=FLAGS.data_dir)
  print(format_summary(result))


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  cli.define_selection_flags()
  flags.DEFINE_string('split', 'test', "'validation', 'test' or a split of "
                      "the run's dataset, e.g. 'train[45000:]'.")
  flags.DEFINE_bool('tta', False, 'Also report test-time augmentation: the '
                    'mean logits of each image and its horizontal flip.')
  flags.DEFINE_integer('num_misclassified', 24, 'How many of the most '
                       'confident mistakes to show, at most '
                       f'{report.MAX_PICTURED}.')
  cli.define_path('data_dir', None, "Where the run's dataset is, when "
                  'not at its config.data.data_dir (an image folder or '
                  'TFDS data moved, another machine).')


if __name__ == '__main__':
  define_flags()
  cli.start(main)
