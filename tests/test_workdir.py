"""Tests of workdir.py: checks before use, and one trainer per workdir."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from resnet_jax import workdir

# Holds the lock of the workdir given, announced, until killed.
HOLDER = '''
import sys, time
from resnet_jax import workdir
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
