"""Small helpers for every module: paths, errors as one line, nested dicts.

It imports nothing of the project and no absl flags, so any module may use it.
"""

import os
from typing import Any


def expand_path(path: str | None) -> str | None:
  """`path` with a leading `~` or `~user` made the home folder, as a shell
  would (it does not after `--flag=`); URLs (gs://...) and None unchanged."""
  if not path or '://' in path:
    return path
  return os.path.expanduser(path)


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


def os_error(error: OSError) -> str:
  """An OSError (a full disk, a name too long, no permission) in one line:
  the file or files it names, then the system's reason, as `cp` says it."""
  files = ' -> '.join(str(f) for f in (error.filename, error.filename2)
                      if f is not None)
  reason = error.strerror or one_line(error, named=True)
  return f'{files}: {reason}' if files else reason
