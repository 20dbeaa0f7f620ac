"""Classifies image files with a trained run.

  python -m resnet_jax.predict --workdir=runs/resnet20 cat.png ship.jpg
  python -m resnet_jax.predict --workdir=runs/resnet20 --resize --json photo.jpg

Prints each file's --top_k classes (a table per image, or one JSON document
with --json), from one run (--run) or the --ensemble. Files are decoded by
the image folders' decoder (datasets.decode), so a dataset's file is
classified as evaluate classified it; only regular files (and symlinks to
them) are read. An image must have the model's size
unless --resize: then it is scaled to cover that size and centre-cropped
(Pillow's ImageOps.fit). A bad file gets one line `error: <file>: <reason>`;
the others are still classified, and the exit status is 1.
"""

import dataclasses
import json
import os
import sys

from absl import app
from absl import flags
from absl import logging
import numpy as np
from PIL import Image
from PIL import ImageOps

from resnet_jax import cli
from resnet_jax.data import datasets
from resnet_jax.read import inference
from resnet_jax.read import report

FLAGS = flags.FLAGS


class ImageError(ValueError):
  """A file that cannot be classified; the message says why, in a few words."""


def read_image(path: str, image_shape, resize: bool = False) -> np.ndarray:
  """The image at `path` as uint8 (H, W, C) of `image_shape` (see module doc).

  Raises:
    ImageError: missing, unreadable, not a regular file, not an image, of
      pixels with no exact 8-bit RGB form, or of another size without
      `resize`.
  """
  height, width, channels = image_shape
  try:  # Only a regular file: a FIFO or /dev/zero would be read forever.
    data = datasets.read_regular_file(path)
  except FileNotFoundError:
    raise ImageError('no such file') from None
  except OSError as e:
    raise ImageError(e.strerror or str(e)) from None
  pixels = datasets.decode(data, formats=None)
  if isinstance(pixels, str):
    raise ImageError(pixels if pixels.startswith(('not an image',
                                                  'pixels of mode')) else
                     f'cannot read the image ({pixels})')
  if channels != pixels.shape[-1]:
    raise ImageError(f'has {pixels.shape[-1]} channels, the model takes '
                     f'{channels}')
  image = Image.fromarray(pixels)
  if image.size != (width, height):
    if not resize:
      raise ImageError(
          f'is {image.width}x{image.height} pixels, the model takes '
          f'{width}x{height}; pass --resize to scale and centre-crop it')
    image = ImageOps.fit(image, (width, height),
                         method=Image.Resampling.BICUBIC)
  return np.asarray(image, np.uint8).reshape(height, width, channels)


@dataclasses.dataclass
class Prediction:
  """One file's result: the top classes, or why it has none."""
  file: str
  top_k: list[dict] | None = None  # {'class', 'index', 'probability'}
  error: str | None = None

  def to_json(self) -> dict:
    return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


def predict_files(loaded, paths, *, top_k: int = 3,
                  resize: bool = False) -> list[Prediction]:
  """Classifies each file of `paths` with `loaded` (inference.load's result)."""
  if top_k < 1:
    raise ValueError(f'--top_k must be >= 1, got {top_k}')
  names = report.display_names(loaded.class_names, loaded.num_classes)
  results, images = [], []
  for path in paths:
    try:
      images.append(read_image(path, loaded.image_shape, resize))
      results.append(Prediction(path))
    except ImageError as e:
      results.append(Prediction(path, error=str(e)))
  if images:
    # One batch size, a power of two, so a few files compile once.
    batch_size = 1 << (min(len(images), 256) - 1).bit_length()
    probabilities = report.softmax(
        loaded.logits(np.stack(images), batch_size=batch_size))
    k = min(top_k, loaded.num_classes)
    ok = [r for r in results if r.error is None]
    for result, probs in zip(ok, probabilities, strict=True):
      best = np.argsort(-probs, kind='stable')[:k]
      result.top_k = [{'class': names[i], 'index': int(i),
                       'probability': float(probs[i])} for i in best]
  return results


def format_table(results: list[Prediction]) -> str:
  """Per file: its name, then one line per class with its probability."""
  lines = []
  for result in results:
    if result.error is not None:
      continue
    lines.append(result.file)
    width = max(len(p['class']) for p in result.top_k)
    for rank, p in enumerate(result.top_k, 1):
      lines.append(f'  {rank}. {p["class"]:<{width}}  '
                   f'{p["probability"]:7.2%}')
  return '\n'.join(lines)


def main(argv):
  paths = argv[1:]
  if not paths:
    raise app.UsageError('give one or more image files to classify')
  if FLAGS.top_k < 1:
    raise app.UsageError(f'--top_k must be >= 1, got {FLAGS.top_k}')
  cli.quiet_start(logging.WARNING)
  loaded = inference.load(**cli.selection_from_flags())
  results = predict_files(loaded, paths, top_k=FLAGS.top_k,
                          resize=FLAGS.resize)
  for result in results:
    if result.error is not None:
      print(f'error: {result.file}: {result.error}', file=sys.stderr)
  if FLAGS.json:
    print(json.dumps({
        'workdir': os.path.abspath(FLAGS.workdir),
        'checkpoint_step': loaded.step,
        **loaded.selection,
        'predictions': [r.to_json() for r in results],
    }, indent=2))
  else:
    table = format_table(results)
    if table:
      print(table)
  if any(r.error is not None for r in results):
    sys.exit(1)


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  cli.define_selection_flags()
  flags.DEFINE_integer('top_k', 3, 'How many of the most probable classes '
                       'to show per image.')
  flags.DEFINE_bool('json', False, 'Print one JSON document instead of tables.')
  flags.DEFINE_bool('resize', False, 'Scale images of another size to cover '
                    "the model's and crop the centre, instead of refusing "
                    'them.')


if __name__ == '__main__':
  define_flags()
  cli.start(main)
