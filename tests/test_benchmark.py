"""experiments/benchmark.py runs every input mode and reports its figures."""

import json
import re
import subprocess
import sys

import pytest

from trainer_process import REPO

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
  # Nothing about other platforms on a CPU (JAX's INFO lines said it looked
  # for a TPU).
  assert not re.search(r'\btpu\b', result.stdout + result.stderr, re.I)
  figures = json.loads(result.stdout.strip().splitlines()[-1])
  for key in ('model', 'batch_size', 'dtype', 'input', 'devices',
              'train_images_per_second', 'eval_images_per_second',
              'compile_seconds', 'peak_memory_mb'):
    assert key in figures, key
  assert figures['input'] == input_mode and figures['model'] == 'resnet8'
  assert figures['train_images_per_second'] > 0
  assert figures['loop_steps'] == 3 and figures['loop_images_per_second'] > 0
  assert figures['epoch_images'] == 64  # 4 steps of 16.


def test_kernels_are_sorted_by_what_they_compute():
  from experiments import benchmark  # pylint: disable=g-import-not-at-top
  # Names as an H200 trace shows them (cuDNN 9, XLA's fusions).
  kinds = {
      'sm90_xmma_wgrad_indexed_implicit_gemm_f32f32_tf32f32_f32': 'conv weight grad',
      'sm90_xmma_dgrad_implicit_gemm_f32f32_tf32f32_f32_nhwckrsc': 'conv data grad',
      'sm80_xmma_fprop_implicit_gemm_indexed_bf16bf16_bf16f32': 'conv forward',
      'void wgrad_alg0_engine_NHWC<float, 128, 5, 5, 3, 3, 3>': 'conv weight grad',
      'void cudnn::engines_precompiled::convertTensor_kernel': 'gemm / other cuDNN',
      'input_reduce_fusion_83': 'reduction (batch norm, loss)',
      'loop_add_fusion_6': 'fusion (elementwise)',
      'Memset (Device)': 'copy / memset',
      'some_new_kernel': 'other'}
  assert {n: benchmark.kernel_kind(n) for n in kinds} == kinds


def test_a_trace_without_gpu_kernels_gives_no_summary(tmp_path):
  import jax  # pylint: disable=g-import-not-at-top
  from experiments import benchmark  # pylint: disable=g-import-not-at-top
  assert benchmark.trace_summary(str(tmp_path), steps=1) is None  # No trace.
  with jax.profiler.trace(str(tmp_path)):
    jax.block_until_ready(jax.numpy.ones(3) * 2)
  assert benchmark.trace_summary(str(tmp_path), steps=1) is None  # CPU only.
