"""TensorBoard event files, written and read without TensorFlow.

`create_writer` logs each call's scalars to the absl log and, on process 0,
writes them as TensorFlow 2 would (scalars plugin, HParams session start).
clu's writers and tensorboard's EventFileWriter import TensorFlow (slow, may
take the GPUs, often absent); this uses tensorboard's protos and its
pure-Python TFRecord framing only.
"""

from collections.abc import Iterator, Mapping
import contextlib
import itertools
import os
import socket
import struct
import time
from typing import Any

from absl import logging
from etils import epath
from google.protobuf import message
import numpy as np
from tensorboard.compat.proto import event_pb2
from tensorboard.compat.proto import summary_pb2
from tensorboard.compat.tensorflow_stub import pywrap_tensorflow
from tensorboard.plugins.hparams import summary_v2 as hparams_summary
from tensorboard.plugins.scalar import metadata as scalar_metadata
from tensorboard.summary.writer import record_writer
from tensorboard.util import tensor_util

EVENT_FILE_PATTERN = 'events.out.tfevents.*'
_SCALAR_METADATA = scalar_metadata.create_summary_metadata('', '')
# Tells apart the files a process opens within one second.
_file_numbers = itertools.count()


class _Closes:
  """`with writer:` closes it at the end."""

  def __enter__(self):
    return self

  def __exit__(self, *exc_info):
    self.close()


class MetricWriter(_Closes):
  """Logs scalars (unless `log` is False) and writes them into a new event
  file in `logdir` (none when it is None).

  Every write goes to the file at once (no thread, no queue): a killed run
  loses nothing it logged, at most the end of the record being written.
  """

  def __init__(self, logdir: str | os.PathLike[str] | None, *,
               log: bool = True):
    self._log = log
    self._records = self._path = None
    if logdir is not None:
      directory = epath.Path(logdir)
      # TensorFlow's name: TensorBoard finds files by their prefix.
      self._path = directory / (
          f'events.out.tfevents.{int(time.time()):010d}.'
          f'{socket.gethostname()}.{os.getpid()}.{next(_file_numbers)}.v2')
      with self._failure():
        directory.mkdir(parents=True, exist_ok=True)
        self._records = record_writer.RecordWriter(self._path.open('wb'))
      self._write(event_pb2.Event(file_version='brain.Event:2'))

  @contextlib.contextmanager
  def _failure(self):
    """A file-system error (a full disk) as one line naming the file: the
    file object's own OSError does not."""
    try:
      yield
    except OSError as e:
      raise ValueError(f'cannot write {self._path}: {e.strerror or e}') from e

  def _write(self, event: event_pb2.Event, step: int = 0):
    event.wall_time = time.time()  # Tells which of two writes is later.
    event.step = step
    with self._failure():
      self._records.write(event.SerializeToString())
      self._records.flush()

  def write_scalars(self, step: int, scalars: Mapping[str, Any]):
    if self._log:  # clu's LoggingWriter's line, which people and tests read.
      logging.info('[%d] %s', step, ', '.join(
          f'{k}={v:.6g}' if isinstance(v, float) else f'{k}={v}'
          for k, v in sorted(scalars.items())))
    if self._records is None:
      return
    summary = summary_pb2.Summary(value=[
        summary_pb2.Summary.Value(
            tag=tag, metadata=_SCALAR_METADATA,
            tensor=tensor_util.make_tensor_proto(np.float32(value)))
        for tag, value in scalars.items()])
    self._write(event_pb2.Event(summary=summary), int(step))

  def write_hparams(self, hparams: Mapping[str, Any]):
    """Flat hyperparameters: names to bools, numbers and strings.

    Not logged: the trainer prints the whole config when it starts.
    """
    if self._records is not None:
      summary = hparams_summary.hparams_pb(dict(hparams))
      self._write(event_pb2.Event(summary=summary))

  def flush(self):  # The file is flushed at each write.
    logging.flush()

  def close(self):
    """Closes the file; more calls do nothing."""
    records, self._records = self._records, None
    if records is not None:
      with self._failure():
        records.close()
    logging.flush()


def create_writer(logdir: str | os.PathLike[str], *,
                  just_logging: bool) -> MetricWriter:
  """The trainer's writer: with `just_logging` (processes but 0) no file."""
  return MetricWriter(None if just_logging else logdir)


class RunsWriter(_Closes):
  """The trainer's writer for config.num_runs runs trained together.

  The runs' mean is logged and written into `logdir` (one run's value when
  alone); with several runs each run's own values also go to
  `logdir`/run_<i>, which TensorBoard shows side by side.
  """

  def __init__(self, logdir: str | os.PathLike[str], num_runs: int, *,
               just_logging: bool):
    self.mean = create_writer(logdir, just_logging=just_logging)
    self.runs = [] if num_runs == 1 or just_logging else [
        MetricWriter(epath.Path(logdir) / run_dir(i), log=False)
        for i in range(num_runs)]

  def write_scalars(self, step: int, per_run: list[Mapping[str, float]],
                    common: Mapping[str, Any] | None = None):
    """Each run's `per_run` scalars, and `common` ones (the same for all)."""
    mean = {k: float(np.mean([run[k] for run in per_run])) for k in per_run[0]}
    self.mean.write_scalars(step, mean | dict(common or {}))
    for writer, scalars in zip(self.runs, per_run):
      writer.write_scalars(step, scalars)

  def write_hparams(self, hparams: Mapping[str, Any]):
    self.mean.write_hparams(hparams)

  def flush(self):
    self.mean.flush()  # Each run's file is flushed at each write.

  def close(self):
    for writer in [self.mean, *self.runs]:
      writer.close()


def run_dir(run: int) -> str:
  """The folder, inside a workdir, of run `run`'s own TensorBoard events."""
  return f'run_{run}'


# ----------------------------------------------------------------------------
# Reading.


def _crc(data: bytes) -> bytes:
  return struct.pack('<I', pywrap_tensorflow.masked_crc32c(data))


def read_events(path: str | os.PathLike[str]) -> Iterator[event_pb2.Event]:
  """The events of one file, which TensorFlow or `MetricWriter` wrote.

  A record cut short at the end of the file (a killed writer, or one still
  writing) ends the file; any other damage is an error.

  Raises:
    ValueError: a record's checksum is wrong, or it is not an Event.
  """
  data = epath.Path(path).read_bytes()
  # Each record: length (uint64), its masked CRC-32C, data, the data's.
  position = 0
  while len(data) - position >= 12:
    header = data[position:position + 8]
    start = position + 12
    end = start + struct.unpack('<Q', header)[0]
    if _crc(header) != data[position + 8:start]:
      raise ValueError(f'{path}: broken record header at byte {position}')
    if end + 4 > len(data):
      break
    if _crc(data[start:end]) != data[end:end + 4]:
      raise ValueError(f'{path}: broken record at byte {position}')
    try:
      yield event_pb2.Event.FromString(data[start:end])
    except message.DecodeError as e:
      raise ValueError(f'{path}: record at byte {position} is not an event: '
                       f'{e}') from None
    position = end + 4


def _scalar(value: summary_pb2.Summary.Value) -> float | None:
  """A summary value's number: TF 2 writes tensors, TF 1 simple_value."""
  kind = value.WhichOneof('value')
  if kind == 'simple_value':
    return float(value.simple_value)
  plugin = value.metadata.plugin_data.plugin_name
  if kind != 'tensor' or plugin not in ('', 'scalars'):
    return None  # Hyperparameters, images, text, ...
  array = tensor_util.make_ndarray(value.tensor)
  if array.size != 1 or array.dtype.kind not in 'biuf':
    return None
  return float(array.reshape(()))


def scalars(workdir: str | os.PathLike[str]) -> dict[tuple[str, int], float]:
  """{(tag, step): value} of every scalar in the workdir's event files.

  A resumed run writes the steps after its last checkpoint again, into a new
  event file, so a (tag, step) can occur more than once: the value written
  last wins, by the events' wall times (microseconds; file names only have
  seconds), then by file name and position. Sorted by tag, then step.

  Raises:
    ValueError: an event file is damaged other than cut short at its end
      (see `read_events`).
  """
  latest = {}
  for path in sorted(epath.Path(workdir).glob(EVENT_FILE_PATTERN)):
    if not path.is_file():
      continue
    for position, event in enumerate(read_events(path)):
      order = (event.wall_time, path.name, position)
      for value in event.summary.value:
        number = _scalar(value)
        key = (value.tag, int(event.step))
        if number is not None and (key not in latest or
                                   latest[key][0] <= order):
          latest[key] = (order, number)
  return {key: number for key, (_, number) in sorted(latest.items())}
