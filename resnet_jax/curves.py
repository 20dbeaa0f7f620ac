"""Draws a run's training curves into <workdir>/curves.png.

  python -m resnet_jax.curves --workdir=runs/resnet20

Loss, accuracy (train, validation, test) and the learning rate against the
step, from the TensorBoard events the trainer writes into the workdir; where
a resumed run logged a step again, its later value is shown (see
report.read_scalars). The learning rate is the schedule itself, every step
of it, computed from the run's config.json (the logged rates are one sample
per log, which misdraws a decay or a warm-up between two logs); the logged
samples stand in when the config or the run's length is unknown. A workdir
of several runs (config.num_runs > 1) holds their mean, drawn as the curve,
and each run's own events in run_<i>/: a shaded band then spans the runs'
min to max at each step. resnet_jax.main draws them at the end of training;
this command redraws them at any time, during training too.
"""

from absl import app
from absl import flags
from absl import logging

from resnet_jax import cli

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  cli.quiet_start(logging.WARNING)
  from resnet_jax.read import report  # pylint: disable=g-import-not-at-top
  print(report.write_curves(FLAGS.workdir))


if __name__ == '__main__':
  cli.define_path('workdir', None, 'A workdir written by resnet_jax.main.')
  flags.mark_flag_as_required('workdir')
  cli.start(main)
