"""Releasing one run's weights (experiments/release.py) and loading them."""

import json
import shutil

import numpy as np
import orbax.checkpoint as ocp
import pytest

from experiments import release
from resnet_jax import evaluate
from resnet_jax import inference
from test_evaluate import run_module, train_smoke_run
from test_pretrained import check_release, recorded


@pytest.fixture(name='run_dir', scope='module')
def fixture_run_dir(tmp_path_factory):
  # The run of test_evaluate.py (two runs, seeds 0 and 1), trained once.
  return train_smoke_run(tmp_path_factory.getbasetemp() / 'smoke_run')


@pytest.fixture(name='released', scope='module')
def fixture_released(run_dir, tmp_path_factory):
  out = tmp_path_factory.mktemp('release') / 'smoke'
  result = run_module('experiments.release', f'--workdir={run_dir}',
                      '--run=1', f'--out={out}',
                      '--data_note=Fake CIFAR-10 of the tests.')
  assert result.returncode == 0, result.stderr[-3000:]
  assert result.stdout.startswith('released run 1 (seed 1), step 4, of ')
  return out


@pytest.mark.slow
def test_a_release_holds_one_runs_config_weights_and_a_readme(released):
  config = json.loads((released / 'config.json').read_text())
  assert (config['num_runs'], config['seed']) == (1, 1)
  step_dir = released / 'checkpoints' / '4'
  assert [p.name for p in (released / 'checkpoints').iterdir()] == ['4']
  tree = ocp.StandardCheckpointer().metadata(step_dir / 'state').item_metadata
  assert set(tree) == {'step', 'params', 'batch_stats'}  # No opt_state.
  metadata = json.loads((step_dir / 'metadata' / 'metadata').read_text())
  assert metadata[inference.WEIGHTS_ONLY] is True
  assert metadata['class_names'][0] == 'airplane'
  # Every file but the README, with its sha256 in the README's table.
  files = {p.relative_to(released).as_posix(): p
           for p in released.rglob('*') if p.is_file()}
  table = recorded(released)['hashes']
  assert set(table) == set(files) - {'README.md'}
  assert 'config.json' in table
  for path, digest in table.items():
    assert release.sha256(files[path]) == digest
  text = (released / 'README.md').read_text()
  assert 'ResNet-8' in text and 'seed 1' in text
  assert 'Fake CIFAR-10 of the tests.' in text
  assert '--config=configs/smoke.py' in text  # The training command.
  assert '--config.num_runs=2' in text
  assert 'python -m experiments.release' in text


@pytest.mark.slow
def test_the_readme_records_what_the_release_gives_and_a_test_checks_it(
    released, tmp_path):
  figures = recorded(released)
  assert (figures['examples'], figures['split']) == (10, 'validation')
  result = evaluate.run(str(shutil.copytree(released, tmp_path / 'copy')),
                        split='validation', num_misclassified=0)
  assert figures['correct'] == round(result['accuracy'] * 10)
  check_release(released)
  # A README that records one image more, a file changed: the check fails.
  for path, old, new in (
      ('README.md', f'CPU check: {figures["correct"]} of',
       f'CPU check: {figures["correct"] + 1} of'),
      ('config.json', '"eval_batch_size": 40', '"eval_batch_size": 20')):
    tampered = shutil.copytree(released, tmp_path / f'tampered_{path}')
    text = (tampered / path).read_text()
    assert old in text
    (tampered / path).write_text(text.replace(old, new))
    with pytest.raises(AssertionError):
      check_release(tampered)


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
    release.release(str(run_dir), str(full))
  with pytest.raises(ValueError, match='no run 2 in .*0..1'):
    release.release(str(run_dir), str(tmp_path / 'a'), run=2)
  empty = tmp_path / 'empty'
  empty.mkdir()
  (empty / 'config.json').write_text((run_dir / 'config.json').read_text())
  with pytest.raises(ValueError, match='no checkpoint in'):
    release.release(str(empty), str(tmp_path / 'b'))
  assert not (tmp_path / 'a').exists() and not (tmp_path / 'b').exists()
  # On the command line: one line, status 1.
  result = run_module('experiments.release', f'--workdir={run_dir}',
                      f'--out={full}')
  assert result.returncode == 1
  assert 'Traceback' not in result.stderr
  assert result.stderr.strip().splitlines()[-1] == (
      f'error: --out={full} exists and is not empty; releases go to a new '
      'directory')
