"""Test-wide setup: 8 virtual CPU devices, deterministic property tests."""

import os
import pathlib
import sys

# Must precede the first `import jax` anywhere in the test session: the
# multi-device tests run pmap and shard_map over 8 CPU devices.
os.environ['XLA_FLAGS'] = (os.environ.get('XLA_FLAGS', '') +
                           ' --xla_force_host_platform_device_count=8')
# Tests never need a GPU; keep TensorFlow (when a test imports it) off one.
os.environ.setdefault('CUDA_VISIBLE_DEVICES', '')
# Where a GPU is made visible, float32 convolutions would otherwise run in
# TF32 and miss the float64 reference by ~1e-3 (seen on an H100).
os.environ.setdefault('JAX_DEFAULT_MATMUL_PRECISION', 'highest')

from hypothesis import settings  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# Each new shape recompiles the model, so examples are few and slow; a fixed
# seed keeps CI reproducible while still covering the space across examples.
settings.register_profile('default', deadline=None, derandomize=True,
                          max_examples=12, print_blob=True)
settings.load_profile(os.environ.get('HYPOTHESIS_PROFILE', 'default'))

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / 'tests'))

import fake_cifar  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.fixture(name='cifar10_dir', scope='session')
def fixture_cifar10_dir() -> str:
  """A TFDS data_dir with a small CIFAR-10 prepared in it (fake_cifar.py)."""
  return fake_cifar.data_dir()
