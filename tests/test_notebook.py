"""docs/quickstart.ipynb runs from top to bottom, as a notebook user runs it.

Its code cells run in order as one script in a fresh process, headless
(matplotlib's Agg backend), from the repository root: a release loaded, its
predictions and confusion matrix, and a small training run.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest

from cli import REPO

NOTEBOOK = REPO / 'docs' / 'quickstart.ipynb'
# What the notebook writes, removed before and after.
WRITES = [REPO / 'runs' / 'notebook-smoke', REPO / 'runs' / 'notebook-images']


@pytest.mark.slow
def test_the_quickstart_notebook_runs_headless():
  notebook = json.loads(NOTEBOOK.read_text())
  cells = [''.join(cell['source']) for cell in notebook['cells']
           if cell['cell_type'] == 'code']
  assert all(not line.lstrip().startswith(('!', '%'))
             for cell in cells for line in cell.splitlines())
  for path in WRITES:
    shutil.rmtree(path, ignore_errors=True)
  try:
    result = subprocess.run(
        [sys.executable, '-c', '\n\n'.join(cells)], cwd=REPO,
        capture_output=True, text=True, timeout=240,
        env={**os.environ, 'MPLBACKEND': 'Agg'})
    assert result.returncode == 0, result.stderr[-3000:]
    assert 'accuracy on these 500 images: ' in result.stdout
    accuracy = float(result.stdout.split('accuracy on these 500 images: ')[1]
                     .split('%')[0])
    assert accuracy > 80
    assert '"steps": 6' in result.stdout
    assert (WRITES[0] / 'curves.png').exists()
  finally:
    for path in WRITES:
      shutil.rmtree(path, ignore_errors=True)
