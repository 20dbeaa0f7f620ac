"""What the inspection commands (evaluate, curves, predict) do first."""

import os

from absl import flags
from absl import logging


def start():
  """Keeps TensorFlow off the GPUs and the console to the results.

  TensorFlow (imported by the checkpoint, data and event-file code) only
  reads files here: every GPU is left to JAX. Orbax's and TFDS's progress
  lines would bury the results; -v 0 shows them again.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
  if not flags.FLAGS['verbosity'].present:
    logging.set_verbosity(logging.WARNING)
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  tf.config.set_visible_devices([], 'GPU')
