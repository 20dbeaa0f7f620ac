"""One decoder for training, evaluate and predict (datasets.decode_image):
predict on a file of an image folder classifies exactly the pixels the
trainer and evaluate read from it, whatever the file's Pillow mode."""

import numpy as np
from PIL import Image
import ml_collections
import pytest

from resnet_jax import datasets
from resnet_jax import predict

rng = np.random.default_rng(0)
RGBA = rng.integers(0, 256, (8, 8, 4), np.uint8)
RGBA[0, 0, 3] = 0  # A transparent pixel, whose colour alpha must not change.


def exif_rotated() -> Image.Image:
  image = Image.fromarray(RGBA[..., :3])
  exif = image.getexif()
  exif[0x0112] = 6  # Orientation: rotate 90 degrees to display.
  image.info['exif'] = exif.tobytes()
  return image


# Every mode the image folders accept, as (file name, image, save options).
IMAGES = {
    'rgb.png': (Image.fromarray(RGBA[..., :3]), {}),
    'grey.png': (Image.fromarray(RGBA[..., 0]), {}),
    'bilevel.png': (Image.fromarray(RGBA[..., 0]).convert('1'), {}),
    'grey16.png': (Image.fromarray(
        rng.integers(0, 1 << 16, (8, 8)).astype(np.uint16)), {}),
    'grey_alpha.png': (Image.fromarray(RGBA[..., :2].copy(), 'LA'), {}),
    'rgba.png': (Image.fromarray(RGBA), {}),
    'palette.png': (Image.fromarray(RGBA[..., :3]).quantize(16), {}),
    'palette_transparent.png': (Image.fromarray(RGBA[..., :3]).quantize(16),
                                {'transparency': 0}),
    'rgb.jpg': (Image.fromarray(RGBA[..., :3]), {}),
    'grey.jpg': (Image.fromarray(RGBA[..., 0]), {}),
    'cmyk.jpg': (Image.fromarray(RGBA, 'CMYK'), {}),
    'exif_rotated.jpg': (exif_rotated(), {}),
}


@pytest.mark.parametrize('name', IMAGES)
def test_predict_reads_a_dataset_file_as_the_dataset_loader_does(tmp_path,
                                                                 name):
  image, options = IMAGES[name]
  path = tmp_path / 'train' / 'only' / name
  path.parent.mkdir(parents=True)
  exif = image.info.get('exif')
  image.save(path, **options, **({'exif': exif} if exif else {}))
  config = ml_collections.ConfigDict(dict(
      name='image_folder', data_dir=str(tmp_path), split_shuffle_seed=0,
      download=False, train_split='train', eval_split='', test_split=''))
  loaded = datasets.load_split(config, 'train').images[0]
  np.testing.assert_array_equal(
      predict.read_image(str(path), loaded.shape), loaded)
