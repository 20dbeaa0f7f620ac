"""Regenerates requirements-lock.txt: both ends of pyproject.toml's ranges.

  python experiments/lock.py [--python-new=python3.13] [--python-old=python3.11]

Newest: a fresh Python 3.13 environment installs `-e '.[test]'` at the newest
versions the ranges admit. Oldest: a fresh Python 3.11 environment installs
the lock's current Python 3.11 pins (the lower bounds) with `-e '.[test]'`,
which adds only what a new dependency needs. The two `pip freeze` outputs are
merged line by line: a version both share is pinned once, the others carry
an environment marker (`python_version >= "3.12"` or `< "3.12"`). Raising a
lower bound: edit its `< "3.12"` pin here first.
"""

import argparse
import pathlib
import re
import subprocess
import sys
import tempfile

REPO = pathlib.Path(__file__).resolve().parents[1]
LOCK = REPO / 'requirements-lock.txt'
NEW, OLD = 'python_version >= "3.12"', 'python_version < "3.12"'
HEADER = '''\
# Exact versions the tests pass with (Linux x86-64), at both ends of
# pyproject.toml's ranges: the newest releases for Python 3.12+ (tested on
# 3.13), the lower bounds for Python 3.11. Every package the library and its
# test extra need, from `pip freeze`:
#   pip install -r requirements-lock.txt -e '.[test]'
# Regenerate with `python experiments/lock.py` (see there).
'''


def pins(text: str, marker: str | None = None) -> dict[str, str]:
  """{name: 'name==version'} of freeze lines (those for `marker` only)."""
  result = {}
  for line in text.splitlines():
    requirement, _, line_marker = line.partition(';')
    requirement = requirement.strip()
    if not requirement or requirement.startswith(('#', '-')):
      continue
    if marker and line_marker.strip() not in ('', marker):
      continue
    name = re.split(r'[=<>!~ ]', requirement)[0]
    result[re.sub(r'[-_.]+', '-', name).lower()] = requirement
  return result


def freeze(python: str, requirements: list[str]) -> str:
  """`pip freeze` of a fresh environment of `python` with `requirements`."""
  with tempfile.TemporaryDirectory() as venv:
    subprocess.run([python, '-m', 'venv', venv], check=True)
    pip = [f'{venv}/bin/python', '-m', 'pip']
    subprocess.run(pip + ['install', '-q', '--upgrade', 'pip'], check=True)
    subprocess.run(pip + ['install', '-q', *requirements, '-e', '.[test]'],
                   check=True, cwd=REPO)
    return subprocess.run(pip + ['freeze', '--exclude-editable'], check=True,
                          capture_output=True, text=True).stdout


def merge(new: dict[str, str], old: dict[str, str]) -> str:
  lines = []
  for name in sorted(new.keys() | old.keys()):
    if new.get(name) == old.get(name):
      lines.append(new[name])
      continue
    if name in new:
      lines.append(f'{new[name]}; {NEW}')
    if name in old:
      lines.append(f'{old[name]}; {OLD}')
  return HEADER + '\n'.join(lines) + '\n'


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--python-new', default='python3.13')
  parser.add_argument('--python-old', default='python3.11')
  args = parser.parse_args()
  with tempfile.NamedTemporaryFile('w', suffix='.txt') as lower_bounds:
    lower_bounds.write('\n'.join(pins(LOCK.read_text(), OLD).values()))
    lower_bounds.flush()
    old = freeze(args.python_old, ['-r', lower_bounds.name])
  new = freeze(args.python_new, [])
  LOCK.write_text(merge(pins(new), pins(old)))
  print(f'wrote {LOCK}', file=sys.stderr)


if __name__ == '__main__':
  main()
