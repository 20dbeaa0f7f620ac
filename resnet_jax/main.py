"""Trains a ResNet as a config describes.

  python -m resnet_jax.main --config=configs/resnet20.py --workdir=runs/resnet20

Any config field can be overridden, e.g. `--config.num_epochs=1`. Rerunning
the same command resumes from the latest checkpoint in the workdir.

Exit status: 0 when training finished; 1 with one line `error: ...` when the
config, data, workdir or checkpoints are unusable or the loss became
non-finite; 143 (128 + SIGTERM) after a preemption notice, once the
checkpoint of the step reached is saved, so that a scheduler reruns the job.
"""

import logging as python_logging
import os
import signal
import sys

from absl import app
from absl import flags
from absl import logging
import jax
from ml_collections import config_flags

FLAGS = flags.FLAGS
flags.DEFINE_string('workdir', None,
                    'Directory for checkpoints, TensorBoard logs and '
                    'summary.json; a rerun resumes from it.')
config_flags.DEFINE_config_file('config', None, 'A config file (configs/*.py).',
                                lock_config=True)
flags.mark_flags_as_required(['config', 'workdir'])


class _QuietLibraries(python_logging.Filter):
  """Keeps the console to our own lines: libraries speak up only to warn."""
  NOISY = ('/orbax/', '/tensorflow_datasets/', '/jax/')

  def filter(self, record):
    return (record.levelno >= python_logging.WARNING or
            not any(path in record.pathname for path in self.NOISY))


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
      sys.exit(f'error: --config={config_file}: no such file')
    cause = e
    while cause.__cause__ or cause.__context__:
      cause = cause.__cause__ or cause.__context__
    if isinstance(cause, AttributeError) and 'get_config' in str(cause):
      sys.exit(f'error: --config={config_file} has no get_config() function')
    if isinstance(cause, KeyError):
      sys.exit(f'error: the config has no field {cause}; check the '
               '--config.* overrides')
    sys.exit(f'error: {" ".join(str(e).split())}')


def _enable_compilation_cache(directory: str):
  # Restarts (resume after preemption) load compiled steps instead of
  # compiling them again.
  if directory:
    jax.config.update('jax_compilation_cache_dir',
                      os.path.expanduser(directory))


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  config_file = config_flags.get_config_filename(FLAGS['config'])
  if not os.path.isfile(config_file):  # Loaded lazily: not caught above.
    sys.exit(f'error: --config={config_file}: no such file')
  config = FLAGS.config
  from resnet_jax import config_checks  # pylint: disable=g-import-not-at-top
  try:
    config_checks.validate(config)  # Before the seconds TensorFlow takes.
  except ValueError as e:
    sys.exit(f'error: {e}')
  # TensorFlow only reads data here: it must leave every GPU to JAX.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  from resnet_jax import parallel  # pylint: disable=g-import-not-at-top
  from resnet_jax import preemption  # pylint: disable=g-import-not-at-top
  from resnet_jax import train  # pylint: disable=g-import-not-at-top

  _enable_compilation_cache(config.compilation_cache_dir)
  # Both before anything starts JAX's backends.
  parallel.configure_cpu_devices(config)
  parallel.initialize_distributed(config)
  try:
    train.train_and_evaluate(
        config, FLAGS.workdir,
        config_name=os.path.splitext(os.path.basename(config_file))[0])
  except ValueError as e:
    # Problems with the config, data, workdir or checkpoints, or a loss that
    # diverged: one line, no traceback.
    logging.debug('Failed:', exc_info=True)
    sys.exit(f'error: {" ".join(str(e).split())}')
  except preemption.Preempted as e:
    logging.warning('%s', e)
    sys.exit(128 + signal.SIGTERM)


if __name__ == '__main__':
  app.run(main, flags_parser=_parse_flags)
