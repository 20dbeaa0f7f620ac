"""Releases the weights of one trained run as a small workdir of its own.

  python -m experiments.release --workdir=runs/resnet20 --run=0 \
      --checkpoint=latest --out=pretrained/resnet20 [--data_note='...']

writes into --out (absent or empty):

- config.json: the run's config, describing the released run alone:
  num_runs=1 and seed = the run's seed (config.seed + run). A run that
  measured its normalisation on the training split gets the measured mean
  and std written in as constants, so that the release needs no data.
- weights.msgpack and release.json (resnet_jax/releases.py): the run's
  parameters and batch-norm statistics in one file (no optimizer state), and
  what they are: step, seed, class names, normalisation, the weights'
  sha256, the run's validation accuracy (the workdir's summary.json) and the
  CPU check: how many images of --check_split (default the run's validation
  split; empty: none) the release classifies correctly on this machine, the
  exact count that tests/test_pretrained.py requires of every release in
  pretrained/.
- README.md: model, data, recipe, accuracy, the commands that trained and
  released it, the sha256 of every other file.

--data_dir, when given, is where the run's dataset is here; the released
config.json names it, so that `evaluate` finds it there.

`python -m resnet_jax.evaluate --workdir=<out>` and `resnet_jax.predict`
load it as they load any workdir (inference.load). Refused, with one line
`error: ...`, when --out is not empty, the run or checkpoint does not exist.
"""

import importlib
import json
import os
import pathlib
import shlex
import shutil
import sys

from absl import flags
from absl import logging
from etils import epath
import jax

from resnet_jax import checkpoints
from resnet_jax import datasets
from resnet_jax import evaluate
from resnet_jax import experiment
from resnet_jax import inference
from resnet_jax import releases
from resnet_jax import tools
from resnet_jax import workdir as workdir_lib

REPO = pathlib.Path(__file__).resolve().parents[1]
README = 'README.md'
FLAGS = flags.FLAGS


def sha256(path: pathlib.Path) -> str:
  return releases.sha256(pathlib.Path(path).read_bytes())


def file_hashes(out: str) -> dict[str, tuple[int, str]]:
  """{relative path: (bytes, sha256)} of every file under `out` but README."""
  root = pathlib.Path(out)
  return {path.relative_to(root).as_posix(): (path.stat().st_size,
                                              sha256(path))
          for path in sorted(root.rglob('*'))
          if path.is_file() and path.relative_to(root).as_posix() != README}


def training_command(config: dict, config_name: str | None,
                     workdir: str) -> str | None:
  """The trainer command that gives `config`, or None where unknown.

  config.json does not record the command: it is rebuilt from the config
  file summary.json names, plus an override for every field of config.json
  that differs from that file's.
  """
  if not config_name or not (REPO / 'configs' / f'{config_name}.py').is_file():
    return None
  base = importlib.import_module(f'configs.{config_name}').get_config()
  base = experiment.flatten(json.loads(base.to_json_best_effort()))
  # A --config.FIELD flag reads a non-string value back from its repr();
  # JSON turned the config's tuples into lists.
  show = lambda v: v if isinstance(v, str) else repr(
      tuple(v) if isinstance(v, list) else v)
  return shlex.join([
      'python', '-m', 'resnet_jax.main', f'--config=configs/{config_name}.py',
      f'--workdir={workdir}',
      *(f'--config.{k}={show(v)}' for k, v in experiment.flatten(
          config).items() if base.get(k, ()) != v)])


def _recipe(config, summary: dict | None) -> str:
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


def _accuracy(summary: dict | None, run: int, step: int) -> str:
  if summary is None:
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


def _validation(summary: dict | None, run: int, step: int) -> dict | None:
  """The run's final validation figures, if summary.json has this step's."""
  if summary is None or summary['steps'] != step:
    return None
  figures = summary['runs'][run]
  if 'final_val_accuracy' not in figures:
    return None
  return {'accuracy': figures['final_val_accuracy'],
          'loss': figures['final_val_loss'],
          'examples': summary['eval_examples']}


def count_correct(workdir: str, split: str,
                  data_dir: str | None = None) -> dict:
  """How many images of `split` run 0 of `workdir` classifies correctly.

  On this machine's default devices, with the dataset in `data_dir` or else
  where the workdir's config.json says: {'correct', 'examples', 'split' (as
  loaded), 'device', 'jax'}.
  """
  loaded = inference.load(workdir, data_dir=data_dir)
  tfds_split = evaluate.resolve_split(loaded.config, split)
  ds = datasets.load_split(loaded.config.data, tfds_split)
  # Refuses training data changed since the run (a reshuffled folder).
  inference.examples_trained_on(loaded, ds)
  summary, _ = evaluate.evaluate_images(
      loaded.apply, ds.images, ds.labels,
      batch_size=loaded.config.eval_batch_size)
  return {'correct': sum(c['correct'] for c in summary['per_class']),
          'examples': summary['num_examples'], 'split': tfds_split,
          'device': jax.devices()[0].device_kind, 'jax': jax.__version__}


def check_line(split: str, check: dict | None) -> str:
  """The README's record of the CPU check (parsed by the tests)."""
  if check is None:
    return 'CPU check: not made (--check_split was empty).'
  return (f'CPU check: {check["correct"]:,} of {check["examples"]:,} images '
          f'of `{split}` (`{check["split"]}`) classified correctly '
          f'({check["correct"] / check["examples"]:.2%}) on '
          f'{check["device"]}, JAX {check["jax"]}: tests/test_pretrained.py '
          'requires this count exactly.')


def _name(out: str) -> str:
  """What resnet_jax.pretrained takes for `out`: its name in pretrained/."""
  path = pathlib.Path(out).resolve()
  return path.name if path.parent == releases.PRETRAINED else out


def readme(*, config, loaded, run: int, workdir: str, checkpoint,
           num_params: int, train_data: str | None, data_note: str,
           summary: dict | None, trained_by: str | None, released_by: str,
           out: str, hashes: dict, check: str) -> str:
  model, data = config.model, config.data
  name = f'ResNet-{model.depth}'
  shape = 'x'.join(map(str, loaded.image_shape))
  rows = {
      'Model': (
          f'{name}: {model.block} blocks, '
          f'{"pre-activation, " * model.preact}option-{model.shortcut} '
          f'shortcuts, width {model.width}, {model.num_classes} classes; '
          f'{num_params:,} parameters; takes uint8 images of {shape}, '
          f'normalised inside with mean {[round(float(x), 4) for x in loaded.mean]} '
          f'and std {[round(float(x), 4) for x in loaded.std]}'),
      'Data': (
          f'`{data.name}`{f" ({train_data})" if train_data else ""}: trained '
          f'on `{data.train_split}`, validated on `{data.eval_split or "-"}`, '
          f'tested on `{data.test_split or "-"}`'
          + (f'. {data_note[:1].upper()}{data_note[1:]}' if data_note
             else '')),
      'Recipe': _recipe(config, summary),
      'Validation accuracy': _accuracy(summary, run, loaded.step),
      'Trained by': (
          f'`{trained_by}`' if trained_by else
          "not known: summary.json names no config file of this repository; "
          'config.json holds every setting') + (
              f'; this is run {run} of its {loaded.num_runs} runs, seed '
              f'config.seed + {run} = {loaded.seed}' if loaded.num_runs > 1
              else ''),
      'Released by': f'`{released_by}`',
  }
  lines = [
      f'# {name} on {data.name}, seed {loaded.seed}', '',
      f'Run {run} (seed {loaded.seed}) of `{workdir}`, checkpoint step '
      f'{loaded.step:,} (`--checkpoint={checkpoint}`): its parameters and '
      'batch-norm statistics only, no optimizer state: for inference, not '
      'for resuming training.', '', '| | |', '| --- | --- |',
      *(f'| {k} | {v} |' for k, v in rows.items()), '', check, '', 'Use:',
      '',
      f'    python -m resnet_jax.evaluate --workdir={out} --split='
      f'{"test" if data.test_split else "validation"}',
      f'    python -m resnet_jax.predict --workdir={out} image.png', '',
      'or in Python, on uint8 images (N, H, W, C):', '',
      '    import resnet_jax',
      f'    model = resnet_jax.pretrained({_name(out)!r})',
      '    model.predict(images)  # class names; also probabilities, logits',
      '',
      '## Files', '',
      f'{sum(size for size, _ in hashes.values()):,} bytes in all, '
      f'{README} aside.', '', '| file | bytes | sha256 |', '| --- | ---: | --- |',
      *(f'| `{path}` | {size:,} | `{digest}` |'
        for path, (size, digest) in hashes.items()), '']
  return '\n'.join(lines)


def release(workdir: str, out: str, run: int = 0, checkpoint='latest',
            data_note: str = '', released_by: str = '',
            check_split: str = 'validation',
            data_dir: str | None = None) -> dict:
  """Writes run `run` of `workdir`'s checkpoint into `out` (module doc).

  Returns {'step', 'seed', 'files': {path: (bytes, sha256)}, 'check':
  count_correct's dict or None}.

  Raises:
    ValueError: `out` is not empty; no such workdir, run or checkpoint.
  """
  if not out.strip():
    raise ValueError('--out is empty; name a new directory for the release')
  if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
    raise ValueError(f'--out={out} exists and is not empty; releases go to a '
                     'new directory')
  # Checks the run and the checkpoint, and restores it.
  loaded = inference.load(workdir, checkpoint, run=run)
  config = inference.read_config(workdir)
  num_runs = config.num_runs
  config.num_runs, config.seed = 1, loaded.seed
  if data_dir:
    config.data.data_dir = data_dir
  if config.data.normalization == 'measured':
    # The release must not need the training split to be used.
    config.data.normalization = 'constants'
    config.data.mean = [float(x) for x in loaded.mean]
    config.data.std = [float(x) for x in loaded.std]
  variables = jax.tree.map(lambda x: x[run], loaded.all_variables)
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
      'num_params': sum(x.size for x in jax.tree.leaves(variables['params']))}
  source = os.path.join(os.path.abspath(workdir), 'checkpoints')
  with checkpoints.Checkpointer(source, metadata={}, read_only=True) as reader:
    stored = reader.stored_metadata(loaded.step) or {}
  # The training data's fingerprint: readers refuse a changed folder.
  record['training'] = {'train_data': loaded.train_data}
  summary_path = epath.Path(workdir) / 'summary.json'
  summary = (json.loads(summary_path.read_text()) if summary_path.exists()
             else None)
  created = not os.path.exists(out)
  try:
    os.makedirs(out, exist_ok=True)
    workdir_lib.write_json(epath.Path(out) / inference.CONFIG_FILE,
                           json.loads(config.to_json_best_effort()))
    record |= {'validation': _validation(summary, run, loaded.step)}
    record = releases.write(out, variables, record)
    check = count_correct(out, check_split) if check_split else None
    record = releases.write(out, variables, record | {'cpu_check': check})
    hashes = file_hashes(out)
    original = json.loads((epath.Path(workdir) / inference.CONFIG_FILE
                           ).read_text())
    text = readme(
        config=config, loaded=loaded, run=run, workdir=workdir,
        checkpoint=checkpoint,
        num_params=record['num_params'],
        train_data=stored.get('training', {}).get('train_data'),
        data_note=data_note, summary=summary,
        trained_by=training_command(original, (summary or {}).get('config'),
                                    workdir),
        released_by=released_by or shlex.join([
            'python', '-m', 'experiments.release', f'--workdir={workdir}',
            f'--run={run}', f'--checkpoint={checkpoint}', f'--out={out}',
            *([f'--data_note={data_note}'] if data_note else []),
            *([f'--check_split={check_split}']
              if check_split != 'validation' else []),
            *([f'--data_dir={data_dir}'] if data_dir else [])]),
        out=out, hashes=hashes, check=check_line(check_split, check))
    (pathlib.Path(out) / README).write_text(text)
  except BaseException:
    # `out` was empty: all in it is this release's, half written.
    shutil.rmtree(out, ignore_errors=True)
    if not created:
      os.makedirs(out, exist_ok=True)
    raise
  return {'step': loaded.step, 'seed': loaded.seed, 'files': hashes,
          'check': check}


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  tools.quiet_start(logging.WARNING)
  result = release(FLAGS.workdir, FLAGS.out, run=FLAGS.run,
                   checkpoint=FLAGS.checkpoint, data_note=FLAGS.data_note,
                   check_split=FLAGS.check_split, data_dir=FLAGS.data_dir,
                   released_by=shlex.join(['python', '-m',
                                           'experiments.release', *sys.argv[1:]]))
  size = sum(size for size, _ in result['files'].values())
  print(f'released run {FLAGS.run} (seed {result["seed"]}), step '
        f'{result["step"]}, of {FLAGS.workdir} into {FLAGS.out}: '
        f'{len(result["files"])} files, {size / 1e6:.2f} MB, and {README}')
  if result['check']:
    print(check_line(FLAGS.check_split, result['check']))


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  flags.DEFINE_string('workdir', None, 'A run directory of resnet_jax.main.')
  flags.DEFINE_integer('run', 0, "Which of the workdir's runs (seed "
                       'config.seed + run).')
  flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step.")
  flags.DEFINE_string('out', None, 'A new (or empty) directory, e.g. '
                      'pretrained/resnet20.')
  flags.DEFINE_string('data_note', '', "A sentence on the data for the "
                      "README, e.g. 'the JPEG copy of CIFAR-10'.")
  flags.DEFINE_string('check_split', 'validation', "The split the README's "
                      "CPU check classifies ('validation', 'test' or TFDS "
                      'syntax); empty: no check.')
  flags.DEFINE_string('data_dir', None, "Where the run's dataset is here; "
                      "written into the release's config.json.")
  flags.mark_flags_as_required(['workdir', 'out'])


if __name__ == '__main__':
  define_flags()
  tools.run(main)
