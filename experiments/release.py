"""Releases one run of a workdir as a small workdir of its own.

  python -m experiments.release --workdir=runs/resnet20 --run=0 \
      --checkpoint=latest --out=pretrained/resnet20 [--data_note='...']

writes into --out (absent or empty) the files of resnet_jax/releases.py:
config.json (the released run alone: num_runs=1, its seed; a normalisation
measured on the training split written in as constants, so that the release
needs no data; --data_dir, where the dataset is here), weights.msgpack,
release.json (with the CPU check: how many images of --check_split this
machine classifies correctly, the count tests/test_pretrained.py requires)
and a README.md for people: model, data, recipe, accuracy, the commands that
trained and released it, every other file's sha256. `evaluate` and `predict`
load it as any workdir. Refused with one line `error: ...` when --out is not
empty or the run or checkpoint does not exist.
"""

import json
import os
import pathlib
import shlex
import shutil
import sys

from absl import flags
from absl import logging
import jax

from experiments import reproduce_table6
from resnet_jax import checkpoints
from resnet_jax import datasets
from resnet_jax import evaluate
from resnet_jax import inference
from resnet_jax import releases
from resnet_jax import report
from resnet_jax import tools
from resnet_jax import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
README = 'README.md'
FLAGS = flags.FLAGS


def file_hashes(out: str) -> dict[str, tuple[int, str]]:
  """{relative path: (bytes, sha256)} of every file under `out` but README."""
  root = pathlib.Path(out)
  return {p.relative_to(root).as_posix(): (p.stat().st_size,
                                           releases.sha256(p.read_bytes()))
          for p in sorted(root.rglob('*'))
          if p.is_file() and p.relative_to(root).as_posix() != README}


def training_command(config: dict, config_name: str | None,
                     workdir: str) -> str | None:
  """The trainer command that gives `config`, or None where unknown.

  config.json does not record the command: it is the config file that
  summary.json names, plus an override for every field that differs.
  """
  if not config_name or not (REPO / 'configs' / f'{config_name}.py').is_file():
    return None
  base = tools.flatten(reproduce_table6.config_json(config_name, {}))
  return shlex.join(reproduce_table6.trainer_command(config_name, workdir, {
      k: v for k, v in tools.flatten(config).items()
      if base.get(k, ()) != v}))


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


def check_line(split: str, check: dict | None) -> str:
  """The README's record of the CPU check."""
  if check is None:
    return 'CPU check: not made (--check_split was empty).'
  return (f'CPU check: {check["correct"]:,} of {check["examples"]:,} images '
          f'of `{split}` (`{check["split"]}`) classified correctly '
          f'({check["correct"] / check["examples"]:.2%}) on '
          f'{check["device"]}, JAX {check["jax"]}: tests/test_pretrained.py '
          'requires this count exactly.')


def _recipe(config, summary: dict) -> str:
  opt, sched, data = config.optimizer, config.schedule, config.data
  if summary:
    length = f'{summary["steps"]:,} steps ({summary["epochs"]:g} epochs)'
  elif config.num_epochs > 0:
    length = f'{config.num_epochs:g} epochs'
  else:
    length = f'{config.num_train_steps:,} steps'
  schedule = (f'learning-rate schedule `{sched.name}`, base rate '
              f'{sched.base_learning_rate} at batch '
              f'{sched.reference_batch_size} (scaled linearly with the batch)')
  if sched.name == 'paper':
    schedule += (f', multiplied by {sched.decay_factor} at '
                 f'{list(sched.decay_fractions)} of training')
  if sched.warmup_steps:
    schedule += f', {sched.warmup_steps} warm-up steps'
  return (f'SGD, momentum {opt.momentum}{" (Nesterov)" * opt.nesterov}, '
          f'weight decay {opt.weight_decay} ({opt.weight_decay_mode}, on '
          f'{opt.weight_decay_on}); batch {config.batch_size}; {schedule}; '
          f'{length}; label smoothing {config.label_smoothing}; random crops '
          f'(padding {data.crop_padding})'
          f'{" and horizontal flips" * data.random_flip}; batch-norm momentum '
          f'{config.model.bn_momentum}; {config.model.dtype}. Every setting: '
          'config.json.')


def _accuracy(summary: dict, run: int, step: int) -> str:
  if not summary:
    return ('not known: the workdir has no summary.json (its training did '
            'not finish); measure it with resnet_jax.evaluate')
  if summary['steps'] != step:
    return (f"not known for this checkpoint: the workdir's summary.json "
            f'holds those of the final step {summary["steps"]:,}; measure it '
            'with resnet_jax.evaluate')
  figures = summary['runs'][run]
  text = (f'{figures["final_val_accuracy"]:.2%} (loss '
          f'{figures["final_val_loss"]:.4f}) on the '
          f'{summary["eval_examples"]:,} validation images'
          if 'final_val_accuracy' in figures else 'no validation split')
  if 'test_accuracy' in figures:
    text += (f'; test accuracy {figures["test_accuracy"]:.2%} on '
             f'{summary["test_examples"]:,} images')
  return text + f" (the workdir's summary.json, runs[{run}])"


def readme(config, record: dict, summary: dict, out: str,
           trained_by: str | None, released_by: str, check_split: str) -> str:
  """README.md of the release in `out`: release.json's record in words."""
  model, data, source = config.model, config.data, record['released_from']
  run, seed, note = source['run'], record['seed'], record['data_note']
  name, train_data = f'ResNet-{model.depth}', record['training']['train_data']
  norm = record[checkpoints.RECORDED]['normalization']
  path = pathlib.Path(out).resolve()  # As resnet_jax.pretrained takes it:
  short = path.name if path.parent == releases.PRETRAINED else out
  hashes = file_hashes(out)
  rows = {
      'Model': (
          f'{name}: {model.block} blocks, '
          f'{"pre-activation, " * model.preact}option-{model.shortcut} '
          f'shortcuts, width {model.width}, {model.num_classes} classes; '
          f'{record["num_params"]:,} parameters; takes uint8 images of '
          f'{"x".join(map(str, record["image_shape"]))}, normalised inside '
          f'with mean {[round(x, 4) for x in norm["mean"]]} '
          f'and std {[round(x, 4) for x in norm["std"]]}'),
      'Data': (
          f'`{data.name}`{f" ({train_data})" if train_data else ""}: trained '
          f'on `{data.train_split}`, validated on `{data.eval_split or "-"}`, '
          f'tested on `{data.test_split or "-"}`'
          + (f'. {note[:1].upper()}{note[1:]}' if note else '')),
      'Recipe': _recipe(config, summary),
      'Validation accuracy': _accuracy(summary, run, record['step']),
      'Trained by': (
          f'`{trained_by}`' if trained_by else
          "not known: summary.json names no config file of this repository; "
          'config.json holds every setting') + (
              f'; this is run {run} of its {source["num_runs"]} runs, seed '
              f'config.seed + {run} = {seed}' if source['num_runs'] > 1
              else ''),
      'Released by': f'`{released_by}`' if released_by else 'not recorded'}
  return '\n'.join([
      f'# {name} on {data.name}, seed {seed}', '',
      f'Run {run} (seed {seed}) of `{source["workdir"]}`, checkpoint step '
      f'{record["step"]:,} (`--checkpoint={source["checkpoint"]}`): its '
      'parameters and batch-norm statistics only, no optimizer state: for '
      'inference, not for resuming training.', '', '| | |', '| --- | --- |',
      *(f'| {k} | {v} |' for k, v in rows.items()), '',
      check_line(check_split, record['cpu_check']), '', 'Use:', '',
      f'    python -m resnet_jax.evaluate --workdir={out} --split='
      f'{"test" if data.test_split else "validation"}',
      f'    python -m resnet_jax.predict --workdir={out} image.png', '',
      'or in Python, on uint8 images (N, H, W, C):', '',
      '    import resnet_jax',
      f'    model = resnet_jax.pretrained({short!r})',
      '    model.predict(images)  # class names; also probabilities, logits',
      '', '## Files', '',
      f'{sum(size for size, _ in hashes.values()):,} bytes in all, '
      f'{README} aside.', '', '| file | bytes | sha256 |',
      '| --- | ---: | --- |',
      *(f'| `{path}` | {size:,} | `{digest}` |'
        for path, (size, digest) in hashes.items()), ''])


def release(workdir: str, out: str, run: int = 0, checkpoint='latest',
            data_note: str = '', released_by: str = '',
            check_split: str = 'validation',
            data_dir: str | None = None) -> dict:
  """Writes run `run` of `workdir`'s checkpoint into `out` (module doc).

  Returns release.json's record.

  Raises:
    ValueError: `out` is not empty; no such workdir, run or checkpoint.
  """
  if not out.strip():
    raise ValueError('--out is empty; name a new directory for the release')
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ValueError(f'--out={out} exists and is not empty; releases go to a '
                     'new directory')
  loaded = inference.load(workdir, checkpoint, run=run)  # Checks them.
  config = inference.read_config(workdir)
  num_runs, config.num_runs, config.seed = config.num_runs, 1, loaded.seed
  if data_dir:
    config.data.data_dir = data_dir
  if config.data.normalization == 'measured':
    # The release must not need the training split to be used.
    config.data.normalization = 'constants'
    config.data.mean = [float(x) for x in loaded.mean]
    config.data.std = [float(x) for x in loaded.std]
  summary = report.read_summary(workdir)
  figures = summary['runs'][run] if summary.get('steps') == loaded.step else {}
  record = {
      'model': f'resnet{config.model.depth}', 'dataset': config.data.name,
      'data_note': data_note, 'step': loaded.step, 'seed': loaded.seed,
      'released_from': {'workdir': workdir, 'run': run, 'num_runs': num_runs,
                        'checkpoint': str(checkpoint)},
      'class_names': (None if loaded.class_names is None
                      else list(loaded.class_names)),
      'image_shape': list(loaded.image_shape),
      # What inference normalises with, as a checkpoint records it.
      checkpoints.RECORDED: {'normalization': {
          'mean': [float(x) for x in loaded.mean],
          'std': [float(x) for x in loaded.std]}},
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
    workdir_lib.write_json(pathlib.Path(out) / inference.CONFIG_FILE,
                           json.loads(config.to_json_best_effort()))
    record = releases.write(out, loaded.variables, record)  # For the check.
    record = releases.write(out, loaded.variables, record | {
        'cpu_check': count_correct(out, check_split) if check_split else None})
    original = json.loads((pathlib.Path(workdir) / inference.CONFIG_FILE
                           ).read_text())
    (pathlib.Path(out) / README).write_text(readme(
        config, record, summary, out, training_command(
            original, summary.get('config'), workdir), released_by,
        check_split))
  except BaseException:
    # `out` was empty: all in it is this release's, half written.
    shutil.rmtree(out, ignore_errors=True)
    if not created:
      os.makedirs(out, exist_ok=True)
    raise
  return record


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  tools.quiet_start(logging.WARNING)
  record = release(**inference.selection_from_flags(), out=FLAGS.out,
                   data_note=FLAGS.data_note,
                   check_split=FLAGS.check_split, data_dir=FLAGS.data_dir,
                   released_by=shlex.join(['python', '-m',
                                           'experiments.release',
                                           *sys.argv[1:]]))
  files = file_hashes(FLAGS.out)
  size = sum(size for size, _ in files.values())
  print(f'released run {FLAGS.run} (seed {record["seed"]}), step '
        f'{record["step"]}, of {FLAGS.workdir} into {FLAGS.out}: '
        f'{len(files)} files, {size / 1e6:.2f} MB, and {README}')
  if record['cpu_check']:
    print(check_line(FLAGS.check_split, record['cpu_check']))


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  inference.define_selection_flags(ensemble=False)
  flags.DEFINE_string('out', None, 'A new (or empty) directory, e.g. '
                      'pretrained/resnet20.')
  flags.DEFINE_string('data_note', '', "A sentence on the data for the "
                      "README, e.g. 'the JPEG copy of CIFAR-10'.")
  flags.DEFINE_string('check_split', 'validation', "The split the README's "
                      "CPU check classifies ('validation', 'test' or TFDS "
                      'syntax); empty: no check.')
  flags.DEFINE_string('data_dir', None, "Where the run's dataset is here; "
                      "written into the release's config.json.")
  flags.mark_flag_as_required('out')


if __name__ == '__main__':
  define_flags()
  tools.run(main)
