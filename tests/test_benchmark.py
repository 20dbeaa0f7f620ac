"""experiments/benchmark.py runs every input mode and reports its figures."""

import json
import subprocess
import sys

import pytest

from cli import REPO

# Runs the benchmark, then fails if anything imported TensorFlow.
NO_TENSORFLOW = '''
import runpy, sys
sys.argv = ['benchmark'] + sys.argv[1:]
try:
  runpy.run_module('experiments.benchmark', run_name='__main__')
finally:
  assert 'tensorflow' not in sys.modules, 'TensorFlow was imported'
'''


@pytest.mark.slow
@pytest.mark.parametrize('input_mode', ['host', 'device'])
def test_the_benchmark_reports_every_figure_without_tensorflow(input_mode):
  result = subprocess.run(
      [sys.executable, '-c', NO_TENSORFLOW, '--config=configs/smoke.py',
       '--config.batch_size=16', f'--input={input_mode}', '--warmup_steps=1',
       '--timed_steps=2', '--loop_steps=3', '--num_examples=64'],
      cwd=REPO, capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-3000:]
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  for key in ('model', 'batch_size', 'dtype', 'input', 'devices',
              'train_images_per_second', 'eval_images_per_second',
              'compile_seconds', 'peak_memory_mb'):
    assert key in figures, key
  assert figures['input'] == input_mode and figures['model'] == 'resnet8'
  assert figures['train_images_per_second'] > 0
  assert figures['loop_steps'] == 3 and figures['loop_images_per_second'] > 0
  assert figures['epoch_images'] == 64  # 4 steps of 16.
