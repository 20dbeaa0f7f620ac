"""Released models: one run's weights in one file, checked by its sha256.

A release (experiments/release.py writes them into pretrained/<name>/) is a
directory of four files:

- weights.msgpack: one run's {'params', 'batch_stats'}, in Flax's msgpack
  format (`flax.serialization.msgpack_restore` reads it without this package);
- release.json: what they are: step, seed, class names, image shape, the
  normalisation, the weights' size and sha256, the recorded accuracy and the
  CPU check that tests/test_pretrained.py repeats;
- config.json: the run's config (num_runs=1), as in any workdir;
- README.md: the same for people.

inference.load, and so evaluate and predict, load a release as they load a
workdir; its weights are refused unless their sha256 is the one recorded.
"""

import hashlib
import json
import os
import pathlib

import flax.serialization
import jax
import numpy as np

RELEASE_FILE = 'release.json'
WEIGHTS_FILE = 'weights.msgpack'
# Where the repository keeps its releases.
PRETRAINED = pathlib.Path(__file__).resolve().parents[1] / 'pretrained'


def sha256(data: bytes) -> str:
  return hashlib.sha256(data).hexdigest()


def is_release(workdir: str) -> bool:
  return os.path.isfile(os.path.join(workdir, RELEASE_FILE))


def path(name: str) -> str:
  """A release's directory: `name` itself, or pretrained/<name>."""
  if is_release(name):
    return name
  if os.sep not in name and is_release(str(PRETRAINED / name)):
    return str(PRETRAINED / name)
  known = sorted(p.parent.name for p in PRETRAINED.glob(f'*/{RELEASE_FILE}'))
  raise ValueError(f'no release {name!r}: the releases are '
                   f'{", ".join(known) or "none"} (in {PRETRAINED}), or give '
                   'the path of a release directory')


def write(out: str, variables: dict, record: dict) -> dict:
  """Writes `variables` (one run, no run axis) and release.json into `out`.

  Returns `record` with the weights' file, size and sha256 added.
  """
  data = flax.serialization.msgpack_serialize(
      jax.tree.map(np.asarray, jax.device_get(variables)))
  with open(os.path.join(out, WEIGHTS_FILE), 'wb') as f:
    f.write(data)
  record = record | {'weights': {'file': WEIGHTS_FILE, 'bytes': len(data),
                                 'sha256': sha256(data)}}
  with open(os.path.join(out, RELEASE_FILE), 'w') as f:
    json.dump(record, f, indent=2)
    f.write('\n')
  return record


def read(workdir: str) -> tuple[dict, dict]:
  """(variables with a run axis of size 1, release.json's record).

  Raises:
    ValueError: release.json unreadable, the weights missing, or their
      sha256 not the recorded one.
  """
  record_path = os.path.join(workdir, RELEASE_FILE)
  try:
    with open(record_path) as f:
      record = json.load(f)
    expected = record['weights']['sha256']
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{record_path} is not a release record: {e}') from None
  weights_path = os.path.join(workdir, WEIGHTS_FILE)
  try:
    with open(weights_path, 'rb') as f:
      data = f.read()
  except OSError as e:
    raise ValueError(f'cannot read the weights of the release {workdir}: '
                     f'{e.strerror}: {weights_path}') from None
  if sha256(data) != expected:
    raise ValueError(f'{weights_path} has sha256 {sha256(data)}, not the '
                     f'{expected} that {RELEASE_FILE} records: the weights '
                     'were changed or damaged; take the release again')
  variables = flax.serialization.msgpack_restore(data)
  return jax.tree.map(lambda x: np.asarray(x)[None], variables), record


def check_shapes(variables: dict, expected: dict, workdir: str) -> None:
  """Raises ValueError unless `variables` has `expected`'s tree and shapes."""
  def shapes(tree):
    return {jax.tree_util.keystr(p): tuple(x.shape)
            for p, x in jax.tree_util.tree_leaves_with_path(tree)}
  got, want = shapes(variables), shapes(expected)
  if got != want:
    differ = sorted(set(got.items()) ^ set(want.items()))[:3]
    raise ValueError(f'the weights of {workdir} are not of the model its '
                     f'config.json describes (first differences: {differ})')
