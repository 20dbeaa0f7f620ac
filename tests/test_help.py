"""Every command's --help prints its help and succeeds (exit status 0).

Every command runs through cli.start, which turns absl's help exit (status
1) into status 0; the test runs two commands (the trainer has its own flag
parser) and checks that every other one goes through cli.start.
"""

import pathlib
import re
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
COMMANDS = ('resnet_jax.main', 'resnet_jax.evaluate', 'resnet_jax.predict',
            'resnet_jax.curves', 'resnet_jax.export', 'experiments.release',
            'experiments.benchmark', 'experiments.reproduce_table6')


@pytest.mark.parametrize('module', COMMANDS)
def test_every_command_starts_through_cli_start(module):
  source = (REPO / (module.replace('.', '/') + '.py')).read_text()
  main_block = source[source.index("\nif __name__ == '__main__':"):]
  assert re.search(r'\n  cli\.start\(main\b', main_block), module


@pytest.mark.slow  # A Python (and JAX) start-up per command.
def test_help_exits_0():
  # Side by side: each mostly waits on its imports.
  runs = {(module, flag): subprocess.Popen(
      [sys.executable, '-m', module, flag], cwd=REPO, text=True,
      stdout=subprocess.PIPE, stderr=subprocess.PIPE)
          for module, flag in (('resnet_jax.main', '--help'),
                               ('resnet_jax.main', '-?'),
                               ('resnet_jax.curves', '--helpfull'))}
  for (module, flag), process in runs.items():
    stdout, stderr = process.communicate(timeout=300)
    assert process.returncode == 0, (module, flag, stderr[-2000:])
    assert 'flags:' in stdout, (module, stdout[-2000:])


def test_the_torch_benchmark_without_torch_says_so_in_one_line():
  # As if PyTorch (an optional extra) were not installed.
  code = ("import runpy, sys; sys.modules['torch'] = None; "
          "sys.argv = ['torch_benchmark']; "
          "runpy.run_module('experiments.torch_benchmark', run_name='__main__')")
  result = subprocess.run([sys.executable, '-c', code], cwd=REPO, text=True,
                          capture_output=True, timeout=120)
  assert result.returncode == 1
  assert result.stderr.splitlines() == [
      "error: PyTorch is not installed; install the comparison's extra with "
      "pip install -e '.[torch]'"]
