"""Evaluating a trained run (evaluate.py, inference.py)."""

import json
import pathlib
import shutil

import numpy as np
from PIL import Image
import pytest

import fake_cifar
from trainer_process import REPO
from trainer_process import run_module
from configs import smoke
from resnet_jax import evaluate
from resnet_jax.data import datasets
from resnet_jax.read import inference
from resnet_jax.run import checkpoints
from resnet_jax.run import config_checks
from resnet_jax.run import experiment
from resnet_jax.run import parallel
from resnet_jax.run import runs


def assert_picture(path):
  with Image.open(path) as image:
    assert image.format == 'PNG'
    pixels = np.asarray(image.convert('RGB'))
  assert pixels.std() > 0
  assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 1


def snapshot(directory: pathlib.Path) -> dict:
  return {str(p.relative_to(directory)): (p.stat().st_size,
                                          p.stat().st_mtime_ns)
          for p in [directory, *directory.rglob('*')]}


# ----------------------------------------------------------------------------
# The numbers, on a fake model.

NUM_CLASSES = 3


def fake_model(batch):
  """Predicts the class written in each image's top-left pixel (red)."""
  classes = batch[:, 0, 0, 0].astype(np.int64) % NUM_CLASSES
  return 4.0 * np.eye(NUM_CLASSES, dtype=np.float32)[classes]


def images_saying(left, right):
  """2x2 images whose left column says `left`, right column `right`."""
  images = np.zeros((len(left), 2, 2, 3), np.uint8)
  images[:, :, 0, 0] = np.asarray(left)[:, None]
  images[:, :, 1, 0] = np.asarray(right)[:, None]
  return images


def test_a_fake_models_figures_match_a_hand_computed_confusion_matrix():
  labels = np.array([0, 0, 0, 1, 1, 2, 2])
  left = np.array([0, 0, 1, 1, 2, 2, 0])  # What the model says.
  right = np.array([0, 1, 0, 1, 1, 2, 2])  # What it says of the flips.
  summary, logits = inference.evaluate_images(
      fake_model, images_saying(left, right), labels, batch_size=3,
      class_names=['a', 'b', 'c'], tta=True)
  assert summary['confusion_matrix'] == [[2, 1, 0],
                                         [0, 1, 1],
                                         [1, 0, 1]]
  assert summary['num_examples'] == 7 and summary['accuracy'] == 4 / 7
  assert [c['accuracy'] for c in summary['per_class']] == [2 / 3, 1 / 2, 1 / 2]
  assert [c['precision'] for c in summary['per_class']] == [2 / 3, 1 / 2, 1 / 2]
  np.testing.assert_array_equal(logits.argmax(-1), left)
  # Flip TTA averages each image's logits with its flip's. Where the two
  # disagree the averaged logits tie, and argmax takes the lower class:
  # example 1 (0 or 1) stays 0, 2 (1 or 0) becomes 0, 4 (2 or 1) becomes 1,
  # 6 (0 or 2) stays 0.
  tta = summary['tta']
  assert tta['confusion_matrix'] == [[3, 0, 0],
                                     [0, 2, 0],
                                     [1, 0, 1]]
  assert tta['num_examples'] == 7 and tta['accuracy'] == 6 / 7


def test_every_example_is_classified_once_in_padded_batches():
  seen = []

  def model(batch):
    assert len(batch) == 4  # Padded: one compiled shape.
    seen.append(batch[:, 0, 0, 0].copy())
    return np.eye(NUM_CLASSES, dtype=np.float32)[batch[:, 0, 0, 0] % 3]

  images = images_saying(np.arange(1, 11) % 3, np.zeros(10))
  logits = inference.batched_logits(model, images, batch_size=4)
  assert len(seen) == 3 and len(logits) == 10
  np.testing.assert_array_equal(np.concatenate(seen)[:10], np.arange(1, 11) % 3)
  np.testing.assert_array_equal(np.concatenate(seen)[10:], 0)  # Padding.
  np.testing.assert_array_equal(logits.argmax(-1), np.arange(1, 11) % 3)


@pytest.mark.parametrize('split, tag', [
    ('validation', 'validation'),
    ('test', 'test'),
    ('train', 'train'),
    ('train[45000:]', 'train_45000-end'),
    ('train[:45000]', 'train_start-45000'),
    ('train[10%:20%]', 'train_10pct-20pct'),
    ('train[-500:]', 'train_minus500-end'),
])
def test_file_names_carry_the_split_in_safe_characters(split, tag):
  assert evaluate.split_tag(split) == tag


def test_the_split_names_resolve_through_the_config(cifar10_dir):
  config = smoke.get_config()
  config.data.data_dir = cifar10_dir  # Prepared: splits train and test.
  assert inference.resolve_split(config, 'validation') == 'train[90%:]'
  assert inference.resolve_split(config, 'test') == 'test'
  # A run without them: the dataset's own split of that name, if it has one.
  config.data.update(eval_split='', test_split='')
  assert inference.resolve_split(config, 'test') == 'test'
  with pytest.raises(ValueError, match="no validation split .*empty. and "
                     "cifar10 has none named 'validation'; it has no held-"):
    inference.resolve_split(config, 'validation')
  with pytest.raises(ValueError, match='--split is empty'):
    inference.resolve_split(config, ' ')
  with pytest.raises(ValueError, match='malformed split'):
    inference.resolve_split(config, 'train[1:2:3]')


def write_noise_images(split_dir, class_names, per_class):
  rng = np.random.default_rng(0)
  for name in class_names:
    (split_dir / name).mkdir(parents=True)
    for i in range(per_class):
      Image.fromarray(rng.integers(0, 256, (32, 32, 3), np.uint8)).save(
          split_dir / name / f'{i}.png')


def test_test_and_validation_name_an_image_folders_own_split_folders(
    tmp_path):
  config = smoke.get_config()
  config.data.update(name='image_folder', data_dir=str(tmp_path),
                     eval_split='', test_split='')
  write_noise_images(tmp_path / 'train', ['ant', 'bee'], 2)
  with pytest.raises(ValueError, match="no test split .* image_folder has "
                     "none named 'test'; it has no held-out split"):
    inference.resolve_split(config, 'test')
  write_noise_images(tmp_path / 'test', ['ant', 'bee'], 1)
  write_noise_images(tmp_path / 'validation', ['ant', 'bee'], 1)
  assert inference.resolve_split(config, 'test') == 'test'
  assert inference.resolve_split(config, 'validation') == 'validation'
  # The run's own split comes first.
  config.data.eval_split = 'train[:50%]'
  assert inference.resolve_split(config, 'validation') == 'train[:50%]'


def test_a_release_evaluates_the_test_folder_of_an_image_folder(tmp_path):
  """--split=test on a run trained without a test split (the releases:
  test_split='') classifies the folder's test/ images."""
  release = shutil.copytree(REPO / 'resnet_jax' / 'pretrained' / 'resnet20',
                            tmp_path / 'release')
  assert json.loads((release / 'config.json').read_text())['data'][
      'test_split'] == ''
  write_noise_images(tmp_path / 'images' / 'test',
                     datasets.CIFAR10_CLASS_NAMES, 2)
  result = evaluate.evaluate(str(release), split='test', num_misclassified=0,
                             data_dir=str(tmp_path / 'images'))
  assert (result['split'], result['tfds_split']) == ('test', 'test')
  assert result['num_examples'] == 20 and result['training_examples'] == 0
  assert json.loads((release / 'eval_test.json').read_text()) == result


def test_evaluate_validates_the_config_once(tmp_path, monkeypatch):
  """evaluate reads config.json (to check the run and split before loading)
  and hands it to inference.load: validated once, not again inside load."""
  release = shutil.copytree(REPO / 'resnet_jax' / 'pretrained' / 'resnet20',
                            tmp_path / 'release')
  write_noise_images(tmp_path / 'images' / 'test',
                     datasets.CIFAR10_CLASS_NAMES, 1)
  validated = []
  validate = config_checks.validate
  monkeypatch.setattr(config_checks, 'validate',
                      lambda config: validated.append(validate(config)))
  result = evaluate.evaluate(str(release), split='test', num_misclassified=0,
                             data_dir=str(tmp_path / 'images'))
  assert result['num_examples'] == 10
  assert len(validated) == 1


# ----------------------------------------------------------------------------
# A real (smoke) run.


def test_evaluating_a_run_reproduces_the_trainers_validation_figures(
    trained_workdir):
  result = evaluate.evaluate(str(trained_workdir), split='validation',
                             tta=True, num_misclassified=5)
  summary = json.loads((trained_workdir / 'summary.json').read_text())
  assert result['checkpoint_step'] == 4
  assert result['tfds_split'] == 'train[90%:]'
  assert result['num_examples'] == summary['eval_examples'] == 10
  # Run 0 by default: the trainer's figures of seed 0.
  assert (result['run'], result['seed'], result['num_runs']) == (0, 0, 2)
  assert 'ensemble' not in result
  run0 = summary['runs'][0]
  assert result['accuracy'] == pytest.approx(run0['final_val_accuracy'])
  assert result['loss'] == pytest.approx(run0['final_val_loss'], rel=1e-5)
  confusion = np.array(result['confusion_matrix'])
  assert confusion.sum() == 10
  assert np.trace(confusion) / 10 == result['accuracy']
  assert [c['support'] for c in result['per_class']] == list(confusion.sum(1))
  assert result['class_names'] == list(datasets.CIFAR10_CLASS_NAMES)
  assert result['tta']['num_examples'] == 10
  written = (trained_workdir / 'eval_validation.json').read_text()
  assert json.loads(written) == result
  json.loads(written, parse_constant=pytest.fail)  # No NaN in the file.
  assert_picture(trained_workdir / 'confusion_validation.png')
  assert_picture(trained_workdir / 'misclassified_validation.png')


def test_a_checkpoint_is_chosen_by_step_latest_or_best_and_nothing_written(
    trained_workdir):
  before = snapshot(trained_workdir)
  with checkpoints.Checkpointer(trained_workdir / 'checkpoints', keep=1,
                                metadata={}) as checkpointer:
    best = checkpointer.best_step()
  # The step the trainer named best (the first to reach the runs' highest
  # mean validation accuracy), whichever of 2 and 4 it was.
  summary = json.loads((trained_workdir / 'summary.json').read_text())
  assert best == summary['best_val_step']
  assert inference.load(str(trained_workdir)).step == 4
  assert inference.load(str(trained_workdir), 'best').step == best
  loaded = inference.load(str(trained_workdir), 2)
  assert loaded.step == 2 and loaded.image_shape == (32, 32, 3)
  assert snapshot(trained_workdir) == before


def test_bad_workdirs_checkpoints_and_splits_are_one_line_errors(
    trained_workdir, tmp_path):
  with pytest.raises(ValueError, match='does not exist'):
    evaluate.evaluate(str(tmp_path / 'missing'))
  with pytest.raises(ValueError, match='config.json is missing'):
    evaluate.evaluate(str(tmp_path))
  no_checkpoints = tmp_path / 'no_checkpoints'
  no_checkpoints.mkdir()
  shutil.copy(trained_workdir / 'config.json', no_checkpoints)
  with pytest.raises(ValueError, match='no checkpoint in'):
    evaluate.evaluate(str(no_checkpoints), split='validation')
  with pytest.raises(ValueError, match=r'no checkpoint of step 3 .*\[2, 4\]'):
    evaluate.evaluate(str(trained_workdir), split='validation', checkpoint='3')
  with pytest.raises(ValueError, match='use latest, best or a step'):
    evaluate.evaluate(str(trained_workdir), split='validation',
                      checkpoint='newest')
  assert not list(no_checkpoints.glob('eval_*'))


@pytest.mark.slow
def test_the_dataset_may_be_elsewhere_than_the_config_says(trained_workdir,
                                                           tmp_path):
  moved = shutil.copytree(trained_workdir, tmp_path / 'run')
  config = json.loads((moved / 'config.json').read_text())
  config['data']['data_dir'] = str(tmp_path / 'elsewhere')
  (moved / 'config.json').write_text(json.dumps(config))
  with pytest.raises(ValueError, match='elsewhere'):
    evaluate.evaluate(str(moved), split='validation', num_misclassified=0)
  result = evaluate.evaluate(str(moved), split='validation',
                             num_misclassified=0,
                             data_dir=fake_cifar.data_dir())
  assert result['num_examples'] == 10


def test_the_command_line_evaluates_the_test_split(trained_workdir):
  result = run_module('resnet_jax.evaluate', f'--workdir={trained_workdir}',
                      '--split=test', '--tta')
  assert result.returncode == 0, result.stderr[-3000:]
  written = json.loads((trained_workdir / 'eval_test.json').read_text())
  summary = json.loads((trained_workdir / 'summary.json').read_text())
  assert written['num_examples'] == summary['test_examples'] == 100
  assert written['accuracy'] == pytest.approx(
      summary['runs'][0]['test_accuracy'])
  assert f'accuracy {written["accuracy"]:.2%}' in result.stdout
  assert 'with flip TTA' in result.stdout
  assert 'eval_test.json' in result.stdout


def test_the_command_line_reports_a_malformed_split_in_one_line(
    trained_workdir):
  result = run_module('resnet_jax.evaluate', f'--workdir={trained_workdir}',
                      '--split=train[1:2:3]')
  assert result.returncode == 1, result.stderr[-2000:]
  last_line = result.stderr.strip().splitlines()[-1]
  assert last_line.startswith('error: malformed split')
  assert not list(trained_workdir.glob('eval_train*'))


# ----------------------------------------------------------------------------
# Several runs in one workdir: one of them, or their ensemble.


def restored_runs_logits(trained_workdir, images) -> list[np.ndarray]:
  """Each run's logits, restored here without inference.load."""
  config = config_checks.read_config(str(trained_workdir))
  exp = experiment.build(config, dp=parallel.DataParallel('jit'),
                         image_shape=images.shape[1:])
  with checkpoints.Checkpointer(trained_workdir / 'checkpoints', metadata={},
                                read_only=True) as checkpointer:
    state = checkpointer.restore(exp.abstract_state())
  return [np.asarray(exp.logits_fn(
      {'params': runs.take(state.params, i),
       'batch_stats': runs.take(state.batch_stats, i)}, images))
          for i in range(config.num_runs)]


def test_a_run_is_chosen_by_number_and_the_ensemble_averages_the_runs(
    trained_workdir):
  images = np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3),
                                             dtype=np.uint8)
  want = restored_runs_logits(trained_workdir, images)
  assert not np.allclose(want[0], want[1])  # Two seeds, two models.

  first = inference.load(str(trained_workdir))
  second = inference.load(str(trained_workdir), run=1)
  assert (first.run, first.seed, second.run, second.seed) == (0, 0, 1, 1)
  np.testing.assert_allclose(first.logits(images, batch_size=8), want[0],
                             rtol=1e-6, atol=1e-6)
  np.testing.assert_allclose(second.logits(images, batch_size=8), want[1],
                             rtol=1e-6, atol=1e-6)

  ensemble = inference.load(str(trained_workdir), ensemble=True)
  assert ensemble.run is None and ensemble.seed is None
  assert ensemble.num_runs == 2 and ensemble.step == 4
  np.testing.assert_allclose(ensemble.logits(images, batch_size=8),
                             (want[0] + want[1]) / 2, rtol=1e-5, atol=1e-5)
  # Every run's logits at once, in padded batches too.
  np.testing.assert_allclose(ensemble.per_run_logits(images, batch_size=3),
                             np.stack(want), rtol=1e-5, atol=1e-5)


def test_the_ensemble_loops_over_the_runs_without_grouped_convolutions(
    trained_workdir):
  # vmapped runs make grouped convolutions (feature_group_count = runs),
  # several times slower on a CPU than each run's own.
  ensemble = inference.load(str(trained_workdir), ensemble=True)
  images = np.zeros((4, 32, 32, 3), np.uint8)
  for fn in (ensemble._ensemble_fn, ensemble._runs_fn):  # pylint: disable=protected-access
    program = fn.lower(ensemble.all_variables, images).compile().as_text()
    # Each run's 7 convolutions (ResNet-8), none of them grouped.
    assert program.count(' convolution(') == 2 * 7
    assert 'feature_group_count' not in program


def test_each_run_and_the_ensemble_write_their_own_files(trained_workdir):
  summary = json.loads((trained_workdir / 'summary.json').read_text())
  second = evaluate.evaluate(str(trained_workdir), split='validation', run=1,
                             num_misclassified=2)
  assert (second['run'], second['seed']) == (1, 1)
  assert second['accuracy'] == pytest.approx(
      summary['runs'][1]['final_val_accuracy'])
  assert second['files']['json'] == 'eval_validation_run1.json'

  result = evaluate.evaluate(str(trained_workdir), split='validation',
                             ensemble=True, num_misclassified=2)
  assert result['ensemble'] is True and 'run' not in result
  assert result['files'] == {
      'json': 'eval_validation_ensemble.json',
      'confusion': 'confusion_validation_ensemble.png',
      'misclassified': 'misclassified_validation_ensemble.png'}
  # Each run's own figures beside the ensemble's: the trainer's.
  assert [(r['run'], r['seed']) for r in result['runs']] == [(0, 0), (1, 1)]
  for mine, trainers in zip(result['runs'], summary['runs'], strict=True):
    assert mine['accuracy'] == pytest.approx(trainers['final_val_accuracy'])
    assert mine['loss'] == pytest.approx(trainers['final_val_loss'],
                                         rel=1e-5)
  assert result['runs'][1]['accuracy'] == second['accuracy']
  assert np.trace(result['confusion_matrix']) / 10 == result['accuracy']
  assert json.loads(
      (trained_workdir / 'eval_validation_ensemble.json').read_text()
  ) == result
  assert json.loads((trained_workdir / 'eval_validation_run1.json').read_text()
                    ) == second
  assert_picture(trained_workdir / 'confusion_validation_ensemble.png')
  assert_picture(trained_workdir / 'misclassified_validation_run1.png')
  lines = evaluate.format_summary(result).splitlines()
  assert 'ensemble of 2 runs' in lines[0]
  assert lines[2].startswith('  run 0 (seed 0) alone: accuracy ')


def test_a_run_out_of_range_or_with_the_ensemble_is_a_one_line_error(
    trained_workdir, tmp_path):
  for run, message in [(2, 'no run 2 in .*num_runs=2 runs, 0..1'),
                       (-1, 'no run -1 in .*num_runs=2 runs, 0..1')]:
    with pytest.raises(ValueError, match=message):
      evaluate.evaluate(str(trained_workdir), split='validation', run=run)
    with pytest.raises(ValueError, match=message):
      inference.load(str(trained_workdir), run=run)
  with pytest.raises(ValueError, match='or the ensemble .*, not both'):
    evaluate.evaluate(str(trained_workdir), split='validation', run=1,
                      ensemble=True)
  assert not list(trained_workdir.glob('eval_*run2*'))
  # A workdir from before runs: its config.json has no num_runs.
  config = json.loads((trained_workdir / 'config.json').read_text())
  del config['num_runs']
  (tmp_path / 'config.json').write_text(json.dumps(config))
  shutil.copytree(trained_workdir / 'checkpoints', tmp_path / 'checkpoints')
  with pytest.raises(ValueError, match='has no num_runs: .* written before'):
    evaluate.evaluate(str(tmp_path), split='validation')
  with pytest.raises(ValueError, match='has no num_runs'):
    inference.load(str(tmp_path))
