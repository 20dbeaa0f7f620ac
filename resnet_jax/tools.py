"""What every command does: quiet start-up and one error path (`start`).

It imports nothing of the project, so every module may use its helpers.
"""

import logging as python_logging
import os
import signal
import sys
import traceback
from typing import Any

from absl import app
from absl import flags
from absl import logging

# Exit status for a user's mistake (bad input), as README promises.
EXIT_ERROR = 1


def expand_path(path: str | None) -> str | None:
  """`path` with a leading `~` or `~user` made the home folder, as a shell
  would (it does not after `--flag=`); URLs (gs://...) and None unchanged."""
  if not path or '://' in path:
    return path
  return os.path.expanduser(path)


class _PathParser(flags.ArgumentParser):
  """A path flag's parser: the value as typed, `expand_path`ed."""

  def parse(self, argument):
    return expand_path(argument)

  def flag_type(self):
    return 'string'


def define_path(name: str, default: str | None, help_text: str, **kwargs):
  """flags.DEFINE_string for a path: its value is `expand_path`ed as it is
  parsed, default included. A key flag of the module that calls it."""
  flags.disclaim_key_flags()  # This module defines no flag of its own.
  return flags.DEFINE(_PathParser(), name, default, help_text,
                      serializer=flags.ArgumentSerializer(), **kwargs)


def one_line(error, limit: int | None = None, named: bool = False) -> str:
  """An error's message (or any text) with its whitespace folded: one line.

  Cut to `limit` characters, '...' included, when longer; after its type's
  name (`named`) where the type says more than the message (a library's).
  """
  text = ' '.join(str(error).split())
  if limit is not None and len(text) > limit:
    text = text[:limit - 3] + '...'
  return f'{type(error).__name__}: {text}' if named else text


def flatten(tree, prefix: str = '') -> dict[str, Any]:
  """Nested dicts as {'a.b': leaf}, so that a message names the exact field.

  An empty dict below the top is a leaf: a field whose value is {}.
  """
  if isinstance(tree, dict) and (tree or not prefix):
    flat = {}
    for key, value in tree.items():
      flat.update(flatten(value, f'{prefix}{key}.'))
    return flat
  return {prefix[:-1]: tree}


def config_error(error: Exception, config_file: str | None = None) -> str:
  """One line for an error of ml_collections loading --config (`config_file`)
  or --config.*: the cause it wraps (no get_config, no such field)."""
  chain = [error]
  while (inner := (chain[-1].__cause__ or chain[-1].__context__ or next(
      (a for a in chain[-1].args if isinstance(a, Exception)), None))
         ) and inner not in chain:
    chain.append(inner)
  if any(isinstance(e, AttributeError) and 'get_config' in str(e)
         for e in chain):
    return f'--config={config_file} has no get_config() function'
  missing = next((e for e in chain if isinstance(e, KeyError)), None)
  if missing:  # ml_collections' message: the field and a hint.
    field = one_line(' '.join(map(str, missing.args)))
    return f'the config has no field {field}; check the --config.* overrides'
  return one_line(error)


def os_error(error: OSError) -> str:
  """An OSError (a full disk, a name too long, no permission) in one line:
  the file or files it names, then the system's reason, as `cp` says it."""
  files = ' -> '.join(str(f) for f in (error.filename, error.filename2)
                      if f is not None)
  reason = error.strerror or one_line(error, named=True)
  return f'{files}: {reason}' if files else reason


def fail(message) -> None:
  """Ends the command with `error: <message>` (a str or an error), status 1."""
  print(f'error: {one_line(message)}', file=sys.stderr, flush=True)
  sys.exit(EXIT_ERROR)


class _QuietLibraries(python_logging.Filter):
  """Keeps the console to our own lines: libraries speak up only to warn."""
  NOISY = ('/orbax/', '/tensorflow_datasets/', '/jax/', '/matplotlib/')

  def filter(self, record):
    return (record.levelno >= python_logging.WARNING or
            not any(path in record.pathname for path in self.NOISY))


def quiet_start(default_verbosity: int | None = None) -> None:
  """Silences TensorFlow's C++ banners and libraries' INFO lines, and sets
  `default_verbosity`, unless --verbosity was given."""
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')  # Before any TF import.
  python_logging.getLogger('matplotlib').setLevel(python_logging.ERROR)
  if flags.FLAGS['verbosity'].present:
    return
  logging.get_absl_handler().addFilter(_QuietLibraries())
  if default_verbosity is not None:
    logging.set_verbosity(default_verbosity)


def _help_succeeds() -> None:
  """Makes --help (-?, --helpshort, --helpfull, --helpxml) exit with status 0,
  not absl's 1, which scripts and CI read as a failure."""
  app.define_help_flags()  # Idempotent; app.run would define them.
  for name in ('help', 'helpshort', 'helpfull', 'helpxml'):
    flag = flags.FLAGS[name]
    if getattr(flag, 'exits_zero', False):
      continue

    def parse(argument, parse=flag.parse):
      try:
        parse(argument)
      except SystemExit:  # The help was printed.
        sys.stdout.flush()
        raise SystemExit(0) from None

    flag.parse, flag.exits_zero = parse, True


def start(main, **kwargs) -> None:
  """`absl.app.run(main)` through the project's one error path.

  A ValueError in `main` ends it with `error: ...` and status 1, and so does
  an OSError (`os_error`: the file system's, not a bug); Ctrl-C that it does
  not handle (the trainer does) with one line and status 130. It ends
  at once: background threads (Orbax's writers) may wait forever on work
  that failed, and must not keep it alive.
  """

  def guarded(argv):
    try:
      return main(argv)
    except (ValueError, OSError) as e:
      logging.debug('Failed:', exc_info=True)  # The traceback with -v 1.
      fail(os_error(e) if isinstance(e, OSError) else e)
    except KeyboardInterrupt:
      print('error: interrupted (Ctrl-C)', file=sys.stderr, flush=True)
      sys.exit(128 + signal.SIGINT)

  _help_succeeds()
  try:
    app.run(guarded, **kwargs)
  except SystemExit as e:
    if e.code in (None, 0):
      raise
    status = e.code if isinstance(e.code, int) else EXIT_ERROR
  except BaseException:  # pylint: disable=broad-except
    traceback.print_exc()  # A bug, not bad input: show where.
    status = EXIT_ERROR
  logging.flush()
  sys.stdout.flush()
  sys.stderr.flush()
  os._exit(status)  # pylint: disable=protected-access
