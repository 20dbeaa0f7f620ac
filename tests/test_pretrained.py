"""The released models in pretrained/ still give what they record.

Each release (experiments/release.py) records in release.json the sha256 of
its weights, its parameter count and how many images of its validation split
it classified correctly on the CPU. Here the public API,
`resnet_jax.pretrained(name).predict`, classifies that split again: any
later change to the model, the preprocessing or the loading that alters what
a released model computes fails here. The JPEG copy of CIFAR-10 in ../shared
holds the validation images (CI has it). The releases ship in the package:
an installed wheel has them, by name, from any directory.
"""

import json
import os
import pathlib
import re
import shutil
import subprocess
import sys

import jax
import numpy as np
from PIL import Image
import pytest

import jpeg_copy
from trainer_process import fresh_clone
import resnet_jax
from resnet_jax.read import release_format

REPO = pathlib.Path(__file__).resolve().parents[1]
RELEASES = sorted(p.parent for p in release_format.PRETRAINED.glob(
    f'*/{release_format.RECORD_FILE}'))


def test_the_readme_shows_each_releases_recorded_figures():
  readme = (REPO / 'README.md').read_text()
  shown = re.findall(
      r'^\| `resnet_jax/pretrained/(\w+)` \| ([\d.]+)% \| ([\d,]+) \|',
      readme, re.MULTILINE)
  assert {name for name, _, _ in shown} == {p.name for p in RELEASES} >= {
      'resnet20', 'resnet56'}
  for name, accuracy, params in shown:
    record = json.loads((release_format.PRETRAINED / name /
                         release_format.RECORD_FILE).read_text())
    assert float(accuracy) == round(100 * record['validation']['accuracy'], 2)
    assert int(params.replace(',', '')) == record['num_params']


@pytest.fixture(name='jpeg_dir', scope='session')
def fixture_jpeg_dir(tmp_path_factory):
  # The whole training split: the validation split is a shuffled slice of it.
  return str(jpeg_copy.image_folder(tmp_path_factory.mktemp('jpeg'),
                                    per_class=5000))


@pytest.mark.slow
@pytest.mark.parametrize('out', RELEASES, ids=lambda p: p.name)
def test_a_release_gives_the_figures_it_records(out, jpeg_dir, check_release):
  check_release(out, jpeg_dir)


@pytest.mark.slow
def test_one_line_gives_a_model_that_names_classes(jpeg_dir):
  model = resnet_jax.pretrained('resnet20')
  assert model.class_names[:3] == ('airplane', 'automobile', 'bird')
  images = np.stack([
      np.asarray(Image.open(p).convert('RGB')) for p in sorted(
          pathlib.Path(jpeg_dir, 'train', 'ship').glob('*.jpg'))[:20]])
  names = model.predict(images)
  assert len(names) == 20 and names.count('ship') >= 15
  probabilities = model.probabilities(images)
  assert probabilities.shape == (20, 10)
  np.testing.assert_allclose(probabilities.sum(-1), 1, rtol=1e-5)
  np.testing.assert_array_equal(
      probabilities.argmax(-1), model.logits(images).argmax(-1))
  assert model.predict(images[0]) == names[:1]  # One image (H, W, C).
  with pytest.raises(ValueError, match=r'uint8 pixels of shape \(N, 32, 32, '
                     r'3\), got float32 \(20, 32, 32, 3\)'):
    model.predict(images.astype(np.float32))
  with pytest.raises(ValueError, match="no release 'resnet1000'"):
    resnet_jax.pretrained('resnet1000')
  assert sum(x.size for x in jax.tree.leaves(model.variables['params'])) == (
      269_722)


def test_a_name_means_a_shipped_release_and_a_path_any(tmp_path,
                                                       monkeypatch):
  # A decoy in the working directory: resnet20 as released, but its
  # record says step 1 (and a config.json edit would change nothing here).
  shutil.copytree(release_format.PRETRAINED / 'resnet20', tmp_path / 'resnet20')
  record_path = tmp_path / 'resnet20' / release_format.RECORD_FILE
  record = json.loads(record_path.read_text())
  record_path.write_text(json.dumps(record | {'step': 1}))
  monkeypatch.chdir(tmp_path)
  assert resnet_jax.pretrained('resnet20').step == record['step'] == 64000
  assert resnet_jax.pretrained('./resnet20').step == 1
  assert resnet_jax.pretrained(pathlib.Path('resnet20')).step == 1
  with pytest.raises(ValueError, match=r'^\./nothing is not a release: it has '
                     'no release.json$'):
    resnet_jax.pretrained('./nothing')


@pytest.mark.slow
def test_an_installed_wheel_has_the_releases_from_any_directory(tmp_path):
  # Built from a copy: building writes build/ beside the sources.
  source = fresh_clone(tmp_path / 'src')
  wheels, target = tmp_path / 'wheels', tmp_path / 'site'
  for command in (['wheel', '--no-deps', '--no-build-isolation', '-q',
                   str(source), '-w', str(wheels)],
                  ['install', '--no-deps', '-q', '--target', str(target)]):
    if command[0] == 'install':
      command += [str(p) for p in wheels.glob('*.whl')]
    result = subprocess.run([sys.executable, '-m', 'pip', *command],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
  elsewhere = tmp_path / 'elsewhere'
  (elsewhere / 'resnet20').mkdir(parents=True)  # A decoy: not a release.
  (elsewhere / 'resnet20' / 'release.json').write_text('{}')
  script = (
      'import numpy as np, resnet_jax\n'
      'print(resnet_jax.__file__)\n'
      'for name in ("resnet20", "resnet56"):\n'
      '  m = resnet_jax.pretrained(name)\n'
      '  x = np.zeros((2, 32, 32, 3), np.uint8)\n'
      '  print(name, m.step, m.num_classes, len(m.predict(x)))\n')
  env = {k: v for k, v in os.environ.items() if k != 'PYTHONPATH'}
  result = subprocess.run([sys.executable, '-c', script], cwd=elsewhere,
                          env=env | {'PYTHONPATH': str(target)},
                          capture_output=True, text=True, timeout=600)
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.splitlines() == [
      str(target / 'resnet_jax' / '__init__.py'), 'resnet20 64000 10 2',
      'resnet56 64000 10 2']
