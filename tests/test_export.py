"""Exporting a workdir or a release (resnet_jax/export.py): ONNX and jax.export.

Each artefact must give the JAX model's logits on real images, for any batch
size. Tolerance: both compute in float32 the same arithmetic in another
order (ONNX Runtime's convolutions and batch norm; XLA's fusions of the
exported program, its weights constants), so logits differ by rounding: a
few float32 ulps (6e-8 relative) per layer over 20-56 layers, relative to
logits of up to ~40, i.e. ~1e-5. Measured on 1,000 images of the JPEG copy:
at most 1.9e-5 (ONNX) and 1.5e-5 (jax.export), ResNet-20 and ResNet-56.
1e-4 absolute leaves a factor 5 for other CPUs' instruction sets and still
fails any real difference (a wrong epsilon, padding or shortcut moves
logits by 1e-3 or more).
"""

import functools
import pathlib
import sys
import types
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image
import pytest

import fake_cifar
import jpeg_copy
from trainer_process import error_line
from trainer_process import run_module
from resnet_jax import export
from resnet_jax.core import models
from resnet_jax.read import inference

onnx = pytest.importorskip('onnx')
ort = pytest.importorskip('onnxruntime')

TOLERANCE = 1e-4
RELEASE = str(pathlib.Path(export.__file__).parent / 'pretrained' / 'resnet20')


def _images(n: int) -> np.ndarray:
  """`n` real images (the JPEG copy of CIFAR-10) where it is at hand, else
  the tests' fake CIFAR images."""
  if not jpeg_copy.TRAIN_ZIP.exists():
    return fake_cifar.examples('train')[0][:n]
  with zipfile.ZipFile(jpeg_copy.TRAIN_ZIP) as archive:
    names = sorted(name for name in archive.namelist()
                   if name.endswith('.jpg'))[::5000][:n]
    return np.stack([np.asarray(Image.open(archive.open(name)).convert('RGB'))
                     for name in names])


def _onnx_logits(model_bytes: bytes, images: np.ndarray) -> np.ndarray:
  session = ort.InferenceSession(model_bytes,
                                 providers=['CPUExecutionProvider'])
  return session.run(None, {'images': images})[0]


@pytest.mark.parametrize('block,preact,shortcut,width', [
    ('basic', False, 'A', 1), ('basic', True, 'B', 2),
    pytest.param('bottleneck', False, 'B', 1, marks=pytest.mark.slow),
    pytest.param('bottleneck', True, 'A', 1, marks=pytest.mark.slow)])
def test_the_onnx_graph_computes_every_kind_of_model(block, preact, shortcut,
                                                     width):
  depth = 8 if block == 'basic' else 11
  model = models.ResNet(depth=depth, block=block, preact=preact,
                        shortcut=shortcut, width=width, num_classes=7,
                        bn_epsilon=1e-3)
  images = fake_cifar.examples('train')[0][:5]
  mean, std = np.array([120., 115., 100.]), np.array([60., 62., 66.])
  variables = jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  # Batch norms away from their initial state (statistics 0 and 1, scale 1,
  # bias 0), so that one read in the wrong order or with the wrong epsilon
  # shows.
  def perturb(path, x):
    name = jax.tree_util.keystr(path)
    noise = jax.random.uniform(jax.random.key(len(name)), x.shape)
    if name.endswith("['var']") or name.endswith("['scale']"):
      return x * (0.5 + noise)
    if name.endswith("['mean']") or name.endswith("['bias']"):
      return x + 0.2 * (noise - 0.5)
    return x
  variables = jax.tree_util.tree_map_with_path(perturb, variables)
  expected = jax.jit(functools.partial(model.apply, train=False))(
      variables, (images - mean) / std)
  loaded = types.SimpleNamespace(model=model, variables=variables, mean=mean,
                                 std=std, image_shape=(32, 32, 3))
  got = _onnx_logits(export.onnx_model(loaded).SerializeToString(), images)
  assert np.abs(expected).max() > 0.1  # Logits of some size, not all zero.
  np.testing.assert_allclose(got, expected, atol=TOLERANCE, rtol=0)


def test_a_bfloat16_model_is_refused_for_onnx():
  loaded = types.SimpleNamespace(model=models.ResNet(dtype=jnp.bfloat16))
  with pytest.raises(ValueError, match='computes in bfloat16: an ONNX export'):
    export.onnx_model(loaded)


@pytest.mark.slow
@pytest.mark.parametrize('suffix', ['onnx', 'jax'])
def test_an_exported_release_gives_the_models_logits(suffix, tmp_path):
  out = tmp_path / f'model.{suffix}'
  result = run_module('resnet_jax.export', f'--workdir={RELEASE}',
                      f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith(f'exported run 0 of {RELEASE} as ')
  images = _images(8)
  expected = inference.load(RELEASE).logits(images, batch_size=8)
  for n in (1, 7):
    if suffix == 'onnx':
      got = _onnx_logits(out.read_bytes(), images[:n])
    else:
      exported = jax.export.deserialize(bytearray(out.read_bytes()))
      got = np.asarray(exported.call(images[:n]))
    assert got.shape == (n, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, expected[:n], atol=TOLERANCE, rtol=0)


@pytest.mark.slow
def test_bad_input_is_refused_in_one_line(tmp_path):
  existing = tmp_path / 'model.onnx'
  existing.write_bytes(b'mine')
  for args, line in (
      ([f'--out={existing}'], f'error: --out={existing} exists; name a new '
       'file'),
      ([f'--out={tmp_path}/model.txt'], f'error: --out={tmp_path}/model.txt: '
       'name a .onnx or .jax file, or give --format=onnx or --format=jax'),
      ([f'--out={tmp_path}/no/model.jax'], f'error: --out={tmp_path}/no/'
       f'model.jax: the directory {tmp_path}/no does not exist')):
    result = run_module('resnet_jax.export', f'--workdir={RELEASE}', *args)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert error_line(result) == line
  assert existing.read_bytes() == b'mine'
  result = run_module('resnet_jax.export', f'--workdir={tmp_path}/none',
                      f'--out={tmp_path}/m.jax')
  assert result.returncode == 1 and error_line(result) == (
      f'error: workdir {tmp_path}/none does not exist or is not a directory')
  assert sorted(p.name for p in tmp_path.iterdir()) == ['model.onnx']


@pytest.mark.slow
def test_a_chosen_run_of_a_workdir_exports(trained_workdir, tmp_path):
  out = tmp_path / 'run1.onnx'
  result = run_module('resnet_jax.export', f'--workdir={trained_workdir}',
                      '--run=1', '--checkpoint=2', f'--out={out}')
  assert result.returncode == 0, result.stderr[-3000:]
  images = _images(7)
  expected = inference.load(str(trained_workdir), checkpoint=2, run=1).logits(
      images, batch_size=7)
  other = inference.load(str(trained_workdir), checkpoint=2, run=0).logits(
      images, batch_size=7)
  assert np.abs(expected - other).max() > 100 * TOLERANCE  # Runs differ.
  np.testing.assert_allclose(_onnx_logits(out.read_bytes(), images),
                             expected, atol=TOLERANCE, rtol=0)


def test_onnx_without_the_extra_says_what_to_install(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, 'onnx', None)  # As if not installed.
  with pytest.raises(ValueError, match=r"^ONNX export needs the onnx package: "
                     r"pip install 'resnet_jax\[export\]'$"):
    export.export(RELEASE, str(tmp_path / 'm.onnx'))
  assert not list(tmp_path.iterdir())
