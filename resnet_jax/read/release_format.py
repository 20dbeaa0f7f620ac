"""A release's files, the one home of their format: names, fields, writing,
and reading with every check (releases.py makes releases, inference.load
loads them).

A release is a directory of three files:

- weights.safetensors: one run's {'params', 'batch_stats'} under flat names
  ('params/stem_conv/kernel'), readable without this package (safetensors'
  numpy, Flax or PyTorch loaders); releases made before hold Flax msgpack
  (weights.msgpack, still read);
- release.json: what they are: step, seed, class names, image shape, the
  normalisation, the weights' size and sha256, the sha256 of config.json and
  of its own fields that change a prediction ('sha256'), the recorded
  accuracy and the CPU check that tests/test_pretrained.py repeats;
- config.json: the run's config (num_runs=1), as in any workdir.

The committed releases also keep a README.md for people, written by hand.
A reader refuses any part that changes a prediction and is not as released.
"""

import hashlib
import json
import os
import pathlib

import flax.serialization
import jax
import numpy as np

from resnet_jax import utils
from resnet_jax.run import workdir as workdir_lib

RECORD_FILE = workdir_lib.RELEASE_FILE  # release.json: see workdir.py.
WEIGHTS_FILE = 'weights.safetensors'
MSGPACK_WEIGHTS_FILE = 'weights.msgpack'
CONFIG_FILE = 'config.json'  # A workdir's config (config_checks.read_config).
# release.json's fields that change what a release predicts; with config.json
# and the weights, each is checked against the sha256 release.json records.
PREDICTION_FIELDS = ('class_names', 'image_shape', 'recorded')
# The shipped releases: package data, so that an installed package has them.
PRETRAINED = pathlib.Path(__file__).resolve().parents[1] / 'pretrained'


def is_release(directory: str) -> bool:
  return os.path.isfile(os.path.join(directory, RECORD_FILE))


def path(name: str | os.PathLike) -> str:
  """A release's directory: a shipped release's name ('resnet20'), or a
  release's path (a path object, or a string with a slash: './resnet20').

  A name never means a directory of the working directory, so that a folder
  called resnet20 there cannot stand in for the shipped release.
  """
  if isinstance(name, os.PathLike) or '/' in name or os.sep in name or (
      name in ('.', '..', '~')):
    directory = utils.expand_path(os.fspath(name))
    if not is_release(directory):
      raise ValueError(f'{directory} is not a release: it has no '
                       f'{RECORD_FILE}')
    return directory
  shipped = sorted(p.parent.name for p in PRETRAINED.glob(f'*/{RECORD_FILE}'))
  if name in shipped:
    return str(PRETRAINED / name)
  raise ValueError(f'no release {name!r}: the shipped releases are '
                   f'{", ".join(shipped) or "none"}; give the path of '
                   f'another release with a slash (./{name})')


def _promises(directory: str, record: dict) -> dict:
  """What release.json's 'sha256' records: the sha256 of config.json's bytes
  and of each of PREDICTION_FIELDS as canonical JSON (sorted keys, no
  spaces; absent ones as None)."""
  parts = {CONFIG_FILE: pathlib.Path(directory, CONFIG_FILE).read_bytes()} | {
      name: json.dumps(record.get(name), sort_keys=True,
                       separators=(',', ':')).encode()
      for name in PREDICTION_FIELDS}
  return {part: hashlib.sha256(data).hexdigest()
          for part, data in parts.items()}


def _write_record(out: str, record: dict) -> None:
  pathlib.Path(out, RECORD_FILE).write_text(json.dumps(record, indent=2) + '\n')


def write(out: str, loaded, config, *, earlier: dict | None, data_note: str,
          train_data: str | None, released_from: dict,
          validation: dict | None) -> dict:
  """Writes `loaded` (an inference.Loaded run) as a release into `out`, a new
  directory that the caller renames into place when complete: config.json
  (`config`), the run's weights and release.json; returns release.json's
  record. Of a release (`earlier` its record), its data note, provenance and
  accuracy are kept. OSError if a write fails."""
  import safetensors.numpy  # pylint: disable=g-import-not-at-top
  if earlier is not None:
    validation = earlier.get('validation')
    released_from = earlier.get('released_from', {}) | {
        'released_again': released_from}
    data_note = data_note or earlier.get('data_note', '')
  pathlib.Path(out, CONFIG_FILE).write_text(json.dumps(
      json.loads(config.to_json_best_effort()), indent=2))
  data = safetensors.numpy.save(
      {'/'.join(str(k.key) for k in keys): np.asarray(x) for keys, x in
       jax.tree_util.tree_leaves_with_path(jax.device_get(loaded.variables))})
  pathlib.Path(out, WEIGHTS_FILE).write_bytes(data)
  record = {
      'model': f'resnet{config.model.depth}', 'dataset': config.data.name,
      'data_note': data_note, 'step': loaded.step, 'seed': loaded.seed,
      'released_from': released_from,
      'class_names': loaded.class_names and list(loaded.class_names),
      'image_shape': list(loaded.image_shape),
      # What inference normalises with, as a checkpoint records it.
      **loaded.recorded(),
      'num_params': sum(x.size for x in jax.tree.leaves(
          loaded.variables['params'])),
      # The training data's fingerprint: readers refuse a changed folder.
      'training': {'train_data': train_data},
      'validation': validation,
      'weights': {'file': WEIGHTS_FILE, 'bytes': len(data),
                  'sha256': hashlib.sha256(data).hexdigest()}}
  # Each part hashed on its own, so that a reader names the part changed:
  # config.json by its bytes (any field of it), release.json's prediction
  # fields by their canonical JSON (the rest of release.json, such as the
  # CPU check, is a report, written again by `write_check`).
  record['sha256'] = _promises(out, record)
  _write_record(out, record)
  return record


def write_check(out: str, record: dict, cpu_check: dict | None) -> dict:
  """release.json again, with how many images of a split the written release
  classifies correctly here (None for none)."""
  _write_record(out, record := record | {'cpu_check': cpu_check})
  return record


def read_record(directory: str) -> dict:
  """`directory`'s release.json, naming its weights; else a one-line
  ValueError."""
  record_path = os.path.join(directory, RECORD_FILE)
  try:
    with open(record_path) as f:
      record = json.load(f)
    _ = record['weights']['sha256'], record['weights']['file']  # Both there.
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f'{record_path} is not a release record: '
                     f'{utils.one_line(e, named=True)}') from None
  return record


def _check_promises(directory: str, record: dict) -> None:
  """Raises ValueError naming the first part of the release (config.json or
  a prediction field of release.json) that is not as released."""
  record_path = os.path.join(directory, RECORD_FILE)
  recorded = record.get('sha256')
  if not isinstance(recorded, dict):
    raise ValueError(
        f'{record_path} records no sha256 of its config and prediction '
        'fields: it was changed; take the release again')
  try:
    found = _promises(directory, record)
  except OSError as e:
    raise ValueError(f'cannot read {e.filename}: {e.strerror}') from None
  for part, sha256 in found.items():
    if recorded.get(part) == sha256:
      continue
    if part == CONFIG_FILE:
      what = f'{os.path.join(directory, part)} changed'
    elif part not in record:
      what = f'{RECORD_FILE} of {directory} lost its {part!r}'
    else:
      what = f'the {part!r} of {record_path} changed'
    raise ValueError(f'{what} since the release (its sha256 is not the one '
                     f'{RECORD_FILE} records): it would change the '
                     'predictions; take the release again')


def read(directory: str) -> tuple[dict, dict] | None:
  """(one run's variables, release.json's record) of the release in
  `directory`, all that changes a prediction checked against the sha256s the
  record holds (config.json's bytes too, before anyone reads it); None where
  `directory` is no release. Any failure is a one-line ValueError."""
  record_path = os.path.join(directory, RECORD_FILE)
  if not is_release(directory):
    weights = [name for name in (WEIGHTS_FILE, MSGPACK_WEIGHTS_FILE)
               if os.path.exists(os.path.join(directory, name))]
    if weights:  # Trainers write no such file.
      raise ValueError(
          f"{record_path} is missing: {directory} holds a release's "
          f'{weights[0]} without the record that checks it; take the '
          'release again')
    return None
  record = read_record(directory)
  expected, name = record['weights']['sha256'], record['weights']['file']
  if name not in (WEIGHTS_FILE, MSGPACK_WEIGHTS_FILE):
    raise ValueError(f'{record_path} names weights {name!r}, not '
                     f'{WEIGHTS_FILE}: it was changed; take the release again')
  # Releases before safetensors recorded the weights' sha256 only; each part
  # they did not promise is checked where it is recorded.
  if name == WEIGHTS_FILE or 'sha256' in record:
    _check_promises(directory, record)
  weights_path = os.path.join(directory, name)
  try:
    data = pathlib.Path(weights_path).read_bytes()
  except OSError as e:
    raise ValueError(f'cannot read the weights of the release {directory}: '
                     f'{e.strerror}: {weights_path}') from None
  if (sha256 := hashlib.sha256(data).hexdigest()) != expected:
    raise ValueError(f'{weights_path} has sha256 {sha256}, not the '
                     f'{expected} that {RECORD_FILE} records: the weights '
                     'were changed or damaged; take the release again')
  if name == WEIGHTS_FILE:
    import safetensors.numpy  # pylint: disable=g-import-not-at-top
    variables = {}
    for flat_name, x in safetensors.numpy.load(data).items():
      *parents, leaf = flat_name.split('/')
      node = variables
      for key in parents:
        node = node.setdefault(key, {})
      node[leaf] = x
  else:
    variables = flax.serialization.msgpack_restore(data)
  for keys, x in jax.tree_util.tree_leaves_with_path(variables):
    if not np.isfinite(x).all():
      raise ValueError(
          f'{weights_path} holds NaN or infinite values (in '
          f'{jax.tree_util.keystr(keys)}), though its sha256 is the one '
          'recorded: the model that was released is broken')
  if isinstance(record.get('step'), bool) or not isinstance(
      record.get('step'), int):
    raise ValueError(f'{record_path} has no step (it has '
                     f'{record.get("step")!r}); take the release again')
  image_shape = record.get('image_shape')
  if (not isinstance(image_shape, list) or len(image_shape) != 3 or
      not all(isinstance(n, int) and n > 0 for n in image_shape)):
    raise ValueError(f'{record_path} has no image_shape [height, width, '
                     f'channels] (it has {image_shape!r}); take the release '
                     'again')
  return variables, record
