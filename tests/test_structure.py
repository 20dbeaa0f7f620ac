"""The package's arrows: how its modules import one another.

Read from the sources (every import, those inside functions too): the chain
of imports is short and has no cycle, each wing imports only the wings below
it (core/ nothing, data/ utils, run/ no read/, read/ no training loop), no
library module imports a command or the command-line plumbing (cli), the
training loop draws no picture, one module builds a run's schedule, one
names a release's files and one summary.json, and a release predicts
without the training side's libraries.

A module is named by its path in the package: 'main', 'core.models',
'run.train'.
"""

import ast
import functools
import os
import pathlib
import subprocess
import sys

PACKAGE = pathlib.Path(__file__).resolve().parents[1] / 'resnet_jax'
MAX_LEVELS = 6
WINGS = ('core', 'data', 'run', 'read')
# What a released model's prediction must not import (issue 32).
TRAINING_SIDE = ('matplotlib', 'orbax', 'optax', 'tensorflow', 'clu')


def _name(path: pathlib.Path) -> str:
  """'run.train' for resnet_jax/run/train.py; a wing's __init__.py is 'run',
  the package's own '__init__'."""
  parts = path.relative_to(PACKAGE).with_suffix('').parts
  if parts[-1] == '__init__' and len(parts) > 1:
    parts = parts[:-1]
  return '.'.join(parts)


def _trees() -> dict[str, ast.Module]:
  return {_name(p): ast.parse(p.read_text()) for p in PACKAGE.rglob('*.py')}


def _imports(tree: ast.Module) -> set[str]:
  """Every module `tree` imports, anywhere: 'resnet_jax.x' for the package's."""
  found = set()
  for node in ast.walk(tree):
    if isinstance(node, ast.Import):
      found |= {a.name for a in node.names}
    elif isinstance(node, ast.ImportFrom) and node.module:
      found.add(node.module)
      if node.module.split('.')[0] == 'resnet_jax':
        found |= {f'{node.module}.{a.name}' for a in node.names}
  return found


def _arrows() -> dict[str, set[str]]:
  """Module -> the package's modules it imports (a wing's empty __init__.py,
  imported on the way, is no arrow)."""
  trees = _trees()
  modules = {name for name in trees if name not in WINGS}
  return {name: {m.removeprefix('resnet_jax.') for m in _imports(tree)} &
          modules - {name} for name, tree in trees.items()}


def _commands() -> set[str]:
  """The modules run as programs (`python -m resnet_jax.<name>`)."""
  return {name for name, tree in _trees().items()
          if "if __name__ == '__main__'" in ast.unparse(tree)}


def test_the_import_chain_is_short_and_has_no_cycle():
  arrows = _arrows()

  @functools.cache
  def level(name, path=()):
    assert name not in path, f'an import cycle: {" -> ".join(path + (name,))}'
    return 1 + max((level(m, path + (name,)) for m in arrows[name]),
                   default=0)

  levels = {name: level(name) for name in arrows}
  assert max(levels.values()) <= MAX_LEVELS, sorted(
      levels.items(), key=lambda item: -item[1])


def test_each_wing_imports_only_what_is_below_it():
  # core/: nothing else of the project; data/: utils; run/: never read/ or a
  # command; read/: never a command or the training loop. cli is the
  # commands' (test_only_commands_import_the_command_line_plumbing).
  commands = _commands()
  may_not = {
      'core': lambda m: not m.startswith('core.'),
      'data': lambda m: not m.startswith('data.') and m != 'utils',
      'run': lambda m: m.startswith('read.') or m in commands,
      'read': lambda m: m == 'run.train' or m in commands,
  }
  arrows = _arrows()
  assert {name.split('.')[0] for name in arrows} >= set(WINGS)
  wrong = {name: sorted(filter(may_not[name.split('.')[0]], imported))
           for name, imported in arrows.items()
           if name.split('.')[0] in may_not}
  wrong = {name: imported for name, imported in wrong.items() if imported}
  assert not wrong, wrong


def test_no_library_module_imports_a_command():
  commands = _commands()
  assert {'main', 'evaluate', 'predict', 'curves', 'export'} <= commands
  wrong = {name: sorted(imported & commands)
           for name, imported in _arrows().items()
           if name not in commands and imported & commands}
  assert not wrong, wrong


def test_only_commands_import_the_command_line_plumbing():
  # cli (flags, --help, exit statuses) is the commands'; the library raises
  # and never parses flags. utils, which any module may use, imports nothing
  # of the project and no absl flags.
  commands, arrows, trees = _commands(), _arrows(), _trees()
  wrong = sorted(name for name, imported in arrows.items()
                 if 'cli' in imported and name not in commands)
  assert not wrong, wrong
  absl_flags = lambda node: (
      isinstance(node, ast.ImportFrom) and node.module == 'absl' and
      {a.name for a in node.names} & {'flags', 'app'}) or (
          isinstance(node, ast.Import) and
          {a.name for a in node.names} & {'absl.flags', 'absl.app'})
  flag_users = sorted(name for name, tree in trees.items()
                      if name not in commands | {'cli'} and
                      any(absl_flags(node) for node in ast.walk(tree)))
  assert not flag_users, flag_users
  assert not arrows['utils'], arrows['utils']


def test_the_training_loop_draws_no_picture():
  imported = _imports(_trees()['run.train'])
  assert 'resnet_jax.read.report' not in imported
  assert not {m for m in imported if m.startswith('matplotlib')}


def test_one_module_builds_a_runs_schedule():
  builders = sorted(
      name for name, tree in _trees().items()
      if name != 'core.schedules' and
      'create_learning_rate_fn' in ast.unparse(tree))
  assert builders == ['run.config_checks']


def test_one_module_names_a_releases_files_and_one_the_summary():
  # Every other module uses the names these two define (issue 32).
  # release.json is named in run/workdir.py, which refuses to train into a
  # release and may not import read/; release_format takes it from there.
  homes = {'release.json': 'run.workdir',
           'weights.safetensors': 'read.release_format',
           'weights.msgpack': 'read.release_format',
           'summary.json': 'run.workdir'}
  named = sorted({(node.value, name) for name, tree in _trees().items()
                  for node in ast.walk(tree) if isinstance(node, ast.Constant)
                  and isinstance(node.value, str) and node.value in homes})
  assert named == sorted(homes.items())


def test_a_release_predicts_without_the_training_side():
  script = (
      'import sys, numpy as np, resnet_jax\n'
      'model = resnet_jax.pretrained("resnet20")\n'
      'print(model.predict(np.zeros((2, 32, 32, 3), np.uint8)))\n'
      f'print(sorted({{m.split(".")[0] for m in sys.modules}} & '
      f'{set(TRAINING_SIDE)!r}))\n')
  env = os.environ | {'PYTHONPATH': os.pathsep.join(
      [str(PACKAGE.parent), os.environ.get('PYTHONPATH', '')])}
  result = subprocess.run([sys.executable, '-c', script], env=env,
                          cwd=PACKAGE.parent, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  predictions, imported = result.stdout.splitlines()[-2:]
  assert predictions.startswith('['), result.stdout
  assert imported == '[]', imported


def test_only_augment_reads_the_augmentation_fields():
  """A new augmentation touches augment.py and defaults.py: augment.py reads
  its fields from config.data, handed over whole, and no other module names
  them but config_checks.py (crop_padding's rule with the image side)."""
  trees = _trees()
  fields = {node.attr for node in ast.walk(trees['core.augment'])
            if isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name) and node.value.id == 'data'}
  assert {'crop_padding', 'random_flip'} <= fields, fields
  readers = {name for name, tree in trees.items()
             if name not in ('core.augment', 'run.config_checks') and any(
                 isinstance(node, ast.Attribute) and node.attr in fields
                 for node in ast.walk(tree))}
  assert not readers, readers
