"""The helpers every module shares: errors as one line, configs as fields."""

import sys

from absl import flags
from ml_collections import config_flags
import pytest

from resnet_jax import tools


def test_an_error_is_one_line_cut_to_the_limit_and_named_if_asked():
  error = OSError('disk\n   full:\tno space')
  assert tools.one_line(error) == 'disk full: no space'
  assert tools.one_line(error, named=True) == 'OSError: disk full: no space'
  long = ValueError('x' * 300)
  assert tools.one_line(long, 200) == 'x' * 197 + '...'
  assert tools.one_line('short', 200) == 'short'


def test_nested_dicts_flatten_to_dotted_fields_with_empty_ones_as_leaves():
  assert tools.flatten({'a': 1, 'b': {'c': (2,), 'd': {'e': None}},
                        'f': {}}) == {'a': 1, 'b.c': (2,), 'b.d.e': None,
                                      'f': {}}
  assert tools.flatten({}) == {}


def _parse_error(monkeypatch, argv) -> Exception:
  """The error of parsing `argv` with the trainer's --config flag."""
  monkeypatch.setattr(sys, 'argv', argv)  # Where config_flags reads them.
  # config_flags loads each file as this module, into the one loaded before.
  monkeypatch.delitem(sys.modules, 'config_config', raising=False)
  flag_values = flags.FlagValues()
  config_flags.DEFINE_config_file('config', None, flag_values=flag_values,
                                  lock_config=True)
  with pytest.raises(Exception) as raised:
    flag_values(argv)
  return raised.value


@pytest.mark.parametrize('override, message', [
    ('--config.model.dpth=20', "the config has no field 'dpth' Did you "
     'mean "depth" instead of "dpth"?; check the --config.* overrides'),
    ('--config.batch_size=abc', 'flag --config.batch_size=abc: invalid '
     "literal for int() with base 10: 'abc'"),
])
def test_a_config_override_error_is_one_line(monkeypatch, override, message):
  error = _parse_error(monkeypatch,
                       ['main', '--config=configs/smoke.py', override])
  assert tools.config_error(error, 'configs/smoke.py') == message


def test_a_config_file_without_get_config_is_named(monkeypatch, tmp_path):
  config_file = tmp_path / 'not_a_config.py'
  config_file.write_text('depth = 20\n')
  error = _parse_error(monkeypatch, ['main', f'--config={config_file}'])
  assert tools.config_error(error, str(config_file)) == (
      f'--config={config_file} has no get_config() function')
