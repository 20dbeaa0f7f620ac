"""On-device augmentation: the paper's crops and flips, keyed per example."""

import functools

import jax
from jax.sharding import PartitionSpec as P
import ml_collections
import numpy as np
import pytest

from resnet_jax.core import augment
from resnet_jax.run import parallel

PAD = 4


def images(n=4, size=8, seed=0):
  return np.random.default_rng(seed).integers(
      0, 256, (n, size, size, 3)).astype(np.uint8)


def windows(image, padding):
  """Every crop of the zero-padded image, and every flipped crop."""
  size = image.shape[0]
  padded = np.pad(image, ((padding, padding), (padding, padding), (0, 0)))
  for top in range(2 * padding + 1):
    for left in range(2 * padding + 1):
      crop = padded[top:top + size, left:left + size]
      yield (top, left, False), crop
      yield (top, left, True), crop[:, ::-1]


def find_window(image, out, padding):
  return [w for w, crop in windows(image, padding)
          if np.array_equal(crop, out)]


def test_crops_lie_inside_the_zero_padded_image_and_cover_every_offset():
  image = images(1)[0]
  seen = set()
  for i in range(300):
    out = np.asarray(augment.crop_and_flip(image, jax.random.key(i), PAD, True))
    matches = find_window(image, out, PAD)
    assert matches, f'key {i} gave a crop that is no window of the padding'
    seen.update((top, left) for (top, left, _) in matches)
  assert len(seen) > 0.9 * (2 * PAD + 1) ** 2


def test_flips_are_horizontal_mirror_images_half_the_time():
  image = images(1)[0]
  flipped = 0
  for i in range(200):
    out = np.asarray(augment.crop_and_flip(image, jax.random.key(i), 0, True))
    if np.array_equal(out, image[:, ::-1]):
      flipped += 1
    else:
      np.testing.assert_array_equal(out, image)
  assert 70 < flipped < 130
  out = augment.crop_and_flip(image, jax.random.key(0), 0, False)
  np.testing.assert_array_equal(out, image)


def test_normalize_is_per_channel_in_pixel_units():
  x = images(2)
  mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 8.0)
  np.testing.assert_allclose(
      augment.normalize(x, mean, std),
      (x.astype(np.float32) - np.array(mean)) / np.array(std), rtol=1e-6)


def augment_batch(x, rng, axis_name=None):
  keys = augment.example_keys(rng, x.shape[0], axis_name)
  return augment.augment(x, keys, mean=(0., 0., 0.), std=(1., 1., 1.),
                         data=ml_collections.ConfigDict(dict(
                             crop_padding=PAD, random_flip=True)))


def test_same_key_same_batch_and_other_keys_other_batches():
  x = images(8)
  a = augment_batch(x, jax.random.key(3))
  np.testing.assert_array_equal(a, augment_batch(x, jax.random.key(3)))
  assert not np.array_equal(a, augment_batch(x, jax.random.key(4)))
  # Examples get their own crops: identical images are augmented differently.
  same = np.repeat(x[:1], 8, axis=0)
  out = np.asarray(augment_batch(same, jax.random.key(3)))
  assert len({o.tobytes() for o in out}) > 1


@pytest.mark.parametrize('mode', ['pmap', 'shard_map'])
def test_each_example_is_augmented_alike_on_one_or_eight_devices(mode):
  x = images(16)
  want = augment_batch(x, jax.random.key(7))
  dp = parallel.DataParallel(mode)
  fn = functools.partial(augment_batch, axis_name=parallel.AXIS)
  if mode == 'pmap':
    got = jax.pmap(fn, axis_name=parallel.AXIS, in_axes=(0, None))(
        dp.put_batch({'image': x, 'label': x[:, 0, 0, 0]})['image'],
        jax.random.key(7)).reshape(want.shape)
  else:
    got = jax.jit(jax.shard_map(fn, mesh=dp.mesh, in_specs=(P('batch'), P()),
                                out_specs=P('batch')))(x, jax.random.key(7))
  np.testing.assert_array_equal(got, want)
