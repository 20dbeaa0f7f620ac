"""Draws a run's training curves into <workdir>/curves.png.

  python -m resnet_jax.curves --workdir=runs/resnet20

Loss, accuracy (train, validation, test) and the learning rate against the
step, from the TensorBoard events the trainer writes into the workdir; where
a resumed run logged a step again, its later value is shown (see
report.read_scalars). A workdir of several runs (config.num_runs > 1) holds
their mean, drawn as the curve, and each run's own events in run_<i>/: a
shaded band then spans the runs' min to max at each step. The trainer calls
`write_curves` at the end of training; the command redraws them at any time,
during training too.
"""

import json
import os

from absl import app
from absl import flags
from absl import logging

from resnet_jax import tools

FLAGS = flags.FLAGS
CURVES_FILE = 'curves.png'


def write_curves(workdir: str) -> str:
  """Writes <workdir>/curves.png from the workdir's events; returns its path.

  Raises:
    ValueError: the workdir does not exist or holds no scalar events.
  """
  from resnet_jax import report  # pylint: disable=g-import-not-at-top
  if not os.path.isdir(workdir):
    raise ValueError(f'workdir {workdir} does not exist or is not a directory')
  scalars = report.read_scalars(workdir)
  if not scalars:
    raise ValueError(f'no TensorBoard scalars in {workdir} (no '
                     'events.out.tfevents.* file with any): nothing to draw')
  return report.curves_png(scalars, os.path.join(workdir, CURVES_FILE),
                           title=_title(workdir), runs=_runs(workdir))


def _runs(workdir: str) -> list:
  """Each run's scalars, from run_0/, run_1/, ... (none for a single run)."""
  # pylint: disable=g-import-not-at-top
  from resnet_jax import metric_writer
  from resnet_jax import report
  runs = []
  while os.path.isdir(path := os.path.join(
      workdir, metric_writer.run_dir(len(runs)))):
    runs.append(report.read_scalars(path))
  return [run for run in runs if run]  # A run just started has none yet.


def _title(workdir: str) -> str:
  """The workdir's name, and what ran there when summary.json says."""
  title = os.path.basename(os.path.normpath(os.path.abspath(workdir)))
  try:
    with open(os.path.join(workdir, 'summary.json')) as f:
      summary = json.load(f)
    details = [summary.get('config'), summary.get('dataset'),
               f'{summary["epochs"]:g} epochs' if 'epochs' in summary else None]
  except (OSError, ValueError, TypeError, AttributeError):
    details = []  # Still training, or not the trainer's summary.
  details = ', '.join(str(d) for d in details if d)
  return f'{title}: {details}' if details else title


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  tools.quiet_start(logging.WARNING)
  print(write_curves(FLAGS.workdir))


if __name__ == '__main__':
  flags.DEFINE_string('workdir', None, 'A run directory written by '
                      'resnet_jax.main.')
  flags.mark_flag_as_required('workdir')
  tools.run(main)
