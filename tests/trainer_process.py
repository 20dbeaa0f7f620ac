"""Runs the trainer's command line in a subprocess, optionally with a fault.

`run_cli(..., fault='kill@save:8')` makes the process signal itself at a
chosen point, which is how the tests kill it at moments they could not hit
from outside (in the middle of a checkpoint write, during an evaluation):

  <signal>@batch:K   when the input pipeline builds the batch of step K,
                     which it does as the trainer takes the batch of step
                     K - 1: after that step, K steps are done (with
                     several steps per call, as it takes the batches
                     of the call before the one with step K);
  <signal>@save:K    while Orbax writes checkpoint K: every file is written,
                     the rename that completes it has not happened;
  <signal>@eval:N    during the N-th evaluation (1-based), once the
                     checkpoints saved before it, which Orbax writes in
                     the background, are complete: which ones a kill finds
                     on disk does not depend on the machine's load;
  <signal>@summary   when summary.json is about to be written, after the
                     last checkpoint.

<signal> is `kill` (SIGKILL: nothing runs after it), `term` (SIGTERM) or
`int` (SIGINT, Ctrl-C): for these two the trainer's handler runs; the
process goes on until it stops by itself.

`fresh_clone(destination)` copies the repository as a fresh clone has it,
for the tests that run the README's commands or build the wheel from it.
"""

import os
import pathlib
import shutil
import subprocess
import sys

import jax

import fake_cifar
from resnet_jax.run import checkpoints, experiment, parallel

REPO = pathlib.Path(__file__).resolve().parents[1]

_MAIN = '''
import os, runpy, signal, sys

def _install_fault(fault):
  name, _, where = fault.partition('@')
  point, _, arg = where.partition(':')
  signum = {'kill': signal.SIGKILL, 'term': signal.SIGTERM,
            'int': signal.SIGINT}[name]
  fired = []
  def fire():  # Once: a second SIGTERM or SIGINT would stop at once.
    if not fired:
      fired.append(1)
      os.kill(os.getpid(), signum)
  if point == 'batch':
    from resnet_jax.data import batching
    original = batching.train_rows
    def train_rows(*args, step, **kwargs):
      if step == int(arg):
        fire()
      return original(*args, step=step, **kwargs)
    batching.train_rows = train_rows
  elif point == 'save':
    # Orbax completes a checkpoint by renaming its temporary folder.
    original = os.rename
    def rename(src, dst, *args, **kwargs):
      if (os.path.basename(os.fspath(dst)) == arg and
          '.orbax-checkpoint-tmp' in os.fspath(src)):
        fire()
      return original(src, dst, *args, **kwargs)
    os.rename = rename
  elif point == 'eval':
    from resnet_jax.run import checkpoints, experiment
    original, calls = experiment.Experiment.evaluate, []
    original_save, savers = checkpoints.Checkpointer.save, []
    def save(self, *args, **kwargs):
      savers.append(self)
      return original_save(self, *args, **kwargs)
    def evaluate(*args, **kwargs):
      calls.append(1)
      if len(calls) == int(arg):
        for saver in savers:
          saver.wait_until_finished()
        fire()
      return original(*args, **kwargs)
    checkpoints.Checkpointer.save = save
    experiment.Experiment.evaluate = evaluate
  elif point == 'summary':
    from resnet_jax.run import workdir
    original = workdir.write_json
    def write_json(path, value):
      if path.name == 'summary.json':
        fire()
      return original(path, value)
    workdir.write_json = write_json
  else:
    raise ValueError(fault)

if os.environ.get('RESNET_JAX_TEST_FAULT'):
  _install_fault(os.environ['RESNET_JAX_TEST_FAULT'])
sys.argv = ['resnet_jax.main'] + sys.argv[1:]
runpy.run_module('resnet_jax.main', run_name='__main__')
'''


def cli_command(*args, mocked=True, fault=None, own_devices=False, env=None):
  """The command and environment that `run_cli` runs (see there)."""
  env = dict(os.environ, RESNET_JAX_TEST_FAULT=fault or '', **(env or {}))
  if mocked:
    # TFDS's default data_dir: a --config.data.data_dir in args still wins.
    env['TFDS_DATA_DIR'] = fake_cifar.data_dir()
  if own_devices:
    env.pop('XLA_FLAGS', None)
  return [sys.executable, '-c', _MAIN, *args], env


def run_cli(*args, mocked=True, fault=None, own_devices=False, timeout=300,
            env=None):
  """Runs `python -m resnet_jax.main *args` from the repository root.

  Args:
    *args: command-line arguments.
    mocked: with the small CIFAR-10 of fake_cifar.py as TFDS's default
      data_dir (100 train and 100 test images; no dataset needed).
    fault: where to signal the process itself (see the module docstring).
    own_devices: without conftest's 8 CPU devices, so that
      --config.cpu_devices decides.
    timeout: seconds before the test fails.
    env: environment variables to set besides the test's own.
  """
  command, env = cli_command(*args, mocked=mocked, fault=fault,
                             own_devices=own_devices, env=env)
  return subprocess.run(command, cwd=REPO, env=env, capture_output=True,
                        text=True, timeout=timeout)


def run_module(module, *args, timeout=300):
  """Runs `python -m <module> *args` from the repository root."""
  return subprocess.run([sys.executable, '-m', module, *args], cwd=REPO,
                        capture_output=True, text=True, timeout=timeout)


def error_line(result) -> str:
  """The command's last line of output, which is the error when it failed."""
  return result.stderr.strip().splitlines()[-1]


def snapshot(directory) -> dict[str, tuple[int, int]] | None:
  """Every path under `directory` with its size and mtime (None if absent)."""
  directory = pathlib.Path(directory)
  if not directory.exists():
    return None
  paths = [directory, *directory.rglob('*')] if directory.is_dir() else [
      directory]
  return {str(p.relative_to(directory)): (p.stat().st_size,
                                          p.stat().st_mtime_ns)
          for p in paths}


def restore_params(workdir, config):
  """(step, params, batch_stats, opt_state) of a workdir's newest checkpoint.

  On the host; `config` says what the model is (the smoke config's).
  """
  exp = experiment.build(config, dp=parallel.DataParallel('jit'),
                         image_shape=(32, 32, 3))
  with checkpoints.Checkpointer(
      os.path.join(workdir, 'checkpoints'),
      metadata=exp.checkpoint_metadata(training=False)) as checkpointer:
    state = checkpointer.restore(exp.abstract_state())
  # The step as one number: every run of a checkpoint is at the same one.
  return jax.device_get((state.step[0], state.params, state.batch_stats,
                         state.opt_state))


def fresh_clone(destination: pathlib.Path) -> pathlib.Path:
  """The repository's files as a fresh clone has them (not the ignored)."""
  try:
    listed = subprocess.run(
        ['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'],
        cwd=REPO, capture_output=True, check=True).stdout.decode().split('\0')
  except (OSError, subprocess.CalledProcessError):  # Not a git checkout.
    anywhere = shutil.ignore_patterns(
        '.git', '.venv', 'runs', '__pycache__', '*.egg-info', '.pytest_cache',
        '.hypothesis', '.whl', '.device')
    # The data folder at the root (/data/), not the package's resnet_jax/data.
    shutil.copytree(REPO, destination, ignore=lambda folder, names: (
        anywhere(folder, names) |
        ({'data'} if folder == str(REPO) else set())))
    return destination
  for name in filter(None, listed):
    source = REPO / name
    if source.is_file():  # Not a file deleted from the working tree.
      (destination / name).parent.mkdir(parents=True, exist_ok=True)
      shutil.copy2(source, destination / name)
  return destination
