"""Classifying image files with a trained run (predict.py)."""

import json
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from trainer_process import REPO, run_module
from resnet_jax import predict
from resnet_jax.data import datasets
from resnet_jax.read import inference
from resnet_jax.read import report

SHAPE = (32, 32, 3)


@pytest.fixture(name='loaded', scope='module')
def fixture_loaded(trained_workdir):
  # Outside TFDS's mock data: predicting needs no dataset.
  return inference.load(str(trained_workdir))


def random_image(seed, size=(32, 32), mode='RGB'):
  rng = np.random.default_rng(seed)
  channels = {'RGB': 3, 'RGBA': 4, 'L': 1}[mode]
  pixels = rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8)
  return Image.fromarray(pixels[..., 0] if channels == 1 else pixels, mode)


# ----------------------------------------------------------------------------
# Reading files.


def test_a_png_is_read_pixel_for_pixel(tmp_path):
  image = random_image(0)
  image.save(tmp_path / 'a.png')
  pixels = predict.read_image(str(tmp_path / 'a.png'), SHAPE)
  assert pixels.dtype == np.uint8
  np.testing.assert_array_equal(pixels, np.asarray(image))


def test_grayscale_becomes_rgb_with_equal_channels(tmp_path):
  image = random_image(1, mode='L')
  image.save(tmp_path / 'gray.png')
  pixels = predict.read_image(str(tmp_path / 'gray.png'), SHAPE)
  assert pixels.shape == SHAPE
  for channel in range(3):
    np.testing.assert_array_equal(pixels[..., channel], np.asarray(image))


def test_alpha_is_dropped_as_in_training(tmp_path):
  rgba = np.zeros((32, 32, 4), np.uint8)
  rgba[..., 0] = 200  # Red everywhere ...
  rgba[:16, :, 3] = 255  # ... opaque in the top half, transparent below.
  Image.fromarray(rgba, 'RGBA').save(tmp_path / 'rgba.png')
  pixels = predict.read_image(str(tmp_path / 'rgba.png'), SHAPE)
  np.testing.assert_array_equal(pixels[:16].reshape(-1, 3), [[200, 0, 0]] *
                                (16 * 32))
  # The trainer's decoder drops alpha: transparent pixels keep their colour.
  np.testing.assert_array_equal(pixels[16:].reshape(-1, 3), [[200, 0, 0]] *
                                (16 * 32))


def test_an_image_of_another_size_is_refused_unless_resized(tmp_path):
  random_image(2, size=(64, 48)).save(tmp_path / 'big.jpg')
  with pytest.raises(predict.ImageError,
                     match='is 64x48 pixels, the model takes 32x32; pass '
                     '--resize'):
    predict.read_image(str(tmp_path / 'big.jpg'), SHAPE)
  pixels = predict.read_image(str(tmp_path / 'big.jpg'), SHAPE, resize=True)
  assert pixels.shape == SHAPE


def test_resizing_keeps_the_aspect_ratio_and_crops_the_centre(tmp_path):
  # Three 64x64 squares side by side: red, green, blue. Scaled to cover
  # 32x32, the centre crop is the green square; stretching would put red and
  # blue thirds on either side.
  bands = np.zeros((64, 192, 3), np.uint8)
  bands[:, :64, 0] = bands[:, 64:128, 1] = bands[:, 128:, 2] = 255
  Image.fromarray(bands).save(tmp_path / 'bands.png')
  pixels = predict.read_image(str(tmp_path / 'bands.png'), SHAPE, resize=True)
  # The antialiasing filter reaches one pixel beyond the crop: the edge
  # columns are tinged with their neighbours.
  np.testing.assert_array_equal(pixels[:, 1:-1].reshape(-1, 3),
                                [[0, 255, 0]] * (32 * 30))
  assert pixels[..., 1].min() > 200


def test_files_that_are_not_images_are_refused_in_a_few_words(tmp_path):
  (tmp_path / 'notes.txt').write_text('not an image')
  (tmp_path / 'folder.png').mkdir()
  for name, reason in [('notes.txt', 'not an image'),
                       ('missing.png', 'no such file'),
                       ('folder.png', 'is a directory')]:
    with pytest.raises(predict.ImageError, match=reason):
      predict.read_image(str(tmp_path / name), SHAPE)


# ----------------------------------------------------------------------------
# Predictions.


def test_each_file_gets_the_models_top_classes_and_bad_ones_an_error(
    loaded, tmp_path):
  images = [random_image(seed) for seed in range(3)]
  paths = []
  for i, image in enumerate(images):
    paths.append(str(tmp_path / f'{i}.png'))
    image.save(paths[-1])
  paths.insert(1, str(tmp_path / 'missing.png'))
  results = predict.predict_files(loaded, paths, top_k=3)

  assert [r.file for r in results] == paths
  assert results[1].error == 'no such file' and results[1].top_k is None
  ok = [r for r in results if r.error is None]
  pixels = np.stack([np.asarray(image) for image in images])
  want = report.softmax(loaded.logits(pixels))
  for result, probabilities in zip(ok, want, strict=True):
    top = result.top_k
    assert len(top) == 3
    assert [p['index'] for p in top] == list(np.argsort(-probabilities)[:3])
    np.testing.assert_allclose([p['probability'] for p in top],
                               np.sort(probabilities)[::-1][:3], rtol=1e-6)
    assert [p['class'] for p in top] == [
        datasets.CIFAR10_CLASS_NAMES[p['index']] for p in top]


def test_top_k_beyond_the_classes_shows_them_all(loaded, tmp_path):
  random_image(5).save(tmp_path / 'a.png')
  [result] = predict.predict_files(loaded, [str(tmp_path / 'a.png')],
                                   top_k=50)
  assert len(result.top_k) == 10
  assert sum(p['probability'] for p in result.top_k) == pytest.approx(1.0)


def test_the_table_lists_each_files_classes_in_order():
  results = [
      predict.Prediction('cat.png', top_k=[
          {'class': 'cat', 'index': 3, 'probability': 0.875},
          {'class': 'dog', 'index': 5, 'probability': 0.1}]),
      predict.Prediction('notes.txt', error='not an image'),
  ]
  assert predict.format_table(results).splitlines() == [
      'cat.png', '  1. cat   87.50%', '  2. dog   10.00%']


def test_the_command_line_predicts_the_good_files_and_names_the_bad_ones(
    trained_workdir, tmp_path):
  random_image(10).save(tmp_path / 'a.png')
  random_image(11).save(tmp_path / 'b.jpg', quality=90)
  random_image(12, mode='L').save(tmp_path / 'gray.png')
  random_image(13, size=(40, 40)).save(tmp_path / 'big.jpg')
  (tmp_path / 'notes.txt').write_text('hello')
  names = ['a.png', 'missing.png', 'b.jpg', 'big.jpg', 'gray.png',
           'notes.txt']
  # No dataset is needed.
  result = run_module('resnet_jax.predict', f'--workdir={trained_workdir}',
                      '--json', '--top_k=2',
                      *[str(tmp_path / n) for n in names])
  assert result.returncode == 1, result.stderr[-3000:]
  errors = [line for line in result.stderr.splitlines()
            if line.startswith('error: ')]
  assert errors == [
      f'error: {tmp_path / "missing.png"}: no such file',
      f'error: {tmp_path / "big.jpg"}: is 40x40 pixels, the model takes '
      '32x32; pass --resize to scale and centre-crop it',
      f'error: {tmp_path / "notes.txt"}: not an image (Pillow does not '
      'recognise it)',
  ]
  output = json.loads(result.stdout)
  assert output['checkpoint_step'] == 4
  assert (output['run'], output['seed'], output['num_runs']) == (0, 0, 2)
  predictions = {p['file'].rsplit('/', 1)[-1]: p
                 for p in output['predictions']}
  assert list(predictions) == names
  for name in ('a.png', 'b.jpg', 'gray.png'):
    top = predictions[name]['top_k']
    assert len(top) == 2 and top[0]['probability'] >= top[1]['probability']
    assert top[0]['class'] in datasets.CIFAR10_CLASS_NAMES
  assert 'error' in predictions['notes.txt']


def test_the_command_line_predicts_with_a_chosen_run_or_the_ensemble(
    trained_workdir, tmp_path):
  random_image(20).save(tmp_path / 'a.png')
  pixels = np.asarray(random_image(20))[None]
  for flag, which, kwargs in [('--run=1', {'run': 1, 'seed': 1}, {'run': 1}),
                              ('--ensemble', {'ensemble': True},
                               {'ensemble': True})]:
    result = run_module('resnet_jax.predict', f'--workdir={trained_workdir}',
                        '--json', '--top_k=10', flag, str(tmp_path / 'a.png'))
    assert result.returncode == 0, result.stderr[-3000:]
    output = json.loads(result.stdout)
    assert output.items() >= which.items()
    loaded = inference.load(str(trained_workdir), **kwargs)
    want = report.softmax(loaded.logits(pixels))[0]
    [prediction] = output['predictions']
    got = {p['index']: p['probability'] for p in prediction['top_k']}
    np.testing.assert_allclose([got[i] for i in range(10)], want, rtol=1e-5)


def test_the_command_line_names_a_run_out_of_range_in_one_line(trained_workdir,
                                                               tmp_path):
  random_image(21).save(tmp_path / 'a.png')
  result = run_module('resnet_jax.predict', f'--workdir={trained_workdir}',
                      '--run=2', str(tmp_path / 'a.png'))
  assert result.returncode == 1
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: no run 2 in {trained_workdir}: it holds num_runs=2 runs, 0..1')
  assert not result.stdout


# Runs predict, then prints which heavy modules it imported.
IMPORTS_OF_PREDICT = '''
import runpy, sys
sys.argv = ['predict'] + sys.argv[1:]
try:
  runpy.run_module('resnet_jax.predict', run_name='__main__')
except SystemExit as e:
  assert not e.code, e.code
print(sorted({m.split('.')[0] if m.startswith('tensorflow') else m
              for m in sys.modules
              if m.startswith(('tensorflow', 'clu.metric_writers'))}))
'''


def test_predicting_one_image_imports_neither_tensorflow_nor_clus_writers(
    trained_workdir, tmp_path):
  random_image(10).save(tmp_path / 'a.png')
  result = subprocess.run(
      [sys.executable, '-c', IMPORTS_OF_PREDICT, f'--workdir={trained_workdir}',
       str(tmp_path / 'a.png')], cwd=REPO, capture_output=True, text=True,
      timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  assert 'a.png' in result.stdout
  assert result.stdout.strip().splitlines()[-1] == '[]'
