"""What every command shares: its path flags, quiet start-up, --help that
succeeds, and one error path (`start`).

Only the commands (resnet_jax.main, evaluate, predict, curves, export and
experiments/' scripts) import it; the library raises ValueError or OSError
and never exits.
"""

import logging as python_logging
import os
import signal
import sys
import traceback

from absl import app
from absl import flags
from absl import logging

from resnet_jax import utils

# Exit status for a user's mistake (bad input), as README promises.
EXIT_ERROR = 1


class _PathParser(flags.ArgumentParser):
  """A path flag's parser: the value as typed, `expand_path`ed."""

  def parse(self, argument):
    return utils.expand_path(argument)

  def flag_type(self):
    return 'string'


def define_path(name: str, default: str | None, help_text: str, **kwargs):
  """flags.DEFINE_string for a path: its value is `expand_path`ed as it is
  parsed, default included. A key flag of the module that calls it."""
  flags.disclaim_key_flags()  # This module defines no flag of its own.
  return flags.DEFINE(_PathParser(), name, default, help_text,
                      serializer=flags.ArgumentSerializer(), **kwargs)


def define_selection_flags(ensemble: bool = True) -> None:
  """Defines --workdir (required), --checkpoint, --run and --ensemble: what
  `inference.load` loads, once for evaluate, predict, export and release."""
  flags.disclaim_key_flags()  # Key flags of the caller, not of this module.
  define_path('workdir', None, 'A workdir written by resnet_jax.main, '
              'or a release (pretrained/...).')
  flags.DEFINE_string('checkpoint', 'latest', "'latest', 'best' or a step.")
  flags.DEFINE_integer('run', 0, "Which of the workdir's runs: run i is the "
                       'run of seed config.seed + i.')
  if ensemble:
    flags.DEFINE_bool('ensemble', False, "The mean of all runs' logits "
                      'instead of one run.')
  flags.mark_flag_as_required('workdir')


def selection_from_flags() -> dict:
  """What those flags chose, as `inference.load`'s keyword arguments."""
  names = ('workdir', 'checkpoint', 'run', 'ensemble')
  return {name: flags.FLAGS[name].value for name in names
          if name in flags.FLAGS}


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
    field = utils.one_line(' '.join(map(str, missing.args)))
    return f'the config has no field {field}; check the --config.* overrides'
  return utils.one_line(error)


def fail(message) -> None:
  """Ends the command with `error: <message>` (a str or an error), status 1."""
  print(f'error: {utils.one_line(message)}', file=sys.stderr, flush=True)
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
  an OSError (`utils.os_error`: the file system's, not a bug); Ctrl-C that
  it does not handle (the trainer does) with one line and status 130. It
  ends at once: background threads (Orbax's writers) may wait forever on work
  that failed, and must not keep it alive.
  """

  def guarded(argv):
    try:
      return main(argv)
    except (ValueError, OSError) as e:
      logging.debug('Failed:', exc_info=True)  # The traceback with -v 1.
      fail(utils.os_error(e) if isinstance(e, OSError) else e)
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
