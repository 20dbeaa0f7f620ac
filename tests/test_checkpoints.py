"""Tests of checkpoints.py: what a resumed run gets back and what it refuses."""

import shutil

import jax
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
import pytest

from resnet_jax.core import models
from resnet_jax.core import steps
from resnet_jax.run import checkpoints


def _run_metadata(depth=8, dataset='cifar10'):
  # A tuple, as a config gives it: it must still match its JSON copy (a list).
  return {'model': {'name': 'resnet', 'depth': depth}, 'dataset': dataset,
          'num_classes': 10, 'image_shape': (32, 32, 3)}


def _fresh_state(depth=8):
  return steps.create_train_state(
      jax.random.key(0), models.ResNet(depth=depth),
      optax.sgd(0.1, momentum=0.9), (32, 32, 3))


def _trained(state, seed=1):
  """`state` as after some training: every float array random, step 123."""
  rng = np.random.default_rng(seed)

  def perturb(x):
    if not jnp.issubdtype(jnp.result_type(x), jnp.floating):
      return x
    return jnp.asarray(rng.standard_normal(jnp.shape(x)).astype(x.dtype))

  return jax.tree.map(perturb, state).replace(step=jnp.asarray(123, jnp.int32))


def _assert_identical(restored, saved):
  for name in ('step', 'params', 'batch_stats', 'opt_state'):
    got, want = getattr(restored, name), getattr(saved, name)
    assert jax.tree.structure(got) == jax.tree.structure(want), name
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
      np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=name)


def _steps_on_disk(directory):
  return sorted(int(p.name) for p in directory.iterdir() if p.name.isdigit())


def _snapshot(directory):
  """Every path under `directory` with its mtime: any write changes it."""
  return {str(p.relative_to(directory)): p.stat().st_mtime_ns
          for p in [directory, *directory.rglob('*')]}


@pytest.fixture(scope='module')
def fresh():
  return _fresh_state()


@pytest.fixture(scope='module')
def trained(fresh):
  return _trained(fresh)


@pytest.fixture
def open_checkpointer(tmp_path):
  """Opens Checkpointers on tmp_path/checkpoints; closes them afterwards."""
  opened = []

  def open_(*, metadata=None, keep=3, directory=None):
    ckpt = checkpoints.Checkpointer(
        directory or tmp_path / 'checkpoints', keep=keep,
        metadata=metadata or _run_metadata())
    opened.append(ckpt)
    return ckpt

  yield open_
  for ckpt in opened:
    ckpt.close()


def test_restore_in_a_new_checkpointer_is_bit_identical(
    open_checkpointer, fresh, trained):
  writer = open_checkpointer()
  writer.save(123, trained)
  writer.close()

  restored = open_checkpointer().restore(fresh)

  _assert_identical(restored, trained)
  assert restored.step == 123
  for got, want in zip(jax.tree.leaves(restored), jax.tree.leaves(fresh)):
    assert jnp.result_type(got) == jnp.result_type(want)
  # The static parts come from the target: the state can step on.
  assert restored.apply_fn is fresh.apply_fn and restored.tx is fresh.tx


def test_the_newest_are_kept(open_checkpointer, tmp_path, trained):
  ckpt = open_checkpointer(keep=2)

  for step in (2, 4, 6):
    ckpt.save(step, trained)
  ckpt.wait_until_finished()

  assert _steps_on_disk(tmp_path / 'checkpoints') == [4, 6]
  assert ckpt.latest_step() == 6
  assert open_checkpointer().latest_step() == 6


def test_save_is_unconditional_and_once_per_step(
    open_checkpointer, tmp_path, fresh, trained):
  ckpt = open_checkpointer()

  ckpt.save(7, trained)
  ckpt.save(7, fresh)  # Already saved: kept as it was.
  ckpt.wait_until_finished()

  assert _steps_on_disk(tmp_path / 'checkpoints') == [7]
  _assert_identical(open_checkpointer().restore(fresh), trained)


def test_empty_directory_restores_nothing_and_writes_nothing(
    open_checkpointer, tmp_path, fresh):
  ckpt = open_checkpointer()

  assert ckpt.latest_step() is None
  ckpt.check_compatible()
  assert ckpt.restore(fresh) is fresh
  assert not (tmp_path / 'checkpoints').exists()


@pytest.mark.parametrize(
    'changes, expected',
    [({'depth': 14}, 'model.depth: checkpoint 8, this run 14'),
     ({'dataset': 'cifar100'},
      'dataset: checkpoint "cifar10", this run "cifar100"')])
def test_incompatible_checkpoints_are_refused_and_left_untouched(
    open_checkpointer, tmp_path, fresh, trained, changes, expected):
  directory = tmp_path / 'checkpoints'
  writer = open_checkpointer()
  writer.save(5, trained)
  writer.close()
  before = _snapshot(directory)

  ckpt = open_checkpointer(metadata=_run_metadata(**changes))
  target = _fresh_state(depth=14) if 'depth' in changes else fresh
  for attempt in (ckpt.check_compatible, lambda: ckpt.restore(target),
                  lambda: ckpt.save(10, target)):
    with pytest.raises(checkpoints.IncompatibleCheckpointError) as error:
      attempt()
    message = str(error.value)
    assert expected in message
    assert str(directory) in message and '--workdir' in message
    assert '\n' not in message
  ckpt.wait_until_finished()

  assert _snapshot(directory) == before


def test_checkpoints_without_run_metadata_are_never_restored(
    open_checkpointer, tmp_path, fresh, trained):
  directory = tmp_path / 'checkpoints'
  with ocp.CheckpointManager(directory) as foreign:
    foreign.save(5, args=ocp.args.Composite(
        state=ocp.args.StandardSave(trained)))

  # Nothing says whose they are: unreadable, like a damaged one.
  with pytest.raises(checkpoints.UnreadableCheckpointError,
                     match=r'no readable checkpoint .*step 5: '):
    open_checkpointer().restore(fresh)


def test_replicated_state_restores_into_the_same_sharding(
    open_checkpointer, fresh, trained):
  replicated = NamedSharding(Mesh(np.array(jax.devices()), ('batch',)), P())
  assert len(jax.devices()) == 8
  writer = open_checkpointer()
  writer.save(123, jax.device_put(trained, replicated))
  writer.close()
  reader = open_checkpointer()

  restored = reader.restore(jax.device_put(fresh, replicated))

  _assert_identical(restored, trained)
  for leaf in jax.tree.leaves(restored):
    assert leaf.sharding == replicated
  # The target decides the layout: a one-device run can resume it too.
  single = reader.restore(jax.device_put(fresh, jax.devices()[0]))
  _assert_identical(single, trained)
  for leaf in jax.tree.leaves(single.params):
    assert leaf.sharding.device_set == {jax.devices()[0]}


def test_state_may_be_discarded_as_soon_as_save_returns(
    open_checkpointer, fresh):
  # The trainer donates the state to the next step while the write goes on.
  state = _trained(fresh, seed=2)
  expected = jax.tree.map(np.array, state)
  ckpt = open_checkpointer()

  ckpt.save(123, state)
  jax.tree.map(lambda x: x.delete(), state)
  ckpt.wait_until_finished()

  _assert_identical(ckpt.restore(fresh), expected)


def test_interrupted_save_is_not_taken_for_a_checkpoint(
    open_checkpointer, tmp_path, fresh, trained):
  directory = tmp_path / 'checkpoints'
  writer = open_checkpointer()
  writer.save(123, trained)
  writer.close()
  # What a crash part-way through writing step 200 leaves behind.
  partial = directory / '200.orbax-checkpoint-tmp' / 'state'
  partial.mkdir(parents=True)
  (partial / 'manifest.ocdbt').write_bytes(b'\0' * 10)

  reader = open_checkpointer()

  assert reader.latest_step() == 123
  _assert_identical(reader.restore(fresh), trained)


def test_relative_directory_is_resolved(
    open_checkpointer, tmp_path, monkeypatch, fresh, trained):
  monkeypatch.chdir(tmp_path)
  ckpt = open_checkpointer(directory='relative/checkpoints')

  ckpt.save(123, trained)
  ckpt.wait_until_finished()

  assert _steps_on_disk(tmp_path / 'relative' / 'checkpoints') == [123]
  _assert_identical(ckpt.restore(fresh), trained)


def _largest_array_file(step_dir):
  return max((p for p in (step_dir / 'state').rglob('*') if p.is_file()),
             key=lambda p: p.stat().st_size)


def _flip_bytes(step_dir):
  # One bit of an array's value: Orbax 0.12.8 restores it, wrong, without
  # complaint (the fingerprint catches it).
  path = _largest_array_file(step_dir)
  data = bytearray(path.read_bytes())
  data[len(data) // 2] ^= 1
  path.write_bytes(bytes(data))


def _truncate(step_dir):
  path = _largest_array_file(step_dir)
  path.write_bytes(path.read_bytes()[:100])


def _garble_fingerprint(step_dir):
  (step_dir / 'fingerprint' / 'metadata').write_text('{"sha256": "0')


@pytest.mark.parametrize('damage', [_flip_bytes, _truncate, _garble_fingerprint])
def test_a_damaged_latest_checkpoint_falls_back_to_the_previous_one(
    open_checkpointer, tmp_path, fresh, trained, caplog, damage):
  directory = tmp_path / 'checkpoints'
  older, newer = _trained(fresh, seed=3), trained
  writer = open_checkpointer(keep=3)
  writer.save(4, older)
  writer.save(6, newer)
  writer.close()
  damage(directory / '6')

  reader = open_checkpointer(keep=3)
  restored = reader.restore(fresh)

  _assert_identical(restored, older)
  assert reader.unreadable_steps == [6]
  warning, = [r.getMessage() for r in caplog.records
              if r.levelname == 'WARNING' and 'unreadable' in r.getMessage()]
  assert warning.startswith('Checkpoint 6 in ') and 'previous one' in warning
  # Nothing is moved until the trainer tidies, before it saves.
  assert _steps_on_disk(directory) == [4, 6]


def test_tidy_moves_unreadable_checkpoints_aside_and_never_deletes_good_ones(
    open_checkpointer, tmp_path, fresh, trained):
  directory = tmp_path / 'checkpoints'
  writer = open_checkpointer(keep=2)
  writer.save(4, trained)
  writer.save(6, trained)
  writer.close()
  _flip_bytes(directory / '6')
  (directory / '8.orbax-checkpoint-tmp-123').mkdir()  # An interrupted write.

  ckpt = open_checkpointer(keep=2)
  ckpt.restore(fresh)
  ckpt.tidy()
  # Resumed from 4, the run saves 6 again, then 8: with keep=2 the bad 6 must
  # not be one of the two kept, and the good 4 goes only when 6 and 8 exist.
  ckpt.save(6, trained)
  ckpt.wait_until_finished()
  assert _steps_on_disk(directory) == [4, 6]
  ckpt.save(8, trained)
  ckpt.wait_until_finished()

  assert _steps_on_disk(directory) == [6, 8]
  assert not list(directory.glob('*tmp*'))
  aside, = (tmp_path / checkpoints.UNREADABLE_DIR).iterdir()
  assert aside.name.startswith('6-')
  _assert_identical(open_checkpointer().restore(fresh), trained)


def test_no_readable_checkpoint_is_an_error_naming_each(
    open_checkpointer, tmp_path, fresh, trained):
  directory = tmp_path / 'checkpoints'
  writer = open_checkpointer()
  writer.save(4, trained)
  writer.save(6, trained)
  writer.close()
  _truncate(directory / '4')
  _flip_bytes(directory / '6')
  before = _snapshot(directory)

  with pytest.raises(checkpoints.UnreadableCheckpointError) as error:
    open_checkpointer().restore(fresh)

  message = str(error.value)
  assert 'step 6: ' in message and 'step 4: ' in message
  assert '\n' not in message
  assert _snapshot(directory) == before


def test_restore_a_chosen_step(open_checkpointer, fresh, trained):
  older = _trained(fresh, seed=3)
  writer = open_checkpointer()
  writer.save(4, older)
  writer.save(6, trained)
  writer.close()
  reader = open_checkpointer()

  _assert_identical(reader.restore(fresh, step=4), older)
  with pytest.raises(checkpoints.UnreadableCheckpointError,
                     match=r'no checkpoint of step 5 .* \[4, 6\]'):
    reader.restore(fresh, step=5)


def test_the_best_checkpoint_is_kept_beyond_the_newest(
    open_checkpointer, tmp_path, trained):
  ckpt = open_checkpointer(keep=2)
  for step, accuracy in [(2, 0.5), (4, 0.9), (6, None), (8, 0.7), (10, None)]:
    ckpt.save(step, trained, val_accuracy=accuracy)
  ckpt.wait_until_finished()

  assert _steps_on_disk(tmp_path / 'checkpoints') == [4, 8, 10]
  assert ckpt.best_step() == 4
  assert open_checkpointer().best_step() == 4  # Read back from the disk.


def test_progress_is_saved_with_each_checkpoint(open_checkpointer, trained):
  ckpt = open_checkpointer()
  progress = {'train_sums': {'loss': 1 / 3, 'count': 16.0}, 'best': [4, 0.25]}

  ckpt.save(5, trained, progress=progress)
  ckpt.save(6, trained)
  ckpt.wait_until_finished()

  reader = open_checkpointer()
  _, saved = reader.restore(trained, step=5, with_progress=True)
  assert saved == progress  # Floats exactly, through JSON.
  assert reader.restore(trained, step=6, with_progress=True)[1] == {}
  assert reader.restore(trained, with_progress=True)[1] == {}  # The newest.


def test_fingerprint_covers_every_value_and_dtype(fresh, trained):
  assert checkpoints.fingerprint(trained) == checkpoints.fingerprint(
      jax.tree.map(np.array, trained))
  changed = trained.replace(params=jax.tree.map(
      lambda x: x.at[(0,) * x.ndim].add(1e-7), trained.params))
  assert checkpoints.fingerprint(changed) != checkpoints.fingerprint(trained)
  as_bf16 = trained.replace(params=jax.tree.map(
      lambda x: x.astype(jnp.bfloat16), trained.params))
  assert checkpoints.fingerprint(as_bf16) != checkpoints.fingerprint(trained)


def test_checkpoints_written_before_fingerprints_still_restore(
    open_checkpointer, tmp_path, fresh, trained):
  # As the first release wrote them: state and metadata only.
  with ocp.CheckpointManager(tmp_path / 'checkpoints') as old:
    old.save(5, args=ocp.args.Composite(
        state=ocp.args.StandardSave(trained),
        metadata=ocp.args.JsonSave(_run_metadata())))

  reader = open_checkpointer()

  _assert_identical(reader.restore(fresh), trained)
  assert reader.stored_metadata(5) == checkpoints._normalise(_run_metadata())


def _swap_fingerprint(step_dir, saved, other):
  """Makes `step_dir`'s fingerprint item hold `other`'s digest, not `saved`'s.

  The JSON stays valid and the arrays intact, so Orbax reads everything back
  without complaint: only the fingerprint check can notice (the damages above
  may fail inside Orbax first).
  """
  path = step_dir / 'fingerprint' / 'metadata'
  digest, wrong = checkpoints.fingerprint(saved), checkpoints.fingerprint(other)
  assert digest in path.read_text() and wrong != digest
  path.write_text(path.read_text().replace(digest, wrong))


def test_a_fingerprint_mismatch_is_caught_after_orbax_reads_the_arrays(
    open_checkpointer, tmp_path, fresh, trained, caplog):
  directory = tmp_path / 'checkpoints'
  writer = open_checkpointer()
  writer.save(6, trained)
  writer.close()
  _swap_fingerprint(directory / '6', trained, fresh)

  with pytest.raises(checkpoints.UnreadableCheckpointError) as error:
    open_checkpointer().restore(fresh)
  assert ('step 6: ValueError: its arrays do not match the fingerprint '
          'written with them') in str(error.value)

  # With an older good checkpoint, restore falls back to it for this reason.
  older = _trained(fresh, seed=3)
  writer = open_checkpointer(directory=tmp_path / 'two')
  writer.save(4, older)
  writer.save(6, trained)
  writer.close()
  _swap_fingerprint(tmp_path / 'two' / '6', trained, fresh)
  caplog.clear()

  reader = open_checkpointer(directory=tmp_path / 'two')
  _assert_identical(reader.restore(fresh), older)
  assert reader.unreadable_steps == [6]
  warning, = [r.getMessage() for r in caplog.records
              if r.levelname == 'WARNING' and 'unreadable' in r.getMessage()]
  assert 'do not match the fingerprint' in warning


# ----------------------------------------------------------------------------
# Damage to any file of a checkpoint, not only its arrays.

_DAMAGES = {
    'delete': lambda path: path.unlink(),
    'empty': lambda path: path.write_bytes(b''),
    'garbage': lambda path: path.write_bytes(
        np.random.default_rng(0).bytes(max(path.stat().st_size, 64))),
}


@pytest.fixture(scope='module')
def two_checkpoints(tmp_path_factory, fresh):
  """Steps 3 and 6 of a run (6 with a validation accuracy), as the trainer
  writes them: metadata with a 'training' part, so fingerprints are due."""
  directory = tmp_path_factory.mktemp('two') / 'checkpoints'
  metadata = _run_metadata() | {'training': {'seed': 0}}
  states = {step: _trained(fresh, seed=step).replace(
      step=jnp.asarray(step, jnp.int32)) for step in (3, 6)}
  with checkpoints.Checkpointer(directory, keep=3, metadata=metadata) as ckpt:
    for step, state in states.items():
      ckpt.save(step, state, progress={'step': step},
                val_accuracy=0.5 if step == 6 else None)
  return directory, metadata, states


def _cases(step_dir):
  files = sorted(p.relative_to(step_dir) for p in step_dir.rglob('*')
                 if p.is_file())
  folders = sorted(p.relative_to(step_dir) for p in step_dir.rglob('*')
                   if p.is_dir())
  return ([(f, damage) for f in files for damage in _DAMAGES] +
          [(f, 'remove folder') for f in folders])


def test_damage_to_any_file_of_a_checkpoint_falls_back_or_restores_it_intact(
    tmp_path, fresh, two_checkpoints, caplog):
  source, metadata, states = two_checkpoints
  cases = _cases(source / '6')
  # Orbax writes a varying number of files per step (25 to 30 seen here, run
  # to run: OCDBT's asynchronous writes), so the guard that every kind of
  # file is damaged is a floor below that, not an exact count.
  assert len(cases) > 40
  outcomes = {}
  for i, (relative, damage) in enumerate(cases):
    directory = tmp_path / str(i) / 'checkpoints'
    shutil.copytree(source, directory)
    path = directory / '6' / relative
    if damage == 'remove folder':
      shutil.rmtree(path)
    else:
      _DAMAGES[damage](path)
    caplog.clear()

    with checkpoints.Checkpointer(directory, keep=3,
                                  metadata=metadata) as ckpt:
      state, progress = ckpt.restore(fresh, with_progress=True)
      step = int(state.step)
      # Never another state than the one saved, never a traceback.
      assert step in (3, 6)
      _assert_identical(state, states[step])
      assert progress == {'step': step}
      if step == 3:
        assert ckpt.unreadable_steps == [6], (relative, damage)
        assert 'Checkpoint 6 in ' in caplog.text, (relative, damage)
        ckpt.tidy()  # Moves 6 aside; the run goes on saving.
        ckpt.save(7, states[6], progress={'step': 7})
        ckpt.wait_until_finished()
        assert _steps_on_disk(directory) == [3, 7]
        assert len(list((directory.parent / checkpoints.UNREADABLE_DIR)
                        .iterdir())) == 1
    outcomes.setdefault(f'restored {step}', []).append(f'{relative} {damage}')
  # What each case came to, for the record (pytest -s shows it).
  for outcome, which in sorted(outcomes.items()):
    print(f'{outcome}: {len(which)} cases: {", ".join(which)}')
  assert len(outcomes['restored 3']) > 30  # Most damage is caught.


def test_an_empty_step_folder_is_skipped_not_a_reason_to_refuse(
    tmp_path, fresh, two_checkpoints):
  source, metadata, states = two_checkpoints
  directory = tmp_path / 'checkpoints'
  shutil.copytree(source, directory)
  (directory / '9').mkdir()

  with checkpoints.Checkpointer(directory, keep=3, metadata=metadata) as ckpt:
    state = ckpt.restore(fresh)
    assert int(state.step) == 6 and ckpt.unreadable_steps == [9]


def test_a_damaged_metrics_file_is_skipped_by_trainers_and_readers(
    tmp_path, fresh, two_checkpoints):
  source, metadata, states = two_checkpoints
  directory = tmp_path / 'checkpoints'
  shutil.copytree(source, directory)
  (directory / '6' / 'metrics' / 'metrics').write_text('{"val_acc')

  with checkpoints.Checkpointer(directory, metadata={},
                                read_only=True) as reader:
    with pytest.raises(checkpoints.UnreadableCheckpointError,
                       match=r'the metrics of steps \[6\] are damaged'):
      reader.best_step()
    assert int(reader.restore(fresh).step) == 3
  with checkpoints.Checkpointer(directory, keep=3, metadata=metadata) as ckpt:
    assert int(ckpt.restore(fresh).step) == 3
    ckpt.tidy()
    assert ckpt.best_step() is None  # 6, the only one with metrics, is aside.
    ckpt.save(4, states[6], val_accuracy=0.25)
    ckpt.wait_until_finished()
    assert ckpt.best_step() == 4


def test_non_finite_bfloat16_values_are_caught_too(open_checkpointer):
  ckpt = open_checkpointer()
  ckpt.save(2, {'w': jnp.zeros(3, jnp.bfloat16)})
  ckpt.save(4, {'w': jnp.full(3, jnp.nan, jnp.bfloat16)})
  ckpt.wait_until_finished()

  reader = open_checkpointer()
  restored = reader.restore({'w': jnp.ones(3, jnp.bfloat16)})
  assert not restored['w'].any() and reader.unreadable_steps == [4]


def test_a_restored_state_with_non_finite_values_is_never_trained_on(
    open_checkpointer, tmp_path, fresh, trained):
  ckpt = open_checkpointer()
  ckpt.save(2, trained)
  broken = jax.tree.map(lambda x: x * np.nan if jnp.issubdtype(
      jnp.result_type(x), jnp.floating) else x, trained)
  ckpt.save(4, broken)  # Its fingerprint matches: the values are as saved.
  ckpt.wait_until_finished()

  reader = open_checkpointer()
  assert int(reader.restore(fresh).step) == 123  # Step 2's state.
  assert reader.unreadable_steps == [4]


def test_a_step_asked_for_that_vanishes_before_its_metadata_is_named(
    open_checkpointer, tmp_path, trained):
  writer = open_checkpointer()
  writer.save(4, trained)
  writer.save(6, trained)
  writer.close()
  reader = open_checkpointer()
  assert reader.all_steps() == [4, 6]
  shutil.rmtree(tmp_path / 'checkpoints' / '4')  # A trainer's cleanup.

  with pytest.raises(checkpoints.UnreadableCheckpointError,
                     match='checkpoint 4 in .* was deleted while it was read'):
    reader.stored_metadata(4)
  assert reader.stored_metadata()['dataset'] == 'cifar10'
