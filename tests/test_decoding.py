"""One decoder for training, evaluate and predict (datasets.decode_image):
predict on a file of an image folder classifies exactly the pixels the
trainer and evaluate read from it, whatever the file's Pillow mode."""

import os
import socket
import struct
import threading
import zlib

import ml_collections
import numpy as np
from PIL import Image
import pytest

from resnet_jax import predict
from resnet_jax.data import datasets

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


# ----------------------------------------------------------------------------
# Every mode and byte order decodes as its 8-bit RGB twin, computed here.

GREY16 = rng.integers(0, 1 << 16, (8, 8)).astype(np.uint16)
RGB16 = rng.integers(0, 1 << 16, (8, 8, 3)).astype(np.uint16)


def grey_twin(grey: np.ndarray) -> np.ndarray:
  return np.repeat(grey[..., None], 3, axis=-1)


def palette_twin(image: Image.Image) -> np.ndarray:
  palette = np.asarray(image.getpalette('RGB'), np.uint8).reshape(-1, 3)
  return palette[np.asarray(image)]


def png16(path, samples: np.ndarray, colour_type: int) -> None:
  """A 16-bit PNG written by hand (Pillow writes 16-bit grey only):
  colour_type 0 grey, 2 RGB, 4 grey and alpha, 6 RGBA."""
  def chunk(kind, data):
    return (struct.pack('>I', len(data)) + kind + data +
            struct.pack('>I', zlib.crc32(kind + data)))
  height, width = samples.shape[:2]
  rows = b''.join(b'\0' + row.astype('>u2').tobytes() for row in samples)
  path.write_bytes(
      b'\x89PNG\r\n\x1a\n' +
      chunk(b'IHDR', struct.pack('>IIBBBBB', width, height, 16, colour_type,
                                 0, 0, 0)) +
      chunk(b'IDAT', zlib.compress(rows)) + chunk(b'IEND', b''))


def libjpeg_ycbcr_to_rgb(ycbcr: np.ndarray) -> np.ndarray:
  """JFIF's YCbCr -> RGB in libjpeg's fixed point (jdcolor.c: 16 fraction
  bits, each product rounded), which TF's decode_jpeg uses too."""
  y, cb, cr = np.moveaxis(ycbcr.astype(np.int64), -1, 0)
  cb, cr = cb - 128, cr - 128
  fix = lambda x: int(x * (1 << 16) + 0.5)
  half = 1 << 15
  rgb = [y + ((fix(1.402) * cr + half) >> 16),
         y + ((-fix(0.34414) * cb - fix(0.71414) * cr + half) >> 16),
         y + ((fix(1.772) * cb + half) >> 16)]
  return np.clip(np.stack(rgb, -1), 0, 255).astype(np.uint8)


def ycbcr_jpeg(path):
  Image.fromarray(RGBA[..., :3]).convert('YCbCr').save(path, quality=90)
  with Image.open(path) as image:  # Its samples, before any conversion.
    image.draft('YCbCr', image.size)
    assert image.mode == 'YCbCr'
    return libjpeg_ycbcr_to_rgb(np.asarray(image))


def cmyk_jpeg(path):
  cmyk = RGBA.copy()
  cmyk[..., 3] = 0  # No black: the twin of C is 255 - C (Pillow's RGB->CMYK).
  Image.fromarray(cmyk, 'CMYK').save(path, quality=90)
  with Image.open(path) as image:  # Adobe's inverted CMYK, as Pillow reads it.
    samples = np.asarray(image)
  assert image.mode == 'CMYK' and not samples[..., 3].any()
  return 255 - samples[..., :3]


def saved(image, path, **options):
  image.save(path, **options)


def twin_cases():
  """name -> (writes the file at a path and returns the twin, or None)."""
  rgb, grey = RGBA[..., :3], RGBA[..., 0]
  palette = Image.fromarray(rgb).quantize(16)

  def make(image, twin, **options):
    return lambda path: saved(image, path, **options) or twin

  def pgm16(path):  # PGM of 16 bits: big-endian samples, Pillow's 'I'.
    path.write_bytes(b'P5 8 8 65535\n' + GREY16.astype('>u2').tobytes())
    return grey_twin((GREY16 >> 8).astype(np.uint8))

  def png_16(samples, colour_type, twin):
    return lambda path: png16(path, samples, colour_type) or twin

  high = lambda x: (x >> 8).astype(np.uint8)
  grey_alpha16 = np.stack([GREY16, RGB16[..., 0]], -1)
  return {
      'rgb.png': make(Image.fromarray(rgb), rgb),
      'grey.png': make(Image.fromarray(grey), grey_twin(grey)),
      'bilevel.png': make(Image.fromarray(grey > 127),
                          grey_twin(np.where(grey > 127, 255, 0))),
      'grey_alpha.png': make(Image.fromarray(RGBA[..., :2].copy(), 'LA'),
                             grey_twin(grey)),
      'palette.png': make(palette, palette_twin(palette)),
      'palette_transparent.png': make(palette, palette_twin(palette),
                                      transparency=0),
      'palette_alpha.tiff': make(palette.convert('PA'), palette_twin(palette)),
      'rgba.png': make(Image.fromarray(RGBA), rgb),
      'rgba.tiff': make(Image.fromarray(RGBA), rgb),
      'rgb.bmp': make(Image.fromarray(rgb), rgb),
      'cmyk.tiff': make(Image.fromarray(
          np.dstack([255 - rgb, np.zeros_like(grey)]), 'CMYK'), rgb),
      'cmyk.jpg': cmyk_jpeg,
      'ycbcr.jpg': ycbcr_jpeg,
      'grey16.png': make(Image.fromarray(GREY16), grey_twin(high(GREY16))),
      'grey16_big_endian.tiff': make(
          Image.frombytes('I;16B', (8, 8), GREY16.astype('>u2').tobytes()),
          grey_twin(high(GREY16))),
      'grey16_little_endian.tiff': make(Image.fromarray(GREY16),
                                        grey_twin(high(GREY16))),
      'grey16.pgm': pgm16,
      'rgb16.png': png_16(RGB16, 2, high(RGB16)),
      'grey_alpha16.png': png_16(grey_alpha16, 4, grey_twin(high(GREY16))),
      'rgba16.png': png_16(np.dstack([RGB16, GREY16]), 6, high(RGB16)),
  }


TWINS = twin_cases()


@pytest.mark.parametrize('name', TWINS)
def test_every_mode_decodes_as_its_8_bit_rgb_twin(tmp_path, name):
  path = tmp_path / name
  twin = TWINS[name](path)
  np.testing.assert_array_equal(predict.read_image(str(path), twin.shape),
                                twin)
  if path.suffix in ('.png', '.jpg'):  # What image folders take, alike.
    np.testing.assert_array_equal(datasets.decode_image(str(path)), twin)


@pytest.mark.parametrize('name, image', [
    ('float.tiff', Image.fromarray(GREY16.astype(np.float32), 'F')),
    ('int32.tiff', Image.fromarray(GREY16.astype(np.int32) << 8, 'I')),
    ('lab.tiff', Image.fromarray(RGBA[..., :3], 'LAB')),
])
def test_pixels_without_an_exact_8_bit_form_are_refused_in_one_line(
    tmp_path, name, image):
  image.save(tmp_path / name)
  mode = image.mode
  with pytest.raises(predict.ImageError, match=(
      rf'^pixels of mode {mode} \(TIFF\) have no exact 8-bit RGB form; save '
      r'the image as 8-bit RGB$')):
    predict.read_image(str(tmp_path / name), (8, 8, 3))


def _fifo(tmp_path):
  os.mkfifo(tmp_path / 'fifo.png')
  return str(tmp_path / 'fifo.png')


def _socket(tmp_path):
  server = socket.socket(socket.AF_UNIX)
  server.bind(str(tmp_path / 'socket.png'))
  return str(tmp_path / 'socket.png')


@pytest.mark.parametrize('make, reason', [
    (_fifo, 'not a regular file (a FIFO, device or socket)'),
    (lambda tmp_path: '/dev/zero',
     'not a regular file (a FIFO, device or socket)'),
    (_socket, 'not a regular file (a FIFO, device or socket)'),
    (lambda tmp_path: str(tmp_path), 'is a directory'),
    (lambda tmp_path: str(tmp_path / 'missing.png'), 'no such file'),
])
def test_only_regular_files_are_read_and_nothing_waits(tmp_path, make,
                                                       reason):
  path = make(tmp_path)
  outcome = []

  def read():
    try:
      predict.read_image(path, (8, 8, 3))
    except predict.ImageError as e:
      outcome.append(str(e))

  reader = threading.Thread(target=read, daemon=True)
  reader.start()
  reader.join(timeout=30)
  if reader.is_alive() and path.endswith('fifo.png'):
    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))  # Frees it.
  assert not reader.is_alive() and outcome == [reason]


def test_a_symlink_to_an_image_is_read(tmp_path):
  Image.fromarray(RGBA[..., :3]).save(tmp_path / 'image.png')
  os.symlink(tmp_path / 'image.png', tmp_path / 'link.png')
  np.testing.assert_array_equal(
      predict.read_image(str(tmp_path / 'link.png'), (8, 8, 3)),
      RGBA[..., :3])
