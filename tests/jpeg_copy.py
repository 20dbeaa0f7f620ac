"""The JPEG copy of CIFAR-10's training split in ../shared, for tests.

CI sets RESNET_JAX_REQUIRE_REAL_DATA=1, so that a test needing it fails
rather than skips when it is missing.
"""

import os
import pathlib
import zipfile

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
TRAIN_ZIP = REPO.parent / 'shared' / 'data' / 'cifar10-jpeg75' / 'train.zip'


def image_folder(destination, per_class: int) -> pathlib.Path:
  """The first `per_class` images of each class, extracted as a folder."""
  if not TRAIN_ZIP.exists():
    if os.environ.get('RESNET_JAX_REQUIRE_REAL_DATA') == '1':
      pytest.fail(f'{TRAIN_ZIP} is missing and RESNET_JAX_REQUIRE_REAL_DATA=1')
    pytest.skip(f'skipped: {TRAIN_ZIP} not found')
  taken = {}
  with zipfile.ZipFile(TRAIN_ZIP) as archive:
    for name in sorted(archive.namelist()):
      parts = name.split('/')
      if len(parts) == 3 and parts[2].endswith('.jpg'):
        if taken.setdefault(parts[1], 0) < per_class:
          taken[parts[1]] += 1
          archive.extract(name, destination)
  return pathlib.Path(destination)
