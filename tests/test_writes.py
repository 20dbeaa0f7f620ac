"""Files the commands write into a workdir are whole or not there: a full
disk or a folder in a file's place is one line, and leaves no half-written
file and the previous file as it was."""

import errno
import json
import os
import pathlib
import subprocess
import sys

from etils import epath
import pytest

from configs import smoke
from resnet_jax.run import train
from resnet_jax.run import workdir as workdir_lib


def full_disk(monkeypatch, after_bytes=10):
  """Writes through epath stop after `after_bytes` with ENOSPC."""
  path_class = type(epath.Path('/'))

  def write(self, data, *args, **kwargs):
    with open(self, 'wb' if isinstance(data, bytes) else 'w') as f:
      f.write(data[:after_bytes])
    raise OSError(errno.ENOSPC, 'No space left on device')

  monkeypatch.setattr(path_class, 'write_text', write)
  monkeypatch.setattr(path_class, 'write_bytes', write)


def test_a_full_disk_leaves_the_old_file_and_no_partial_one(tmp_path,
                                                            monkeypatch):
  path = tmp_path / 'config.json'
  workdir_lib.write_json(epath.Path(path), {'old': True})
  full_disk(monkeypatch)
  with pytest.raises(ValueError, match=(
      r'^cannot write .*/config.json: No space left on device$')):
    workdir_lib.write_json(epath.Path(path), {'new': list(range(100))})
  assert json.loads(path.read_text()) == {'old': True}
  assert [p.name for p in tmp_path.iterdir()] == ['config.json']


def test_a_folder_where_the_trainer_writes_a_file_is_refused_first(tmp_path):
  (tmp_path / 'run' / 'config.json').mkdir(parents=True)
  with pytest.raises(ValueError, match=(
      r'--workdir=.*/run holds a config.json that is not a file, where the '
      'run writes its own; move it away')):
    train.train_and_evaluate(smoke.get_config(), str(tmp_path / 'run'))
  assert [p.name for p in (tmp_path / 'run').iterdir()] == ['config.json']
  with pytest.raises(ValueError,
                     match='cannot write .*config.json: .*is a directory'):
    workdir_lib.write_json(epath.Path(tmp_path / 'run' / 'config.json'), {})


REPO = pathlib.Path(__file__).resolve().parents[1]


def run_python(code: str) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, '-c', code], cwd=REPO, text=True,
                        capture_output=True, timeout=300,
                        env={**os.environ, 'PYTHONPATH': str(REPO)})


def test_a_file_system_error_in_any_command_is_one_line(tmp_path):
  # A name over Linux's 255 bytes, as a --workdir or --out may be: every
  # command's OSError goes the same way (cli.start).
  path = tmp_path / ('x' * 300) / 'config.json'
  ran = run_python(
      'from resnet_jax import cli\n'
      f'cli.start(lambda argv: open({str(path)!r}).read())')
  assert (ran.returncode, ran.stdout, ran.stderr) == (
      1, '', f'error: {path}: File name too long\n')


def test_a_failed_saves_writes_ending_after_orbax_closed_its_loop_are_quiet():
  # What a full disk does (tensorstore calls back into a closed event loop,
  # once per pending write): the save's own error is the one line.
  ran = run_python(
      'import asyncio, tensorstore as ts\n'
      'from resnet_jax.run import checkpoints\n'
      'promise, future = ts.Promise.new()\n'
      'loop = asyncio.new_event_loop()\n'
      'async def wait():\n'
      '  await future\n'
      'task = loop.create_task(wait())\n'
      'loop.run_until_complete(asyncio.sleep(0.01))\n'
      'loop.close()\n'
      'promise.set_result(1)\n'
      'import gc; gc.collect()  # Any other unraisable error still shows.\n'
      'class Broken:\n'
      '  def __del__(self):\n'
      "    raise RuntimeError('Event loop is closed')\n"
      'Broken(); gc.collect()\n')
  assert ran.returncode == 0, ran.stderr
  assert ran.stderr.count('Event loop is closed') == 1, ran.stderr
  assert 'Exception ignored in: <function Broken.__del__' in ran.stderr
  assert 'call_soon_threadsafe' not in ran.stderr
