"""Releasing one run's weights (releases.release, experiments/release.py)
and loading them."""

import hashlib
import json
import shutil

import flax.serialization
import numpy as np
import pytest

from cli import run_module
from resnet_jax import evaluate
from resnet_jax import inference
from resnet_jax import releases


@pytest.fixture(name='released', scope='session')
def fixture_released(run_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp('release') / 'smoke'
  result = run_module('experiments.release', f'--workdir={run_dir}',
                      '--run=1', f'--out={out}',
                      '--data_note=Fake CIFAR-10 of the tests.')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith('released run 1 (seed 1), step 4, of ')
  assert result.stdout.splitlines()[1].startswith('CPU check: ')
  return out


@pytest.mark.slow
def test_a_release_holds_one_runs_config_weights_and_a_manifest(run_dir,
                                                                 released):
  config = json.loads((released / 'config.json').read_text())
  assert (config['num_runs'], config['seed']) == (1, 1)
  # No generated README: release.json is the manifest, read as JSON.
  assert sorted(p.name for p in released.iterdir()) == [
      'config.json', 'release.json', 'weights.msgpack']
  record = json.loads((released / 'release.json').read_text())
  assert (record['model'], record['step'], record['seed'],
          record['class_names'][0], record['data_note']) == (
              'resnet8', 4, 1, 'airplane', 'Fake CIFAR-10 of the tests.')
  assert record['released_from'] == {
      'workdir': str(run_dir), 'run': 1, 'num_runs': 2,
      'checkpoint': 'latest', 'command': 'python -m experiments.release '
      f"--workdir={run_dir} --run=1 --out={released} "
      "'--data_note=Fake CIFAR-10 of the tests.'"}
  summary = json.loads((run_dir / 'summary.json').read_text())
  assert record['validation'] == {
      'accuracy': summary['runs'][1]['final_val_accuracy'],
      'loss': summary['runs'][1]['final_val_loss'],
      'examples': summary['eval_examples']}
  # One run's weights, no optimizer state, readable by Flax alone.
  weights = flax.serialization.msgpack_restore(
      (released / 'weights.msgpack').read_bytes())
  assert set(weights) == {'params', 'batch_stats'}
  assert weights['params']['head']['kernel'].shape == (64, 10)
  assert record['weights'] == {
      'file': 'weights.msgpack',
      'bytes': (released / 'weights.msgpack').stat().st_size,
      'sha256': hashlib.sha256(
          (released / 'weights.msgpack').read_bytes()).hexdigest()}


@pytest.mark.slow
def test_the_check_holds_and_fails_on_a_changed_record(
    released, tmp_path, check_release):
  record = json.loads((released / 'release.json').read_text())
  check = record['cpu_check']
  assert (check['examples'], check['split']) == (10, 'train[90%:]')
  # Counted by evaluate, independently of the release's own count.
  result = evaluate.run(str(shutil.copytree(released, tmp_path / 'copy')),
                        split='validation', num_misclassified=0)
  assert check['correct'] == round(result['accuracy'] * 10)
  check_release(released)
  # Evaluating a release leaves its results beside it; the check still holds.
  check_release(tmp_path / 'copy')
  for name, change in (
      ('count', {'cpu_check': check | {'correct': check['correct'] + 1}}),
      ('params', {'num_params': record['num_params'] + 1})):
    tampered = shutil.copytree(released, tmp_path / f'tampered_{name}')
    (tampered / 'release.json').write_text(json.dumps(record | change))
    with pytest.raises(AssertionError):
      check_release(tampered)


@pytest.mark.slow
def test_changed_or_missing_weights_are_refused_in_one_line(released,
                                                            tmp_path):
  changed = shutil.copytree(released, tmp_path / 'changed')
  data = bytearray((changed / 'weights.msgpack').read_bytes())
  data[-1] ^= 1
  (changed / 'weights.msgpack').write_bytes(bytes(data))
  with pytest.raises(ValueError, match='weights.msgpack has sha256 .* not the '
                     '.* that release.json records'):
    inference.load(str(changed))
  for name, match in (('weights.msgpack', 'cannot read the weights'),
                      ('release.json', 'no checkpoint in')):
    missing = shutil.copytree(released, tmp_path / f'no_{name}')
    (missing / name).unlink()
    with pytest.raises(ValueError, match=match):
      inference.load(str(missing))
  result = run_module('resnet_jax.predict', f'--workdir={changed}',
                      str(tmp_path / 'x.png'))
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert 'that release.json records' in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_release_classifies_as_its_run_did(run_dir, released):
  images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3),
                                             dtype=np.uint8)
  mine, original = inference.load(str(released)), inference.load(
      str(run_dir), run=1)
  assert (mine.run, mine.seed, mine.num_runs, mine.step) == (0, 1, 1, 4)
  assert mine.class_names == original.class_names
  np.testing.assert_array_equal(mine.logits(images, batch_size=8),
                                original.logits(images, batch_size=8))

  summary = json.loads((run_dir / 'summary.json').read_text())
  result = evaluate.run(str(released), split='validation',
                        num_misclassified=2)
  assert result['seed'] == 1 and result['checkpoint_step'] == 4
  assert result['accuracy'] == evaluate.run(
      str(run_dir), split='validation', run=1,
      num_misclassified=2)['accuracy']
  assert result['accuracy'] == pytest.approx(
      summary['runs'][1]['final_val_accuracy'])


@pytest.mark.slow
def test_no_release_into_a_full_dir_of_no_run_or_of_no_checkpoint(
    run_dir, tmp_path):
  full = tmp_path / 'full'
  full.mkdir()
  (full / 'x').write_text('')
  with pytest.raises(ValueError, match='exists and is not empty'):
    releases.release(str(run_dir), str(full))
  with pytest.raises(ValueError, match='no run 2 in .*0..1'):
    releases.release(str(run_dir), str(tmp_path / 'a'), run=2)
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'config.json').write_text((run_dir / 'config.json').read_text())
  with pytest.raises(ValueError, match='no checkpoint in'):
    releases.release(str(empty), str(tmp_path / 'b'))
  assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()
  # On the command line: one line, status 1.
  result = run_module('experiments.release', f'--workdir={run_dir}',
                      f'--out={full}')
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --out={full} exists and is not empty; releases go to a new '
      'directory')
