"""The base install (no `tfds` extra) runs everything but TFDS datasets.

A missing package is simulated with sys.modules[name] = None, which makes
`import name` raise ImportError as if it were not installed.
"""

import os
import pathlib
import subprocess
import sys
import tomllib

REPO = pathlib.Path(__file__).resolve().parents[1]
HIDE_TFDS = "import sys; sys.modules['tensorflow_datasets'] = None\n"
HIDE_TENSORFLOW = HIDE_TFDS + "sys.modules['tensorflow'] = None\n"


def run_python(code: str, cwd=REPO) -> subprocess.CompletedProcess:
  return subprocess.run(
      [sys.executable, '-c', code], cwd=cwd, capture_output=True, text=True,
      env={**os.environ, 'PYTHONPATH': str(REPO)}, timeout=300)


def test_the_base_dependencies_hold_no_tensorflow_and_the_tfds_extra_does():
  project = tomllib.loads((REPO / 'pyproject.toml').read_text())['project']
  base = ' '.join(project['dependencies']).lower()
  assert 'tensorflow' not in base
  tfds = ' '.join(project['optional-dependencies']['tfds'])
  assert 'tensorflow-datasets' in tfds and 'tensorflow-cpu' in tfds
  # One install runs the whole suite (PyTorch aside).
  assert 'resnet_jax[tfds,export]' in project['optional-dependencies']['test']


def test_a_tfds_dataset_without_tfds_ends_in_one_line_naming_the_extra(
    tmp_path):
  for hidden in (HIDE_TFDS, HIDE_TENSORFLOW):
    result = run_python(
        hidden + 'import runpy\n'
        "sys.argv = ['resnet_jax.main', '--config=configs/smoke.py', "
        f"'--workdir={tmp_path / 'run'}']\n"
        "runpy.run_module('resnet_jax.main', run_name='__main__')\n")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith('error: cifar10, cifar100 come from '
                                'TensorFlow Datasets, which is not installed')
    assert "pip install 'resnet_jax[tfds]'" in lines[-1]
    assert 'Traceback' not in result.stderr


def test_a_release_predicts_without_tensorflow():
  predict = ('import numpy as np, resnet_jax\n'
             "model = resnet_jax.pretrained('resnet20')\n"
             'images = np.zeros((2, 32, 32, 3), np.uint8)\n'
             'assert len(model.predict(images)) == 2\n')
  # Without TensorFlow at all: importing it would raise.
  result = run_python(HIDE_TENSORFLOW + predict)
  assert result.returncode == 0, result.stderr
