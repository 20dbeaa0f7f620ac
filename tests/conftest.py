"""Test-wide setup: 8 virtual CPU devices, deterministic property tests."""

import hashlib
import json
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
import jax  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# Compiled programs are cached on disk, where the trainer caches its own:
# tests compile the same small models again and again, and a later run of
# the suite loads them (tests/test_runs.py: 141 s with an empty cache, 80 s
# with a full one).
jax.config.update('jax_compilation_cache_dir', os.environ.get(
    'JAX_COMPILATION_CACHE_DIR',
    os.path.expanduser('~/.cache/resnet_jax/jax')))

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


@pytest.fixture(name='cifar100_dir', scope='session')
def fixture_cifar100_dir() -> str:
  """A TFDS data_dir with a small CIFAR-100 prepared in it (fake_cifar.py)."""
  return fake_cifar.data_dir('cifar100')


def _check_release(out: pathlib.Path, data_dir: str | None = None) -> None:
  """Asserts that the release in `out` gives what its release.json records.

  The weights' sha256, the parameter count and the CPU check: the public API
  classifies the check's split again, counted here independently of the
  code that recorded it.
  """
  import ml_collections  # pylint: disable=g-import-not-at-top
  import resnet_jax  # pylint: disable=g-import-not-at-top
  from resnet_jax.data import datasets  # pylint: disable=g-import-not-at-top
  record = json.loads((out / 'release.json').read_text())
  weights = (out / record['weights']['file']).read_bytes()
  assert hashlib.sha256(weights).hexdigest() == record['weights']['sha256']
  model = resnet_jax.pretrained(str(out))
  assert sum(x.size for x in jax.tree.leaves(model.variables['params'])) == (
      record['num_params'])
  check = record['cpu_check']
  data = ml_collections.ConfigDict(model.config.data.to_dict())
  if data_dir:
    data.data_dir = data_dir
  ds = datasets.load_split(data, check['split'])
  predicted = model.predict(ds.images)
  correct = sum(name == model.class_names[label]
                for name, label in zip(predicted, ds.labels))
  assert (correct, len(ds.labels)) == (check['correct'], check['examples'])


@pytest.fixture(name='check_release')
def fixture_check_release():
  """`check_release(out, data_dir=None)`: see _check_release."""
  return _check_release


@pytest.fixture(name='trained_workdir', scope='session')
def fixture_trained_workdir(tmp_path_factory, cifar10_dir):
  """A trained workdir: the smoke config, shortened, on fake_cifar's data.

  Two runs (seeds 0 and 1), so that choosing a run and the ensemble have
  something to choose from; checkpoints (and validation) at steps 2 and 4.
  Trained once per session for evaluate, predict and release's tests.
  """
  from configs import smoke  # pylint: disable=g-import-not-at-top
  from resnet_jax.run import train  # pylint: disable=g-import-not-at-top
  config = smoke.get_config()
  config.data.data_dir = cifar10_dir
  config.update(parallelism='jit', num_train_steps=4, log_every_steps=1,
                eval_every_steps=2, checkpoint_every_steps=2,
                keep_checkpoints=3, num_runs=2)
  workdir = tmp_path_factory.mktemp('smoke_run')
  train.train_and_evaluate(config, str(workdir), config_name='smoke')
  assert (workdir / 'config.json').exists()  # Written by the trainer.
  return workdir
