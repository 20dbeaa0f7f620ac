"""Trains a ResNet as a config describes.

  python -m resnet_jax.main --config=configs/resnet20.py --workdir=runs/resnet20

Any config field can be overridden, e.g. `--config.num_epochs=1`. Rerunning
the same command resumes from the latest checkpoint in the workdir.
"""

import logging as python_logging
import os
import sys

from absl import app
from absl import flags
from absl import logging
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


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietLibraries())
  # TensorFlow only reads data here: it must leave every GPU to JAX.
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
  from resnet_jax import train  # pylint: disable=g-import-not-at-top

  config_file = config_flags.get_config_filename(FLAGS['config'])
  try:
    train.train_and_evaluate(
        FLAGS.config, FLAGS.workdir,
        config_name=os.path.splitext(os.path.basename(config_file))[0])
  except ValueError as e:
    # Problems with the config, data or workdir: one line, no traceback.
    logging.debug('Failed:', exc_info=True)
    sys.exit(f'error: {e}')


if __name__ == '__main__':
  app.run(main)
