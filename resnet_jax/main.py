"""Trains a ResNet as a config describes.

  python -m resnet_jax.main --config=configs/resnet20.py

The run goes to --workdir (by default runs/<config file name>, e.g.
runs/resnet20). Any config field can be overridden, e.g.
`--config.num_epochs=1`. Rerunning the same command resumes from the latest
checkpoint in the workdir.

Exit status: 0 when training finished; 1 with one line `error: ...` when the
config, data, workdir or checkpoints are unusable or the loss became
non-finite; 143 (128 + SIGTERM) after a preemption notice and 130 after
Ctrl-C (SIGINT), once the checkpoint of the step reached is saved, so that a
scheduler reruns the job; a second signal stops it at once.
"""

import os
import sys

from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

from resnet_jax import cli
from resnet_jax import utils

FLAGS = flags.FLAGS
cli.define_path('workdir', None,
                'Directory for checkpoints, TensorBoard logs and '
                'summary.json; a rerun resumes from it. Default: '
                'runs/<config file name without .py>.')
config_flags.DEFINE_config_file('config', None, 'A config file (configs/*.py).',
                                lock_config=True)
flags.mark_flags_as_required(['config'])


def _parse_flags(argv):
  """absl's flag parsing, with a one-line exit for a missing or broken config.

  The config file is loaded while the flags are parsed, so its errors (no such
  file, no get_config, an override of a field it lacks) surface here.
  """
  try:
    return FLAGS(argv)
  except Exception as e:  # pylint: disable=broad-except
    config_file = next((a.split('=', 1)[1] for a in argv[1:]
                        if a.startswith('--config=')), None)
    if config_file and not os.path.isfile(config_file):
      cli.fail(f'--config={config_file}: no such file')
    cli.fail(cli.config_error(e, config_file))


def _workdir(config_file: str) -> str:
  if FLAGS.workdir is not None:
    return FLAGS.workdir
  return os.path.join('runs', os.path.splitext(os.path.basename(
      config_file))[0])


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.quiet_start()
  config_file = config_flags.get_config_filename(FLAGS['config'])
  if not os.path.isfile(config_file):  # Loaded lazily: not caught above.
    raise ValueError(f'--config={config_file}: no such file')
  config, workdir = FLAGS.config, _workdir(config_file)
  logging.info('Workdir: %s', os.path.abspath(workdir))
  logging.info('Config %s:\n%s', config_file, '\n'.join(
      f'  {field} = {value!r}'
      for field, value in utils.flatten(config.to_dict()).items()))
  # pylint: disable=g-import-not-at-top
  from resnet_jax.read import report
  from resnet_jax.run import preemption
  from resnet_jax.run import train
  try:
    train.train_and_evaluate(
        config, workdir, set_up_process=True,
        config_name=os.path.splitext(os.path.basename(config_file))[0])
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(e.exit_status)
  if jax.process_index() == 0:  # Drawn here: the loop draws no pictures.
    try:
      report.write_curves(workdir)
    except Exception as e:  # pylint: disable=broad-except
      # A picture is not worth failing a finished run for.
      logging.warning('Could not draw the training curves: %s', e)


if __name__ == '__main__':
  cli.start(main, flags_parser=_parse_flags)
