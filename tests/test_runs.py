"""Several steps per call and several runs per program (runs.py).

k steps per call must give the run k = 1 gives, and run i of r runs the run
of seed + i. On a CPU the steps and runs of a call are written out in one
program (experiment.py), which XLA schedules together: the same arithmetic,
rounded in another order, so these match to float32 rounding (1e-7 relative
after 12 steps here), checked with a 1e-5 bound. A different seed or step
differs by far more; a kill or SIGTERM resume is bit for bit (test_train.py).
"""

import os
import weakref

import jax
import numpy as np
import pytest

import fake_cifar
from configs import smoke
from resnet_jax.run import checkpoints, experiment, parallel, runs, train
from resnet_jax.run.metric_writer import scalars

# Timings and the like, which differ between any two runs.
NOT_REPRODUCIBLE = ('wall_seconds', 'total_wall_seconds',
                    'train_images_per_second', 'steps_this_run')


def _config(**overrides):
  # 12 steps, 5 per epoch of fake_cifar's 90 training images; logs, evaluations
  # and checkpoints at steps that 5 does not divide.
  config = smoke.get_config()
  config.data.data_dir = fake_cifar.data_dir()
  config.update(num_train_steps=12, log_every_steps=3, eval_every_steps=6,
                checkpoint_every_steps=4, compilation_cache_dir='')
  config.update(overrides)
  return config


def _train(workdir, **overrides):
  config = _config(**overrides)
  summary = train.train_and_evaluate(config, str(workdir))
  exp = experiment.build(config, dp=parallel.DataParallel('jit'),
                         image_shape=(32, 32, 3))
  with checkpoints.Checkpointer(
      os.path.join(workdir, 'checkpoints'),
      metadata=exp.checkpoint_metadata(training=False)) as checkpointer:
    state = jax.device_get(checkpointer.restore(exp.abstract_state()))
  return state, summary


def _arrays(state):
  return (state.step, state.params, state.batch_stats, state.opt_state)


def _max_relative(a, b):
  """The largest difference of two trees' leaves, relative to each leaf's
  largest magnitude."""
  return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y)))
             for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b))
             if np.max(np.abs(y)) > 0)


def _same(got, want):
  jax.tree.map(lambda x, y: np.testing.assert_allclose(x, y, rtol=1e-5,
                                                       atol=1e-7), got, want)


def _watch_calls(monkeypatch, programs=True):
  """Records every training call the trainer makes, as it makes it.

  Each record: the call's first step, the shape (steps, runs) of the metric
  sums the compiled call returned, and (with `programs`) for the first call
  of each run built, the program it traces (a jaxpr): what proves that k
  steps, r runs, vmap or the loops really ran, where the numbers alone would
  match without them.
  """
  # A set of ids would miss a run whose Experiment reuses a freed one's id.
  calls, seen = [], weakref.WeakSet()
  original = experiment.Experiment.train_steps

  def train_steps(exp, state, batches, first_step):
    program = None
    if programs and exp not in seen:  # Before the call: it donates state.
      seen.add(exp)
      program = jax.make_jaxpr(exp._compiled_train_steps)(  # pylint: disable=protected-access
          state, batches, exp._augment_keys, np.int32(first_step),  # pylint: disable=protected-access
          *exp._train_data).jaxpr  # pylint: disable=protected-access
    state, sums = original(exp, state, batches, first_step)
    calls.append(dict(first=first_step, shape=sums['loss'].shape,
                      program=program))
    return state, sums

  monkeypatch.setattr(experiment.Experiment, 'train_steps', train_steps)
  return calls


def _equations(jaxpr):
  """(primitive name, params) of every equation of a jaxpr, nested included."""
  for eqn in jaxpr.eqns:
    yield eqn.primitive.name, eqn.params
    for param in eqn.params.values():
      for sub in param if isinstance(param, (tuple, list)) else (param,):
        sub = getattr(sub, 'jaxpr', sub)  # A closed jaxpr's own.
        if hasattr(sub, 'eqns'):
          yield from _equations(sub)


def _scan_lengths(jaxpr):
  return [params['length'] for name, params in _equations(jaxpr)
          if name == 'scan']


def test_k_steps_per_call_train_the_run_of_one_step_per_call(tmp_path,
                                                             monkeypatch):
  calls = _watch_calls(monkeypatch, programs=False)
  one, one_summary = _train(tmp_path / 'k1')
  one_calls = [call['shape'] for call in calls]
  del calls[:]
  five, five_summary = _train(tmp_path / 'k5', steps_per_call=5)

  # The calls really were up to 5 steps long, ending where something is due
  # (logs every 3, evaluations every 6, checkpoints every 4, the end at 12):
  # the numbers below would match with one step per call too.
  due = sorted({s for s in range(1, 13) if s % 3 == 0 or s % 4 == 0} | {12})
  ends = [0] + due
  assert [call['shape'] for call in calls] == [
      (b - a, 1) for a, b in zip(ends, ends[1:])]
  assert [call['first'] for call in calls] == ends[:-1]
  assert one_calls == [(1, 1)] * 12

  _same(_arrays(five), _arrays(one))
  drop = NOT_REPRODUCIBLE + ('steps_per_call',)
  assert five_summary.keys() == one_summary.keys()
  for key in five_summary.keys() - set(drop):
    got, want = five_summary[key], one_summary[key]
    if key == 'runs':
      got, want = got[0], want[0]
    assert got == (pytest.approx(want, rel=1e-5)
                   if isinstance(want, (float, dict)) else want), key
  # Logged at the same steps, with the same values.
  logged = lambda workdir: {key: value for key, value in scalars(
      workdir).items() if key[0] != 'steps_per_second'}
  assert logged(tmp_path / 'k5') == pytest.approx(logged(tmp_path / 'k1'),
                                                  rel=1e-5)
  # Saved at the same steps: the newest two and the best validation (6 or 12).
  kept = lambda workdir: sorted(os.listdir(workdir / 'checkpoints'))
  assert {'8', '12'} <= set(kept(tmp_path / 'k5'))
  assert kept(tmp_path / 'k5') == kept(tmp_path / 'k1')


# shard_map: per-run collectives over 8 devices (pmap's are the same, and
# the resume tests run pmap; jit has none).
@pytest.mark.slow
@pytest.mark.parametrize('parallelism', ['shard_map'])
def test_run_i_of_r_runs_is_the_run_of_seed_plus_i(tmp_path, parallelism):
  together, summary = _train(tmp_path / 'runs', num_runs=3, steps_per_call=2,
                             parallelism=parallelism, num_train_steps=6)
  alone, alone_summary = _train(tmp_path / 'seed2', seed=2,
                                parallelism=parallelism, num_train_steps=6)

  _same(_arrays(runs.take(together, 2)), _arrays(runs.take(alone, 0)))
  assert summary['runs'][2] == pytest.approx(alone_summary['runs'][0])
  assert alone_summary['runs'][0] == {'seed': 2, **{k: alone_summary[k] for k in (
      'final_val_accuracy', 'final_val_loss', 'test_accuracy', 'test_loss')}}
  accuracies = [run['test_accuracy'] for run in summary['runs']]
  assert summary['test_accuracy'] == pytest.approx(np.mean(accuracies))
  assert summary['test_accuracy_std'] == pytest.approx(
      np.std(accuracies, ddof=1))
  assert summary['num_runs'] == 3
  # Each run's curves in its own folder, for TensorBoard.
  for i in range(3):
    assert scalars(tmp_path / 'runs' / f'run_{i}')
  assert not (tmp_path / 'seed2' / 'run_0').exists()


@pytest.mark.slow
def test_vmapped_runs_match_their_single_runs_to_float32_rounding(
    tmp_path, monkeypatch):
  # One step: XLA computes the vmapped convolutions as grouped ones, in
  # another order, so they differ by rounding (2e-6 relative after a step).
  # Training amplifies any difference: the smoke run, 16 images a step,
  # takes rounding-level differences (jit against pmap) to 2e-3 in the
  # momentum at step 2 and 4e-2 at step 12; one step keeps it at rounding.
  calls = _watch_calls(monkeypatch)
  together, _ = _train(tmp_path / 'runs', num_runs=2, vectorize_runs=True,
                       num_train_steps=1)
  # vmap ran: the runs' convolutions are one grouped convolution (a group
  # per run), and no loop over the runs is left; the loop's program (the
  # default) would give the same numbers to rounding.
  call, = calls
  assert call['shape'] == (1, 2)
  groups = [params['feature_group_count'] for name, params in _equations(
      call['program']) if name == 'conv_general_dilated']
  assert 2 in groups, groups
  assert not _scan_lengths(call['program'])
  alone, _ = _train(tmp_path / 'seed1', seed=1, num_train_steps=1)
  other_seed = runs.take(together, 0)

  got, want = _arrays(runs.take(together, 1)), _arrays(runs.take(alone, 0))
  assert _max_relative(got[1:], want[1:]) < 1e-4
  assert _max_relative(_arrays(other_seed)[1:], want[1:]) > 0.1


def test_each_run_has_its_own_initialisation(tmp_path):
  exp = experiment.build(_config(num_runs=2), dp=parallel.DataParallel('jit'),
                         image_shape=(32, 32, 3))
  state = exp.init_state()
  single = experiment.build(_config(seed=1), dp=parallel.DataParallel('jit'),
                            image_shape=(32, 32, 3)).init_state()
  jax.tree.map(np.testing.assert_array_equal, runs.take(state.params, 1),
               runs.take(single.params, 0))
  assert not np.array_equal(
      runs.take(state.params, 0)['stem_conv']['kernel'],
      runs.take(state.params, 1)['stem_conv']['kernel'])


@pytest.mark.slow
def test_the_scanned_and_mapped_loops_of_accelerators_train_the_same_run(
    tmp_path, monkeypatch):
  # CPUs write the loops out (experiment.py); GPUs and TPUs run lax.scan over
  # the steps and lax.map over the runs. Forced here on the CPU, where it is
  # slow, it must train the same runs. The smoke run amplifies rounding to
  # ~1e-3 by step 2 (jit against pmap, same run: 2.2e-3), so the bound is
  # 1e-2; a wrong batch, key or run differs by more than 0.1.
  small = dict(num_runs=2, steps_per_call=2, num_train_steps=2,
               log_every_steps=2, eval_every_steps=2, checkpoint_every_steps=2,
               parallelism='jit')
  calls = _watch_calls(monkeypatch)
  written_out, summary = _train(tmp_path / 'written_out', **small)
  monkeypatch.setattr(experiment.Experiment, '_unroll_loops',
                      property(lambda self: False))
  looped, looped_summary = _train(tmp_path / 'looped', **small)

  # One call of 2 steps and 2 runs each; the loops were written out in the
  # first program and are a loop over the runs (length 2) around a scan over
  # the steps (length 2) in the second: the numbers alone would match if
  # the second wrote them out too.
  assert [call['shape'] for call in calls] == [(2, 2), (2, 2)]
  assert _scan_lengths(calls[0]['program']) == []
  assert _scan_lengths(calls[1]['program']) == [2, 2]

  assert _max_relative(_arrays(looped)[1:], _arrays(written_out)[1:]) < 1e-2
  assert _max_relative(_arrays(runs.take(looped, 0))[1:],
                       _arrays(runs.take(written_out, 1))[1:]) > 0.1
  for got, want in zip(looped_summary['runs'], summary['runs']):
    assert got == pytest.approx(want, rel=1e-2)
