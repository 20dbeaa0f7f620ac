"""Releases one run of a workdir (or a release, again) as a small workdir.

  python -m experiments.release --workdir=runs/resnet20 --run=0 \
      --checkpoint=latest --out=releases/resnet20 [--data_note='...']

writes into --out (absent or empty; `~` is home) config.json,
weights.safetensors and release.json (resnet_jax/read/releases.py, `release`),
with the CPU check: how many images of --check_split this machine classifies
correctly. Everything is checked first, then written into a temporary
directory renamed to --out. Of a release (--workdir=resnet_jax/pretrained/
resnet20), its step, seed and recorded accuracy are kept, and the data's
fingerprint is taken again. `evaluate`, `predict`, `export` and
`resnet_jax.pretrained` load it as any workdir. Refused with one line
`error: ...` when --out is not empty, a symbolic link or not writable, or
the run or checkpoint does not exist.
"""

import shlex
import sys

from absl import flags
from absl import logging

from resnet_jax import cli
from resnet_jax.read import inference
from resnet_jax.read import releases

FLAGS = flags.FLAGS


def main(argv):
  if len(argv) > 1:
    raise ValueError(f'unexpected arguments: {" ".join(argv[1:])}')
  cli.quiet_start(logging.WARNING)
  record = releases.release(
      **cli.selection_from_flags(), out=FLAGS.out,
      data_note=FLAGS.data_note, check_split=FLAGS.check_split,
      data_dir=FLAGS.data_dir, command=shlex.join(
          ['python', '-m', 'experiments.release', *sys.argv[1:]]))
  print(f'released run {FLAGS.run} (seed {record["seed"]}), step '
        f'{record["step"]}, of {FLAGS.workdir} into {FLAGS.out}: '
        f'{record["weights"]["bytes"] / 1e6:.2f} MB of weights')
  if check := record['cpu_check']:
    print(f'CPU check: {check["correct"]:,} of {check["examples"]:,} images '
          f'of {check["split"]} classified correctly on {check["device"]}, '
          f'JAX {check["jax"]} (release.json, cpu_check)')


def define_flags():
  """The command line's flags (defined only when run as a program)."""
  cli.define_selection_flags(ensemble=False)
  cli.define_path('out', None, 'A new (or empty) directory, e.g. '
                  'releases/resnet20.')
  flags.DEFINE_string('data_note', '', "A sentence on the data for "
                      "release.json, e.g. 'the JPEG copy of CIFAR-10'.")
  flags.DEFINE_string('check_split', 'validation', 'The split the CPU check '
                      "classifies ('validation', 'test' or TFDS syntax); "
                      'empty: no check.')
  cli.define_path('data_dir', None, "Where the run's dataset is here; "
                  "written into the release's config.json.")
  flags.mark_flag_as_required('out')


if __name__ == '__main__':
  define_flags()
  cli.start(main)
