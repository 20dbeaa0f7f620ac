"""Released models: making them (`release`; experiments/release.py is the
command line). release_format holds their files' format, and finds and
reads them; inference.load loads them.

A release can be released again (`release` of a release: a new format, the
current data fingerprint), keeping its step, seed and recorded accuracy.
"""

import os
import shutil
import uuid

import jax

from resnet_jax import utils
from resnet_jax.data import datasets
from resnet_jax.read import inference
from resnet_jax.read import release_format
from resnet_jax.run import workdir as workdir_lib


def _checked_out(out: str) -> tuple[str, str]:
  """(--out with ~ expanded, its nearest existing ancestor), or ValueError
  if a release cannot be written there. Nothing is written."""
  if not out.strip():
    raise ValueError('--out is empty; name a new directory for the release')
  out = utils.expand_path(out)
  if os.path.islink(out):
    raise ValueError(f'--out={out} is a symbolic link; name a new directory')
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ValueError(f'--out={out} exists and is not empty; releases go to a '
                     'new directory')
  ancestor = os.path.dirname(os.path.abspath(out))
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise ValueError(f'--out={out}: {ancestor} is not a directory')
  if not os.access(ancestor, os.W_OK | os.X_OK):
    raise ValueError(f'--out={out}: {ancestor} is not writable')
  return out, ancestor


def release(workdir: str, out: str, run: int = 0, checkpoint='latest',
            data_note: str = '', check_split: str = 'validation',
            data_dir: str | None = None, command: str = '') -> dict:
  """Writes run `run` of `workdir`'s checkpoint (or a release) as a release
  into `out`.

  config.json holds the run alone (num_runs=1, its seed; a measured
  normalisation written in as constants, so that the release needs no data;
  `data_dir`, where the dataset is here). release.json records, besides, how
  many images of `check_split` (none when empty) this machine classifies
  correctly: the CPU check, and, the data being at hand then, its current
  fingerprint (checked to be the data the run trained on). Of a release: its
  step, seed, accuracy and provenance are kept. `command` is recorded as
  what released it. Returns release.json's record.

  Everything is checked, then written into a temporary directory beside
  `out`, renamed to `out` when complete (Orbax commits its checkpoints so).

  Raises:
    ValueError: `out` exists and is not empty, is a symbolic link or cannot
      be written; no such workdir, run or checkpoint; a write failed.
      Nothing stays in `out` then.
  """
  out, ancestor = _checked_out(out)
  workdir = utils.expand_path(workdir)
  loaded = inference.load(workdir, checkpoint, run=run, data_dir=data_dir)
  config = loaded.config.copy_and_resolve_references()
  num_runs, config.num_runs, config.seed = config.num_runs, 1, loaded.seed
  if config.data.normalization == 'measured':  # Needs no training data.
    config.data.update({'normalization': 'constants',
                        **loaded.recorded()[datasets.RECORDED]['normalization']})
  # Of a release, its record: released again as first released.
  earlier = (release_format.read_record(workdir)
             if release_format.is_release(workdir) else None)
  validation = workdir_lib.final_validation(workdir, run, loaded.step)
  train_data = loaded.train_data
  if check_split:  # The data is needed: its fingerprint as computed now.
    train_ds = datasets.load_split(config.data, config.data.train_split)
    inference._check_train_data(  # pylint: disable=protected-access
        train_data, train_ds, 'The release would describe other data')
    train_data = train_ds.source
  partial = None
  created = []  # Missing parents of `out`, made here.
  try:
    parent = os.path.dirname(os.path.abspath(out))
    for directory in reversed([
        d for d in _parents(parent) if d.startswith(ancestor + os.sep)]):
      if not os.path.isdir(directory):
        os.mkdir(directory)
        created.append(directory)
    partial = os.path.join(
        parent, f'.{os.path.basename(out)}.{uuid.uuid4().hex[:8]}.partial')
    os.mkdir(partial)
    # Loadable first, for the check; then its record again, with the check.
    record = release_format.write(
        partial, loaded, config, earlier=earlier, data_note=data_note,
        train_data=train_data, released_from={
            'workdir': workdir, 'run': run, 'num_runs': num_runs,
            'checkpoint': str(checkpoint), 'command': command},
        validation=validation)
    record = release_format.write_check(partial, record, count_correct(
        partial, check_split) if check_split else None)
    os.replace(partial, out)  # `out` is absent or an empty directory.
    partial = created = None
    return record
  except OSError as e:
    raise ValueError(f'cannot write the release into {out}: '
                     f'{e.strerror or e}') from None
  finally:
    if partial:  # Failed: nothing of it stays.
      shutil.rmtree(partial, ignore_errors=True)
    for directory in reversed(created or []):
      shutil.rmtree(directory, ignore_errors=True)


def _parents(directory: str) -> list[str]:
  """`directory` and its ancestors, nearest first."""
  found = [directory]
  while os.path.dirname(found[-1]) != found[-1]:
    found.append(os.path.dirname(found[-1]))
  return found


def count_correct(workdir: str, split: str) -> dict:
  """How many images of `split` run 0 of `workdir` classifies correctly.

  On this machine's default devices: {'correct', 'examples', 'split' (as
  loaded), 'device', 'jax'}.
  """
  loaded = inference.load(workdir)
  tfds_split = inference.resolve_split(loaded.config, split)
  # Refuses training data changed since the run (a reshuffled folder).
  _, summary, _, _ = inference.evaluate_split(loaded, tfds_split)
  return {'correct': sum(c['correct'] for c in summary['per_class']),
          'examples': summary['num_examples'], 'split': tfds_split,
          'device': jax.devices()[0].device_kind, 'jax': jax.__version__}
