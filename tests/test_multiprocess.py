"""Several processes train as one: multi-host, tested with local processes.

Two processes on this machine, each with two CPU devices, joined by
jax.distributed over Gloo, train the smoke config: the result is the one of a
single process with four devices and the same global batch (up to the
all-reduce's summation order), and a preempted pair resumes to exactly the
end of an uninterrupted pair.
"""

import json
import socket
import subprocess

import jax
import numpy as np
import pytest

from cli import REPO, cli_command, run_cli
from test_train import restore_params
from configs import smoke

STEPS = 6
COMMON = ('--config=configs/smoke.py', '--config.parallelism=shard_map',
          '--config.compilation_cache_dir=')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_two_processes(workdir, *flags, fault=None, timeout=300):
  address = f'127.0.0.1:{_free_port()}'
  processes = []
  for process_id in range(2):
    command, env = cli_command(
        *COMMON, *flags, f'--workdir={workdir}', '--config.cpu_devices=2',
        '--config.distributed.enabled=True',
        f'--config.distributed.coordinator_address={address}',
        '--config.distributed.num_processes=2',
        f'--config.distributed.process_id={process_id}', fault=fault,
        own_devices=True)
    processes.append(subprocess.Popen(
        command, cwd=REPO, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True))
  outputs = []
  try:
    for process in processes:
      outputs.append(process.communicate(timeout=timeout))
  finally:
    for process in processes:  # One failing leaves the other waiting.
      process.kill()
  return [(p.returncode, err) for p, (_, err) in zip(processes, outputs)]


def test_two_processes_train_like_one_process_with_as_many_devices(tmp_path):
  steps = f'--config.num_train_steps={STEPS}'
  results = _run_two_processes(tmp_path / 'two', steps)
  for returncode, stderr in results:
    assert returncode == 0, stderr[-3000:]
  single = run_cli(*COMMON, steps, f'--workdir={tmp_path / "one"}',
                   '--config.cpu_devices=4', own_devices=True)
  assert single.returncode == 0, single.stderr[-3000:]

  assert 'on 4 device(s), shard_map' in results[0][1]
  assert 'on 4 device(s), shard_map' in single.stderr
  config = smoke.get_config()
  two = restore_params(tmp_path / 'two', config)
  one = restore_params(tmp_path / 'one', config)
  assert int(two[0]) == int(one[0]) == STEPS
  # The same program over the same devices; only the all-reduce differs
  # (Gloo between processes), which may sum in another order.
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5,
                                                       atol=1e-6), two, one)
  # Process 0 alone writes the run's files; both wrote the checkpoints.
  summary = json.loads((tmp_path / 'two' / 'summary.json').read_text())
  assert summary['steps'] == STEPS and summary['batch_size'] == 16
  assert sorted(p.name for p in (tmp_path / 'two' / 'checkpoints').iterdir()
                if p.name.isdigit()) == ['3', '6']


def test_two_processes_preempted_then_rerun_end_bit_identical(tmp_path):
  # Long enough for JAX's preemption sync point, a few steps after the
  # signal, to fall inside the run.
  steps = '--config.num_train_steps=10'
  results = _run_two_processes(tmp_path / 'straight', steps)
  assert [code for code, _ in results] == [0, 0], results[0][1][-3000:]
  # SIGTERM reaches both processes at step 4 (as a TPU pod's maintenance
  # event does); the sync point picks a step that both save.
  results = _run_two_processes(tmp_path / 'preempted', steps,
                               fault='term@batch:4')
  assert [code for code, _ in results] == [143, 143], results[0][1][-3000:]
  saved = [line for line in results[0][1].splitlines()
           if 'preempted: saved a checkpoint at step' in line]
  assert len(saved) == 1, results[0][1][-3000:]
  step = int(saved[0].split('at step ')[1].split(';')[0].split()[0])
  assert 4 <= step < 10

  results = _run_two_processes(tmp_path / 'preempted', steps)

  assert [code for code, _ in results] == [0, 0], results[0][1][-3000:]
  assert f'Resuming from the checkpoint of step {step}.' in results[0][1]
  config = smoke.get_config()
  jax.tree.map(np.testing.assert_array_equal,
               restore_params(tmp_path / 'preempted', config),
               restore_params(tmp_path / 'straight', config))
