"""The run's directory: checked before use, held by one trainer at a time.

Two trainers on one workdir would write each other's checkpoints and mix
their logs. The trainer holds an exclusive `flock` on the directory itself
for as long as it runs: the kernel releases it when the process ends, however
it ends (kill -9 included), so a dead holder never leaves it stuck, and
taking it writes nothing. Once the holder writes the workdir, it leaves its
pid, host and start time in HOLDER_FILE so that a refused trainer can name it.
Object stores (gs://...) cannot be locked: there, one trainer per workdir is
the user's business.
"""

import fcntl
import json
import os
import socket
import time

from etils import epath

HOLDER_FILE = '.trainer'


class WorkdirBusyError(ValueError):
  """Another trainer is running in the workdir."""


def check(workdir: str) -> None:
  """Fails if `workdir` could not be written; creates nothing."""
  if not workdir.strip():
    raise ValueError('--workdir is empty; name a directory for the run')
  if '://' in workdir:
    return  # An object store: Orbax and the event writer write there.
  if os.path.exists(workdir) and not os.path.isdir(workdir):
    raise ValueError(f'--workdir={workdir} exists and is not a directory')
  existing = os.path.abspath(workdir)
  while not os.path.exists(existing):
    existing = os.path.dirname(existing)
  if not os.path.isdir(existing):
    raise ValueError(f'--workdir={workdir} cannot be created: {existing} is '
                     'not a directory')
  if not os.access(existing, os.W_OK | os.X_OK):
    raise ValueError(f'--workdir={workdir} is not writable ({existing} is '
                     'read-only to this user)')


def write_json(path: epath.Path, value) -> None:
  """Writes `value` as JSON whole, then renames: never half a file."""
  partial = path.parent / f'{path.name}.partial'
  partial.write_text(json.dumps(value, indent=2))
  partial.replace(path)


class Lock:
  """An exclusive hold on a local workdir, for the life of this process."""

  def __init__(self, workdir: str):
    self._workdir = workdir
    self._fd = None

  def acquire(self) -> None:
    """Takes the workdir if it exists and is not yet held; writes nothing.

    Raises:
      WorkdirBusyError: another live process holds it.
    """
    if self._fd is not None or '://' in self._workdir or not os.path.isdir(
        self._workdir):
      return
    fd = os.open(self._workdir, os.O_RDONLY)
    try:
      fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      os.close(fd)
      raise WorkdirBusyError(
          f'--workdir={self._workdir} is in use by another trainer '
          f'({self._holder()}); wait for it to end, or use another '
          '--workdir') from None
    self._fd = fd

  def _holder(self) -> str:
    try:
      with open(os.path.join(self._workdir, HOLDER_FILE)) as f:
        holder = json.load(f)
      return (f'pid {holder["pid"]} on {holder["host"]}, started '
              f'{holder["started"]}')
    except (OSError, ValueError, KeyError, TypeError):
      return 'it has not said who it is yet'

  def announce(self) -> None:
    """Records this process as the holder (call once the workdir exists)."""
    self.acquire()
    if self._fd is not None:
      write_json(epath.Path(self._workdir) / HOLDER_FILE, {
          'pid': os.getpid(), 'host': socket.gethostname(),
          'started': time.strftime('%Y-%m-%d %H:%M:%S %Z')})

  def release(self) -> None:
    if self._fd is not None:
      os.close(self._fd)  # Closing the descriptor releases the flock.
      self._fd = None

  def __enter__(self):
    self.acquire()
    return self

  def __exit__(self, *exc_info):
    self.release()
