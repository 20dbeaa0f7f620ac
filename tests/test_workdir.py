"""Tests of workdir.py: checks before use, and one trainer per workdir."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import pytest

from resnet_jax.run import workdir

# Holds the lock of the workdir given, announced, until killed.
HOLDER = '''
import sys, time
from resnet_jax.run import workdir
lock = workdir.Lock(sys.argv[1])
lock.announce()
print('held', flush=True)
time.sleep(300)
'''


@pytest.fixture
def holder(tmp_path):
  process = subprocess.Popen([sys.executable, '-c', HOLDER, str(tmp_path)],
                             stdout=subprocess.PIPE, text=True)
  assert process.stdout.readline().strip() == 'held'
  yield process
  process.kill()
  process.wait()


def test_an_empty_workdir_is_refused():
  with pytest.raises(ValueError, match='^--workdir is empty; name a '):
    workdir.check('')
  with pytest.raises(ValueError, match='^--workdir is empty'):
    workdir.check('  ')


def test_a_held_workdir_is_refused_naming_the_holder(tmp_path, holder):
  with pytest.raises(workdir.WorkdirBusyError,
                     match=rf'is in use by another trainer \(pid {holder.pid} '
                     r'on .*, started '):
    workdir.Lock(str(tmp_path)).acquire()


def test_a_killed_holder_leaves_nothing_stuck(tmp_path, holder):
  holder.send_signal(signal.SIGKILL)
  holder.wait()
  with workdir.Lock(str(tmp_path)) as lock:
    lock.announce()
    assert json.loads((tmp_path / workdir.HOLDER_FILE).read_text())[
        'pid'] == os.getpid()


def test_taking_a_lock_writes_nothing(tmp_path):
  before = sorted(tmp_path.iterdir()), tmp_path.stat().st_mtime_ns
  with workdir.Lock(str(tmp_path)):
    time.sleep(0.01)
  assert (sorted(tmp_path.iterdir()), tmp_path.stat().st_mtime_ns) == before
  with workdir.Lock(str(tmp_path / 'new')):  # Not there yet: nothing to hold.
    assert not (tmp_path / 'new').exists()


def test_json_is_written_whole(tmp_path):
  path = tmp_path / 'x.json'
  workdir.write_json(workdir.epath.Path(path), {'a': 1})
  assert json.loads(path.read_text()) == {'a': 1}
  assert [p.name for p in tmp_path.iterdir()] == ['x.json']


REPO = pathlib.Path(__file__).resolve().parents[1]


def contents(directory):
  """Every file under `directory` with its bytes: to show nothing changed."""
  return {p.relative_to(directory): p.read_bytes()
          for p in sorted(directory.rglob('*')) if p.is_file()}


def foreign(tmp_path, kind):
  """A directory that is not a workdir of the trainer, of `kind`."""
  directory = tmp_path / kind
  if kind == 'release':
    shutil.copytree(REPO / 'resnet_jax' / 'pretrained' / 'resnet20', directory)
    return directory
  directory.mkdir()
  if kind == 'own config.json':
    (directory / 'config.json').write_text('{"learning_rate": 0.1}')
  elif kind == 'own summary.json':
    (directory / 'summary.json').write_text('{"accuracy": 0.9}')
  elif kind == 'photos':
    (directory / 'cat.png').write_bytes(b'\x89PNG')
  elif kind == 'a run without its mark beside a release':
    shutil.copytree(REPO / 'resnet_jax' / 'pretrained' / 'resnet20', directory,
                    dirs_exist_ok=True)
    (directory / 'checkpoints').mkdir()
  return directory


@pytest.mark.parametrize('kind', [
    'release', 'own config.json', 'own summary.json', 'photos',
    'a run without its mark beside a release'])
def test_a_directory_not_of_this_trainer_is_refused_untouched(tmp_path,
                                                              kind):
  directory = foreign(tmp_path, kind)
  before = contents(directory)
  with pytest.raises(ValueError, match=(
      rf'^--workdir={directory} is (a release, not a workdir|not a workdir of '
      r'this trainer) \(it holds .*\): the trainer writes only into a new or '
      'empty directory or into its own workdir; give another --workdir$')):
    workdir.check(str(directory))
  assert contents(directory) == before


def test_new_empty_and_own_runs_are_accepted(tmp_path):
  workdir.check(str(tmp_path / 'new'))
  (tmp_path / 'empty').mkdir()
  workdir.check(str(tmp_path / 'empty'))
  # A run of today's trainer: its mark.
  marked = tmp_path / 'marked'
  marked.mkdir()
  with workdir.Lock(str(marked)) as lock:
    lock.announce()
  (marked / 'notes.txt').write_text('mine')
  workdir.check(str(marked))
  # The committed records (config.json, summary.json; no mark, no
  # checkpoints), and a run of the trainer before the mark (config.json and
  # checkpoints, its summary not yet written).
  record = tmp_path / 'record'
  shutil.copytree(REPO / 'experiments' / 'table6' / 'resnet20-seeds0-2',
                  record)
  workdir.check(str(record))
  old = tmp_path / 'old'
  (old / 'checkpoints' / '8').mkdir(parents=True)
  shutil.copy(record / 'config.json', old / 'config.json')
  workdir.check(str(old))
