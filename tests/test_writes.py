"""Files the commands write into a workdir are whole or not there: a full
disk or a folder in a file's place is one line, and leaves no half-written
file and the previous file as it was."""

import errno
import json

from etils import epath
import pytest

from configs import smoke
from resnet_jax import train
from resnet_jax import workdir as workdir_lib


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
