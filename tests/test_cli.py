"""What the commands share (resnet_jax/cli.py): config errors as one line,
path flags that expand `~`."""

import os
import pathlib
import subprocess
import sys

from absl import flags
from ml_collections import config_flags
import pytest

from resnet_jax import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


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
  assert cli.config_error(error, 'configs/smoke.py') == message


def test_a_config_file_without_get_config_is_named(monkeypatch, tmp_path):
  config_file = tmp_path / 'not_a_config.py'
  config_file.write_text('depth = 20\n')
  error = _parse_error(monkeypatch, ['main', f'--config={config_file}'])
  assert cli.config_error(error, str(config_file)) == (
      f'--config={config_file} has no get_config() function')


def test_a_path_flag_expands_the_home_folder(monkeypatch):
  monkeypatch.setenv('HOME', '/home/someone')
  values = flags.FlagValues()
  cli.define_path('workdir', '~/default', '', flag_values=values)
  cli.define_path('root', None, '', flag_values=values)
  values(['command'])
  assert values.workdir == '/home/someone/default'
  values(['command', '--workdir=~/run', '--root=gs://bucket/~x'])
  assert (values.workdir, values.root) == ('/home/someone/run',
                                           'gs://bucket/~x')
  values(['command', '--workdir=runs/~x'])  # Only a leading ~.
  assert values.workdir == 'runs/~x'


# Each command's path flags, and one value of every other flag it requires.
PATH_FLAGS = {
    'resnet_jax.main': ('', ['--workdir', '--config=configs/smoke.py']),
    'resnet_jax.curves': ('', ['--workdir']),
    # evaluate and export: the module's name is also its function's (which
    # the `*` below imports).
    'resnet_jax.evaluate': ("sys.modules['resnet_jax.evaluate'].define_flags()",
                            ['--workdir', '--data_dir']),
    'resnet_jax.predict': ('predict.define_flags()', ['--workdir']),
    'experiments.release': ('release.define_flags()',
                            ['--workdir', '--data_dir', '--out']),
    'resnet_jax.export': ("sys.modules['resnet_jax.export'].define_flags()",
                          ['--workdir', '--out']),
    # Its --log_dir is absl's own, expanded where main() reads it.
    'experiments.reproduce_table6': ('reproduce_table6.define_flags()',
                                     ['--root']),
}


@pytest.mark.slow  # A Python (and JAX) start-up per command.
def test_every_command_expands_the_home_folder_in_its_path_flags(tmp_path):
  # Each command's flags as its `__main__` defines them, parsed with `~/...`
  # for each path; the values read back.
  processes = {}
  for module, (define, args) in PATH_FLAGS.items():
    package, name = module.split('.')
    source = (REPO / package / f'{name}.py').read_text()
    if not define:  # Defined under `if __name__ == '__main__':`.
      define = source[source.index("\nif __name__ == '__main__':"):]
      define = '\n'.join(l[2:] for l in define.splitlines()[2:]
                         if 'cli.start' not in l)
    paths = [a[2:] for a in args if '=' not in a]
    code = (f'import sys\nfrom absl import flags\nfrom {package} import '
            f'{name}\nfrom {package}.{name} import *\n{define}\n'
            f'flags.FLAGS(sys.argv)\n'
            f'print(*(flags.FLAGS[p].value for p in {paths!r}))')
    argv = [a if '=' in a else f'{a}=~/{a[2:]}' for a in args]
    processes[module] = subprocess.Popen(
        [sys.executable, '-c', code, *argv], cwd=REPO, text=True,
        env={**os.environ, 'HOME': str(tmp_path)}, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE)
  for module, process in processes.items():
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, (module, stderr[-2000:])
    paths = [a[2:] for a in PATH_FLAGS[module][1] if '=' not in a]
    assert stdout.split() == [f'{tmp_path}/{p}' for p in paths], module
