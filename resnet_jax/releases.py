"""Released models: making them (`release`) and finding them (`path`).

A release (experiments/release.py is the command line; pretrained/<name>/) is
a directory of three files:

- weights.msgpack: one run's {'params', 'batch_stats'}, in Flax's msgpack
  format (`flax.serialization.msgpack_restore` reads it without this package);
- release.json: what they are: step, seed, class names, image shape, the
  normalisation, the weights' size and sha256, the recorded accuracy and the
  CPU check that tests/test_pretrained.py repeats;
- config.json: the run's config (num_runs=1), as in any workdir.

The committed releases also keep a README.md for people, written by hand.
inference.load reads a release as it reads a workdir, refusing weights whose
sha256 is not the one recorded.
"""

import hashlib
import json
import os
import pathlib
import shutil

import flax.serialization
import jax
import numpy as np

from resnet_jax import checkpoints
from resnet_jax import datasets
from resnet_jax import evaluate
from resnet_jax import inference
from resnet_jax import report
from resnet_jax import workdir as workdir_lib

# Where the repository keeps its releases.
PRETRAINED = pathlib.Path(__file__).resolve().parents[1] / 'pretrained'


def path(name: str) -> str:
  """A release's directory: `name` itself, or pretrained/<name>."""
  if inference.is_release(name):
    return name
  if os.sep not in name and inference.is_release(str(PRETRAINED / name)):
    return str(PRETRAINED / name)
  known = sorted(p.parent.name
                 for p in PRETRAINED.glob(f'*/{inference.RELEASE_FILE}'))
  raise ValueError(f'no release {name!r}: the releases are '
                   f'{", ".join(known) or "none"} (in {PRETRAINED}), or give '
                   'the path of a release directory')


def _write_record(out: str, record: dict) -> None:
  workdir_lib.write_file(os.path.join(out, inference.RELEASE_FILE),
                         json.dumps(record, indent=2) + '\n')


def _write_weights(out: str, variables: dict, record: dict) -> dict:
  """Writes `variables` (one run, no run axis) and release.json into `out`;
  returns `record` with the weights' file, size and sha256 added."""
  data = flax.serialization.msgpack_serialize(
      jax.tree.map(np.asarray, jax.device_get(variables)))
  workdir_lib.write_file(os.path.join(out, inference.WEIGHTS_FILE), data)
  record = record | {'weights': {
      'file': inference.WEIGHTS_FILE, 'bytes': len(data),
      'sha256': hashlib.sha256(data).hexdigest()}}
  _write_record(out, record)
  return record


def release(workdir: str, out: str, run: int = 0, checkpoint='latest',
            data_note: str = '', check_split: str = 'validation',
            data_dir: str | None = None, command: str = '') -> dict:
  """Writes run `run` of `workdir`'s checkpoint as a release into `out`.

  config.json holds the run alone (num_runs=1, its seed; a measured
  normalisation written in as constants, so that the release needs no data;
  `data_dir`, where the dataset is here). release.json records, besides, how
  many images of `check_split` (none when empty) this machine classifies
  correctly: the CPU check. `command` is recorded as what released it.
  Returns release.json's record.

  Raises:
    ValueError: `out` exists and is not empty; no such workdir, run or
      checkpoint. Nothing stays in `out` then.
  """
  if not out.strip():
    raise ValueError('--out is empty; name a new directory for the release')
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ValueError(f'--out={out} exists and is not empty; releases go to a '
                     'new directory')
  loaded = inference.load(workdir, checkpoint, run=run)  # Checks them.
  config = inference.read_config(workdir, data_dir)
  num_runs, config.num_runs, config.seed = config.num_runs, 1, loaded.seed
  mean, std = ([float(x) for x in v] for v in (loaded.mean, loaded.std))
  if config.data.normalization == 'measured':  # Needs no training data.
    config.data.update({'normalization': 'constants', 'mean': mean,
                        'std': std})
  summary = report.read_summary(workdir)
  figures = summary['runs'][run] if summary.get('steps') == loaded.step else {}
  record = {
      'model': f'resnet{config.model.depth}', 'dataset': config.data.name,
      'data_note': data_note, 'step': loaded.step, 'seed': loaded.seed,
      'released_from': {'workdir': workdir, 'run': run, 'num_runs': num_runs,
                        'checkpoint': str(checkpoint), 'command': command},
      'class_names': loaded.class_names and list(loaded.class_names),
      'image_shape': list(loaded.image_shape),
      # What inference normalises with, as a checkpoint records it.
      checkpoints.RECORDED: {'normalization': {'mean': mean, 'std': std}},
      'num_params': sum(x.size for x in jax.tree.leaves(
          loaded.variables['params'])),
      # The training data's fingerprint: readers refuse a changed folder.
      'training': {'train_data': loaded.train_data},
      'validation': {'accuracy': figures['final_val_accuracy'],
                     'loss': figures['final_val_loss'],
                     'examples': summary['eval_examples']}
                    if 'final_val_accuracy' in figures else None}
  created = not os.path.exists(out)
  try:
    os.makedirs(out, exist_ok=True)
    workdir_lib.write_json(os.path.join(out, inference.CONFIG_FILE),
                           json.loads(config.to_json_best_effort()))
    # Loadable first, for the check; then its record again, with the check.
    record = _write_weights(out, loaded.variables, record)
    record['cpu_check'] = (count_correct(out, check_split) if check_split
                           else None)
    _write_record(out, record)
    return record
  except BaseException:
    # `out` was empty: all in it is this release's, half written.
    shutil.rmtree(out, ignore_errors=True)
    if not created:
      os.makedirs(out, exist_ok=True)
    raise


def count_correct(workdir: str, split: str) -> dict:
  """How many images of `split` run 0 of `workdir` classifies correctly.

  On this machine's default devices: {'correct', 'examples', 'split' (as
  loaded), 'device', 'jax'}.
  """
  loaded = inference.load(workdir)
  tfds_split = evaluate.resolve_split(loaded.config, split)
  ds = datasets.load_split(loaded.config.data, tfds_split)
  # Refuses training data changed since the run (a reshuffled folder).
  inference.examples_trained_on(loaded, ds)
  logits = loaded.logits(ds.images, batch_size=loaded.config.eval_batch_size)
  return {'correct': int((logits.argmax(-1) == ds.labels).sum()),
          'examples': len(ds.labels), 'split': tfds_split,
          'device': jax.devices()[0].device_kind, 'jax': jax.__version__}
