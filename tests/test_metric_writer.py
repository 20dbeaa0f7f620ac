"""TensorBoard events without TensorFlow (metric_writer.py)."""

import errno
import logging
import os
import subprocess
import sys

from etils import epath
import numpy as np
import pytest
from tensorboard.backend.event_processing import event_accumulator
from tensorboard.plugins.hparams import metadata as hparams_metadata

from resnet_jax.read import report
from resnet_jax.run import metric_writer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def write(workdir, values_by_step, hparams=None):
  with metric_writer.create_writer(workdir, just_logging=False) as writer:
    if hparams:
      writer.write_hparams(hparams)
    for step, values in values_by_step.items():
      writer.write_scalars(step, values)


def event_files(workdir):
  return sorted(workdir.glob('events.out.tfevents.*'))


def test_scalars_round_trip_as_exact_float32(tmp_path):
  logged = {s: {'train_loss': 1 / (s + 3), 'learning_rate': 0.1 * 0.5**s}
            for s in (0, 10, 20, 35)}
  logged[20]['val_accuracy'] = 0.7
  write(tmp_path, logged)
  assert len(event_files(tmp_path)) == 1
  scalars = report.read_scalars(str(tmp_path))
  assert set(scalars) == {'train_loss', 'learning_rate', 'val_accuracy'}
  steps, values = scalars['train_loss']
  np.testing.assert_array_equal(steps, [0, 10, 20, 35])
  np.testing.assert_array_equal(
      values, [np.float32(1 / (s + 3)) for s in (0, 10, 20, 35)])
  assert metric_writer.scalars(tmp_path)['val_accuracy', 20] == np.float32(
      0.7)


def test_a_resumed_run_in_the_same_workdir_wins_where_it_logged_again(
    tmp_path):
  write(tmp_path, {s: {'train_loss': 10.0 + s} for s in (1, 2, 3)})
  write(tmp_path, {s: {'train_loss': 20.0 + s} for s in (2, 3, 4)})
  assert len(event_files(tmp_path)) == 2
  assert metric_writer.scalars(tmp_path) == {
      ('train_loss', 1): 11.0, ('train_loss', 2): 22.0,
      ('train_loss', 3): 23.0, ('train_loss', 4): 24.0}


def test_hyperparameters_are_what_the_hparams_plugin_reads(tmp_path):
  hparams = {'batch_size': 128, 'schedule.name': 'paper', 'nesterov': True,
             'learning_rate': 0.1}
  write(tmp_path, {1: {'train_loss': 1.0}}, hparams=hparams)
  [path] = event_files(tmp_path)
  values = [v for e in metric_writer.read_events(path)
            for v in e.summary.value
            if v.tag == hparams_metadata.SESSION_START_INFO_TAG]
  assert len(values) == 1
  assert values[0].metadata.plugin_data.plugin_name == 'hparams'
  info = hparams_metadata.parse_session_start_info_plugin_data(
      values[0].metadata.plugin_data.content)
  assert {k: getattr(v, v.WhichOneof('kind'))
          for k, v in info.hparams.items()} == hparams
  # Not a scalar, so not a curve.
  assert set(report.read_scalars(str(tmp_path))) == {'train_loss'}


def test_tensorboards_own_reader_sees_the_scalars(tmp_path):
  write(tmp_path, {s: {'train_loss': 1.0 / s} for s in (1, 2)},
        hparams={'depth': 20})
  accumulator = event_accumulator.EventAccumulator(str(tmp_path))
  accumulator.Reload()
  assert accumulator.SummaryMetadata(
      'train_loss').plugin_data.plugin_name == 'scalars'
  events = accumulator.Tensors('train_loss')
  assert [e.step for e in events] == [1, 2]
  assert [float(e.tensor_proto.float_val[0]) for e in events] == [
      np.float32(1.0), np.float32(0.5)]


def test_a_record_cut_short_ends_the_file_other_damage_is_an_error(
    tmp_path):
  write(tmp_path, {s: {'train_loss': float(s)} for s in range(1, 6)})
  [path] = event_files(tmp_path)
  data = path.read_bytes()
  path.write_bytes(data[:-10])  # A run killed while writing step 5.
  assert sorted(metric_writer.scalars(tmp_path)) == [
      ('train_loss', s) for s in range(1, 5)]
  damaged = bytearray(data)
  damaged[len(data) // 2] ^= 1
  path.write_bytes(bytes(damaged))
  with pytest.raises(ValueError, match='broken record'):
    metric_writer.scalars(tmp_path)


def test_just_logging_writes_no_file(tmp_path):
  workdir = tmp_path / 'run'
  with metric_writer.create_writer(workdir, just_logging=True) as writer:
    writer.write_hparams({'depth': 20})
    writer.write_scalars(1, {'train_loss': 1.0})
  assert not workdir.exists()


def test_each_call_logs_one_line_as_clu_did(tmp_path, caplog):
  with caplog.at_level(logging.INFO, logger='absl'):
    with metric_writer.create_writer(tmp_path, just_logging=True) as writer:
      writer.write_scalars(7, {'val_accuracy': 0.5, 'train_loss': 0.1234567,
                               'steps': 3})
  assert caplog.messages == [
      '[7] steps=3, train_loss=0.123457, val_accuracy=0.5']


_SCRIPT = '''
import sys
from absl import logging
logging.set_verbosity(logging.INFO)
from resnet_jax.run import metric_writer
with metric_writer.create_writer(sys.argv[1], just_logging=False) as w:
  w.write_hparams({'depth': 20})
  w.write_scalars(3, {'train_loss': 0.25, 'val_accuracy': 0.5})
print(metric_writer.scalars(sys.argv[1]))
print(sys.modules.get('tensorflow') is not None)  # Imported?
'''


@pytest.mark.parametrize('hide_tensorflow', [False, True])
def test_tensorflow_is_neither_imported_nor_needed(tmp_path,
                                                   hide_tensorflow):
  # With sys.modules['tensorflow'] = None, `import tensorflow` fails as if it
  # were not installed.
  script = ("import sys; sys.modules['tensorflow'] = None\n"
            if hide_tensorflow else '') + _SCRIPT
  result = subprocess.run([sys.executable, '-c', script, str(tmp_path)],
                          cwd=REPO, capture_output=True, text=True,
                          timeout=120, check=True)
  assert result.stdout.splitlines() == [
      "{('train_loss', 3): 0.25, ('val_accuracy', 3): 0.5}", 'False']
  assert '[3] train_loss=0.25, val_accuracy=0.5' in result.stderr


class _FullDisk:
  """A file that takes `room` bytes, then fails as a full disk does."""

  def __init__(self, file, room: int):
    self._file, self._room = file, room

  def write(self, data):
    if len(data) > self._room:
      raise OSError(errno.ENOSPC, 'No space left on device')
    self._room -= len(data)
    return self._file.write(data)

  def flush(self):
    self._file.flush()

  def close(self):
    self._file.close()


def test_a_full_disk_is_one_line_naming_the_file_and_keeps_what_was_written(
    tmp_path, monkeypatch):
  path_class = type(epath.Path('/'))
  real_open = path_class.open
  monkeypatch.setattr(path_class, 'open', lambda self, mode: _FullDisk(
      real_open(self, mode), room=400))
  writer = metric_writer.MetricWriter(tmp_path)
  monkeypatch.undo()  # The open file stays full; reading is unaffected.
  with pytest.raises(ValueError, match=(
      r'^cannot write .*/events\.out\.tfevents\.[^/]*: No space left on '
      r'device$')):
    for step in range(100):
      writer.write_scalars(step, {'train_loss': float(step)})
  writer.close()
  written = metric_writer.scalars(tmp_path)
  assert 0 < len(written) < 100
  assert written == {('train_loss', s): float(s) for s in range(len(written))}


def test_a_directory_name_the_file_system_refuses_is_one_line(tmp_path):
  logdir = tmp_path / ('x' * 300)  # Linux allows 255 bytes per name.
  with pytest.raises(ValueError, match=(
      rf'^cannot write {logdir}/events\.out\.tfevents\.[^/]*: File name too '
      'long$')):
    metric_writer.MetricWriter(logdir)
