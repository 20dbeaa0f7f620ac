"""Several processes train as one: multi-host, tested with local processes.

Two processes on this machine, each with two CPU devices, joined by
jax.distributed over Gloo, train the smoke config: the result is the one of a
single process with four devices and the same global batch (up to the
all-reduce's summation order), and a preempted pair resumes to exactly the
end of an uninterrupted pair, when only one of them hears SIGTERM.
"""

import json
import os
import re
import socket
import subprocess

import jax
import ml_collections
import numpy as np
import pytest

from trainer_process import REPO, cli_command, restore_params, run_cli
from configs import smoke
import fake_cifar
import oracle
from oracle import assert_float32_close
from resnet_jax.data import datasets

# Two processes, minutes on a small CPU: not in the edit loop's tier.
pytestmark = pytest.mark.slow

# 12 steps: long enough for the preemption below to fall inside the run.
STEPS = '--config.num_train_steps=12'


def common_flags() -> tuple[str, ...]:
  """Every run's flags; fake_cifar's images as an image folder: no
  TensorFlow to import (~15 s of each process)."""
  return ('--config=configs/smoke.py', '--config.parallelism=shard_map',
          '--config.compilation_cache_dir=', *fake_cifar.image_folder_flags())


def smoke_config():
  """The config of common_flags' runs (as far as restoring them needs)."""
  return fake_cifar.image_folder_config(smoke.get_config())


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


# Prepended to each process's program: records every file it opens for
# writing (or renames into place) under the workdir, through Python's audit
# hooks, so that a test sees which process wrote what. Only Python's own
# writes are seen (the logs and JSON files are; TensorStore's arrays are not).
_RECORD_WRITES = '''
import os, sys
def _record_writes(workdir, record):
  writes = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_APPEND
  def hook(event, args):
    if event == 'open':
      path, mode, flags = args
      if not (isinstance(mode, str) and set(mode) & set('wax+') or
              mode is None and flags & writes):
        return
    elif event == 'os.rename':
      path = args[1]
    else:
      return
    if isinstance(path, (str, bytes, os.PathLike)):
      path = os.path.abspath(os.fsdecode(path))
      if path.startswith(workdir + os.sep):
        with open(record, 'a') as f:
          f.write(os.path.relpath(path, workdir) + '\\n')
  sys.addaudithook(hook)
_record_writes(os.environ['TEST_WORKDIR'], os.environ['TEST_WRITES_RECORD'])
'''

# Also prepended: with TEST_AWAIT_NOTICE_AFTER=K, each batch after step K
# waits 2 s. JAX polls for SIGTERM once a second and then tells every
# process through its coordination service, so the step it picks to save
# otherwise depends on how many steps a second the machine's load allows;
# at 2 s a step it falls within a step or two of K, however fast the
# machine (public API only: no hook into JAX's notice itself).
_AWAIT_PREEMPTION_NOTICE = '''
def _pace_after(after):
  import time
  from resnet_jax.data import batching
  original = batching.train_rows
  def train_rows(*args, step, **kwargs):
    if step > after:
      time.sleep(2.0)
    return original(*args, step=step, **kwargs)
  batching.train_rows = train_rows
if os.environ.get('TEST_AWAIT_NOTICE_AFTER'):
  _pace_after(int(os.environ['TEST_AWAIT_NOTICE_AFTER']))
'''


def _run_two_processes(workdir, *flags, faults=(None, None), timeout=300,
                       await_notice_after=None):
  """Runs a pair; returns each process's (exit status, stderr, files written).

  `faults[i]` is process i's fault (see trainer_process.py); with
  `await_notice_after`, see _AWAIT_PREEMPTION_NOTICE. The files written are
  the paths, relative to `workdir`, that the process opened for writing, in
  this run only.
  """
  workdir = os.path.abspath(workdir)
  address = f'127.0.0.1:{_free_port()}'
  processes, records = [], []
  for process_id in range(2):
    command, env = cli_command(
        *common_flags(), *flags, f'--workdir={workdir}',
        '--config.cpu_devices=2',
        '--config.distributed.enabled=True',
        f'--config.distributed.coordinator_address={address}',
        '--config.distributed.num_processes=2',
        f'--config.distributed.process_id={process_id}',
        fault=faults[process_id], own_devices=True)
    assert command[1] == '-c'
    command[2] = _RECORD_WRITES + _AWAIT_PREEMPTION_NOTICE + command[2]
    record = f'{workdir}.writes-{process_id}'
    if os.path.exists(record):
      os.remove(record)  # A rerun's record holds that run's writes only.
    records.append(record)
    env.update(TEST_WORKDIR=workdir, TEST_WRITES_RECORD=record,
               TEST_AWAIT_NOTICE_AFTER=str(await_notice_after or ''))
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
  writes = [_read_lines(record) for record in records]
  return [(p.returncode, err, written)
          for p, (_, err), written in zip(processes, outputs, writes)]


def _read_lines(path):
  if not os.path.exists(path):
    return set()
  with open(path) as f:
    return set(f.read().split())


def _assert_process_0_alone_wrote_the_run_files(results, *, finished=True):
  """Process 1 writes only checkpoints; process 0 the logs and JSON too."""
  (_, _, writes0), (_, _, writes1) = results
  assert not {p for p in writes1 if not p.startswith('checkpoints/')}, writes1
  # Process 0's record shows that the hook sees these files being written.
  run_files = {'config.json', 'summary.json'} if finished else {'config.json'}
  assert run_files <= writes0, writes0
  assert any(re.fullmatch(r'events\.out\.tfevents\..*\.v2', p)
             for p in writes0), writes0


@pytest.fixture(scope='session')
def two_processes(tmp_path_factory):
  """An uninterrupted pair's workdir and results (each test reads only)."""
  workdir = tmp_path_factory.mktemp('two')
  results = _run_two_processes(workdir, STEPS)
  for returncode, stderr, _ in results:
    assert returncode == 0, stderr[-3000:]
  return workdir, results


def test_two_processes_train_like_one_process_with_as_many_devices(
    tmp_path, two_processes):
  two_dir, results = two_processes
  single = run_cli(*common_flags(), STEPS, f'--workdir={tmp_path / "one"}',
                   '--config.cpu_devices=4', own_devices=True)
  assert single.returncode == 0, single.stderr[-3000:]

  assert 'on 4 device(s), shard_map' in results[0][1]
  assert 'on 4 device(s), shard_map' in single.stderr
  config = smoke_config()
  two = restore_params(two_dir, config)
  one = restore_params(tmp_path / 'one', config)
  assert int(two[0]) == int(one[0]) == 12
  # The same program over the same devices; only the all-reduce differs
  # (Gloo between processes), which may sum in another order: 12 steps of
  # float32 sums over at most batch x height x width = 16 x 32 x 32 terms
  # in other orders (oracle.float32_atol derives the bound from the
  # magnitude of each value's terms, which a replay of the 12 steps in
  # float64 measures; rtol 1e-5 with atol 1e-6 failed on an Intel CPU by
  # 1.6e-6 on 2 of 36,864 elements). Each run is also within that bound of
  # the float64 replay: the pair agree because both are right.
  exact, scales = _float64_replay(config, 12)
  one_run = lambda tree: jax.tree.map(lambda x: np.asarray(x)[None], tree)
  exact = (12, *one_run((exact.params, exact.batch_stats, exact.opt_state)))
  scales = (0, *one_run((scales['params'], scales['batch_stats'],
                         scales['opt_state'])))
  for run in (two, one):
    assert_float32_close(run, exact, reduction_size=16 * 32 * 32,
                         num_steps=12, scales=scales)
  assert_float32_close(two, one, reduction_size=16 * 32 * 32, num_steps=12,
                       scales=scales)
  # Process 0 alone writes the run's files; both wrote the checkpoints.
  _assert_process_0_alone_wrote_the_run_files(results)
  assert len(list(two_dir.glob('events.out.tfevents.*'))) == 1
  summary = json.loads((two_dir / 'summary.json').read_text())
  assert summary['steps'] == 12 and summary['batch_size'] == 16
  kept = lambda workdir: sorted(p.name for p in (workdir / 'checkpoints')
                                .iterdir() if p.name.isdigit())
  assert {'9', '12'} <= set(kept(two_dir))  # The newest two (and the best).
  assert kept(two_dir) == kept(tmp_path / 'one')


def _float64_replay(config, num_steps):
  """The trainer's first `num_steps` steps on the data the runs above train
  on (common_flags'), replayed in float64: (state, scales), as
  oracle.float64_steps (one run's, where a checkpoint holds a stack of
  runs)."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.num_train_steps = num_steps
  ds = datasets.load_split(config.data, config.data.train_split)
  return oracle.float64_steps(config, ds, oracle.initial_state(config, ds),
                              num_steps)


def _saved_step(stderr) -> int:
  """The step a preempted process says it saved (and fails if it did not)."""
  saved = re.findall(r'preempted: saved a checkpoint at step (\d+)', stderr)
  assert len(saved) == 1, stderr[-3000:]
  return int(saved[0])


def test_two_processes_preempted_then_rerun_end_bit_identical(
    tmp_path, two_processes):
  # The steps after the signal wait for JAX to have heard of it, so the
  # sync point falls inside the run whatever the machine's load (without
  # the wait it came up to ~10 steps after the signal: seen 5 to 13).
  straight, _ = two_processes
  # With a compilation cache, as the trainer's default: processes of a
  # restarted CPU pair that read their step back from it hung in its first
  # all-reduce (JAX 0.12.1), so the trainer does not cache there.
  cache = f'--config.compilation_cache_dir={tmp_path / "xla"}'
  # SIGTERM reaches process 1 alone, at step 4: process 0 hears of it only
  # through JAX's coordination service, yet both stop at the same step and
  # both save it, so neither waits forever for the other's collectives.
  results = _run_two_processes(tmp_path / 'preempted', STEPS, cache,
                               faults=(None, 'term@batch:4'),
                               await_notice_after=4)
  assert [code for code, _, _ in results] == [143, 143], [
      err[-3000:] for _, err, _ in results]
  step = _saved_step(results[0][1])
  assert _saved_step(results[1][1]) == step
  assert 4 <= step < 12
  assert max(int(p.name) for p in (tmp_path / 'preempted' / 'checkpoints')
             .iterdir() if p.name.isdigit()) == step
  _assert_process_0_alone_wrote_the_run_files(results, finished=False)

  results = _run_two_processes(tmp_path / 'preempted', STEPS, cache)

  assert [code for code, _, _ in results] == [0, 0], results[0][1][-3000:]
  for _, stderr, _ in results:
    assert f'Resuming from the checkpoint of step {step}.' in stderr
  _assert_process_0_alone_wrote_the_run_files(results)
  config = smoke_config()
  jax.tree.map(np.testing.assert_array_equal,
               restore_params(tmp_path / 'preempted', config),
               restore_params(straight, config))
