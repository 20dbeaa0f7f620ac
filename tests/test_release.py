"""Releasing one run's weights (releases.release, experiments/release.py)
and loading them."""

import errno
import hashlib
import json
import os
import pathlib
import re
import shutil

import numpy as np
import pytest
from safetensors import numpy as safetensors_numpy

from trainer_process import run_module
from resnet_jax import evaluate
from resnet_jax.read import inference
from resnet_jax.read import release_format
from resnet_jax.read import releases


@pytest.fixture(name='released', scope='session')
def fixture_released(trained_workdir, tmp_path_factory):
  out = tmp_path_factory.mktemp('release') / 'smoke'
  result = run_module('experiments.release', f'--workdir={trained_workdir}',
                      '--run=1', f'--out={out}',
                      '--data_note=Fake CIFAR-10 of the tests.')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith('released run 1 (seed 1), step 4, of ')
  assert result.stdout.splitlines()[1].startswith('CPU check: ')
  return out


@pytest.mark.slow
def test_a_release_holds_one_runs_config_weights_and_a_manifest(trained_workdir,
                                                                released):
  config = json.loads((released / 'config.json').read_text())
  assert (config['num_runs'], config['seed']) == (1, 1)
  # No generated README: release.json is the manifest, read as JSON.
  assert sorted(p.name for p in released.iterdir()) == [
      'config.json', 'release.json', 'weights.safetensors']
  record = json.loads((released / 'release.json').read_text())
  assert (record['model'], record['step'], record['seed'],
          record['class_names'][0], record['data_note']) == (
              'resnet8', 4, 1, 'airplane', 'Fake CIFAR-10 of the tests.')
  assert record['released_from'] == {
      'workdir': str(trained_workdir), 'run': 1, 'num_runs': 2,
      'checkpoint': 'latest', 'command': 'python -m experiments.release '
      f"--workdir={trained_workdir} --run=1 --out={released} "
      "'--data_note=Fake CIFAR-10 of the tests.'"}
  summary = json.loads((trained_workdir / 'summary.json').read_text())
  assert record['validation'] == {
      'accuracy': summary['runs'][1]['final_val_accuracy'],
      'loss': summary['runs'][1]['final_val_loss'],
      'examples': summary['eval_examples']}
  # One run's weights, no optimizer state, readable without this package.
  weights = safetensors_numpy.load_file(released / 'weights.safetensors')
  assert {name.split('/')[0] for name in weights} == {'params', 'batch_stats'}
  assert weights['params/head/kernel'].shape == (64, 10)
  assert record['weights'] == {
      'file': 'weights.safetensors',
      'bytes': (released / 'weights.safetensors').stat().st_size,
      'sha256': hashlib.sha256(
          (released / 'weights.safetensors').read_bytes()).hexdigest()}


@pytest.mark.slow
def test_the_check_holds_and_fails_on_a_changed_record(
    released, tmp_path, check_release):
  record = json.loads((released / 'release.json').read_text())
  check = record['cpu_check']
  assert (check['examples'], check['split']) == (10, 'train[90%:]')
  # Counted by evaluate, independently of the release's own count.
  result = evaluate.evaluate(str(shutil.copytree(released, tmp_path / 'copy')),
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
  data = bytearray((changed / 'weights.safetensors').read_bytes())
  data[-1] ^= 1
  (changed / 'weights.safetensors').write_bytes(bytes(data))
  with pytest.raises(ValueError, match='weights.safetensors has sha256 .* not '
                     'the .* that release.json records'):
    inference.load(str(changed))
  missing = shutil.copytree(released, tmp_path / 'no_weights')
  (missing / 'weights.safetensors').unlink()
  with pytest.raises(ValueError, match='cannot read the weights'):
    inference.load(str(missing))
  result = run_module('resnet_jax.predict', f'--workdir={changed}',
                      str(tmp_path / 'x.png'))
  assert result.returncode == 1 and 'Traceback' not in result.stderr
  assert 'that release.json records' in result.stderr.strip().splitlines()[-1]


@pytest.mark.slow
def test_a_release_classifies_as_its_run_did(trained_workdir, released):
  images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3),
                                             dtype=np.uint8)
  mine, original = inference.load(str(released)), inference.load(
      str(trained_workdir), run=1)
  assert (mine.run, mine.seed, mine.num_runs, mine.step) == (0, 1, 1, 4)
  assert mine.class_names == original.class_names
  np.testing.assert_array_equal(mine.logits(images, batch_size=8),
                                original.logits(images, batch_size=8))

  summary = json.loads((trained_workdir / 'summary.json').read_text())
  result = evaluate.evaluate(str(released), split='validation',
                             num_misclassified=2)
  assert result['seed'] == 1 and result['checkpoint_step'] == 4
  assert result['accuracy'] == evaluate.evaluate(
      str(trained_workdir), split='validation', run=1,
      num_misclassified=2)['accuracy']
  assert result['accuracy'] == pytest.approx(
      summary['runs'][1]['final_val_accuracy'])


@pytest.mark.slow
def test_no_release_into_a_full_dir_of_no_run_or_of_no_checkpoint(
    trained_workdir, tmp_path):
  full = tmp_path / 'full'
  full.mkdir()
  (full / 'x').write_text('')
  with pytest.raises(ValueError, match='exists and is not empty'):
    releases.release(str(trained_workdir), str(full))
  with pytest.raises(ValueError, match='no run 2 in .*0..1'):
    releases.release(str(trained_workdir), str(tmp_path / 'a'), run=2)
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'config.json').write_text(
      (trained_workdir / 'config.json').read_text())
  with pytest.raises(ValueError, match='no checkpoint in'):
    releases.release(str(empty), str(tmp_path / 'b'))
  assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()
  # On the command line: one line, status 1.
  result = run_module('experiments.release', f'--workdir={trained_workdir}',
                      f'--out={full}')
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --out={full} exists and is not empty; releases go to a new '
      'directory')


@pytest.fixture(name='again', scope='module')
def fixture_again(tmp_path_factory):
  """The shipped ResNet-20 released again (no data here: no CPU check)."""
  out = tmp_path_factory.mktemp('again') / 'resnet20'
  releases.release(str(release_format.PRETRAINED / 'resnet20'), str(out),
                   check_split='')
  return out


def test_a_release_released_again_keeps_its_record_and_predictions(again):
  shipped = release_format.PRETRAINED / 'resnet20'
  before, after = (json.loads((d / 'release.json').read_text())
                   for d in (shipped, again))
  for field in ('step', 'seed', 'validation', 'class_names', 'data_note',
                'num_params', 'recorded'):
    assert after[field] == before[field], field
  assert after['released_from'] == before['released_from'] | {
      'released_again': after['released_from']['released_again']}
  assert after['weights']['file'] == 'weights.safetensors'
  images = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3),
                                             dtype=np.uint8)
  np.testing.assert_array_equal(
      inference.load(str(again)).logits(images, batch_size=4),
      inference.load(str(shipped)).logits(images, batch_size=4))


def _edit_json(path, change):
  path.write_text(json.dumps(change(json.loads(path.read_text()))))


def _nan_weights(release):
  """A NaN in the weights, with release.json's sha256 made to match."""
  path = release / 'weights.safetensors'
  weights = safetensors_numpy.load_file(path)
  weights['params/head/bias'][3] = np.nan
  path.write_bytes(safetensors_numpy.save(weights))
  _edit_json(release / 'release.json', lambda r: r | {'weights': r[
      'weights'] | {'sha256': hashlib.sha256(path.read_bytes()).hexdigest()}})


def _config_change(section, field, value):
  return lambda d: _edit_json(d / 'config.json', lambda c: c | {
      section: c[section] | {field: value}})


CHANGED = "changed since the release .*: it would change the predictions"
# Each damage to a release that changes what it predicts, and its one line.
DAMAGES = {
    'class names swapped': (lambda d: _edit_json(
        d / 'release.json', lambda r: r | {'class_names': [
            r['class_names'][1], r['class_names'][0], *r['class_names'][2:]]}),
                            f"the 'class_names' of .*release.json {CHANGED}"),
    'normalisation recorded': (lambda d: _edit_json(
        d / 'release.json', lambda r: r | {'recorded': {'normalization': {
            'mean': [0, 0, 0], 'std': [1, 1, 1]}}}),
                               f"the 'recorded' of .*release.json {CHANGED}"),
    'image_shape missing': (lambda d: _edit_json(
        d / 'release.json', lambda r: {
            k: v for k, v in r.items() if k != 'image_shape'}),
                            "release.json of .* lost its 'image_shape' "
                            'since the release'),
    'no sha256 recorded': (lambda d: _edit_json(
        d / 'release.json', lambda r: {
            k: v for k, v in r.items() if k != 'sha256'}),
                           'records no sha256 of its config'),
    'config normalisation': (_config_change('data', 'mean', [0., 0., 0.]),
                             f'config.json {CHANGED}'),
    'bn_epsilon': (_config_change('model', 'bn_epsilon', 1e-3),
                   f'config.json {CHANGED}'),
    'dtype': (_config_change('model', 'dtype', 'bfloat16'),
              f'config.json {CHANGED}'),
    'NaN weights, hash matching': (_nan_weights, r'weights.safetensors holds '
                                   r"NaN or infinite values \(in \['params'\]"
                                   r"\['head'\]\['bias'\]\)"),
    'release.json missing': (lambda d: (d / 'release.json').unlink(),
                             'release.json is missing: .* holds a release.s '
                             'weights.safetensors without the record'),
}


@pytest.mark.parametrize('damage', DAMAGES)
def test_each_damage_that_changes_a_prediction_is_named(again, tmp_path,
                                                        damage):
  change, message = DAMAGES[damage]
  damaged = shutil.copytree(again, tmp_path / 'damaged')
  change(damaged)
  with pytest.raises(ValueError, match=message):
    inference.load(str(damaged))


@pytest.mark.slow
def test_evaluate_predict_and_export_refuse_a_damaged_release(again,
                                                              tmp_path):
  for module, damage, args in (
      ('resnet_jax.evaluate', 'class names swapped', ['--split=validation']),
      ('resnet_jax.predict', 'NaN weights, hash matching', ['x.png']),
      ('resnet_jax.export', 'release.json missing', [
          f'--out={tmp_path}/m.jax'])):
    change, message = DAMAGES[damage]
    damaged = shutil.copytree(again, tmp_path / module)
    change(damaged)
    result = run_module(module, f'--workdir={damaged}', *args)
    assert result.returncode == 1 and 'Traceback' not in result.stderr
    assert re.search(
        message, result.stderr.strip().splitlines()[-1]), result.stderr


def test_out_is_checked_before_anything_is_written(again, tmp_path,
                                                   monkeypatch):
  source = str(release_format.PRETRAINED / 'resnet20')
  elsewhere = tmp_path / 'elsewhere'
  elsewhere.mkdir()
  (tmp_path / 'link').symlink_to(elsewhere)
  (tmp_path / 'file').write_text('mine')
  for out, message in (
      (tmp_path / 'link', 'is a symbolic link; name a new directory'),
      (tmp_path / 'file' / 'release', 'file is not a directory')):
    with pytest.raises(ValueError, match=message):
      releases.release(source, str(out), check_split='')
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'elsewhere', 'file', 'link']
  assert not list(elsewhere.iterdir())
  # A write that fails halfway (a full disk): nothing half-written stays,
  # not even the parents made for it.
  real_write = pathlib.Path.write_bytes

  def full_disk(path, data):
    if str(path).endswith('.safetensors'):
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
    return real_write(path, data)

  monkeypatch.setattr(pathlib.Path, 'write_bytes', full_disk)
  with pytest.raises(ValueError, match='cannot write the release into .*'
                     'new/release: No space left on device'):
    releases.release(source, str(tmp_path / 'new' / 'release'),
                     check_split='')
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      'elsewhere', 'file', 'link']


def test_a_tilde_in_out_means_home(tmp_path, monkeypatch):
  monkeypatch.setenv('HOME', str(tmp_path / 'home'))
  monkeypatch.chdir(tmp_path)
  (tmp_path / 'home').mkdir()
  releases.release(str(release_format.PRETRAINED / 'resnet20'), '~/mine/r20',
                   check_split='')
  assert release_format.is_release(str(tmp_path / 'home' / 'mine' / 'r20'))
  assert not (tmp_path / '~').exists()


@pytest.mark.skipif(os.geteuid() == 0, reason='root writes anywhere')
def test_an_unwritable_out_is_refused(tmp_path):
  locked = tmp_path / 'locked'
  locked.mkdir(mode=0o500)
  with pytest.raises(ValueError, match='locked is not writable'):
    releases.release(str(release_format.PRETRAINED / 'resnet20'),
                     str(locked / 'r20'), check_split='')
