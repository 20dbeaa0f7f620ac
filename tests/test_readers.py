"""What the readers (evaluate, predict, inference.load) check of a run's data
and config before they trust them: the data it trained on, the statistics
it normalised with, a config.json edited by hand, checkpoints deleted while
a trainer runs."""

import errno
import functools
import json
import pathlib
import shutil

from etils import epath
import numpy as np
from PIL import Image
import pytest

from configs import smoke
import resnet_jax
from resnet_jax import evaluate
from resnet_jax.data import datasets
from resnet_jax.read import inference
from resnet_jax.read import report
from resnet_jax.run import defaults
from resnet_jax.run import train

CLASSES = ('ant', 'bee', 'cat')


def write_folder(root: pathlib.Path, per_class: int, first: int = 0,
                 size: int = 32) -> pathlib.Path:
  """`per_class` random PNGs of each class under root/train/<class>/."""
  rng = np.random.default_rng(first)
  for name in CLASSES:
    (root / 'train' / name).mkdir(parents=True, exist_ok=True)
    for i in range(first, first + per_class):
      Image.fromarray(rng.integers(0, 256, (size, size, 3), np.uint8)).save(
          root / 'train' / name / f'{i:03d}.png')
  return root


def folder_config(root: pathlib.Path):
  """A two-step ResNet-8 on 12 images, validated on 6, normalised with
  statistics measured on its training split."""
  config = smoke.get_config()
  config.data.update(name='image_folder', data_dir=str(root),
                     train_split='train[:12]', eval_split='train[12:]',
                     test_split='', normalization='measured')
  config.model.num_classes = len(CLASSES)
  config.update(parallelism='jit', batch_size=4, eval_batch_size=6,
                num_train_steps=2, log_every_steps=1, eval_every_steps=2,
                checkpoint_every_steps=2, keep_checkpoints=1)
  return config


@functools.cache
def _trained(base: pathlib.Path) -> pathlib.Path:
  root = write_folder(base / 'images', per_class=6)
  train.train_and_evaluate(folder_config(root), str(base / 'run'))
  return base


@pytest.fixture(name='trained')
def fixture_trained(tmp_path_factory, tmp_path):
  """(workdir, image root): a copy of a run trained once per session."""
  base = _trained(tmp_path_factory.getbasetemp() / 'readers_run')
  workdir = shutil.copytree(base / 'run', tmp_path / 'run')
  root = shutil.copytree(base / 'images', tmp_path / 'images')
  config = json.loads((workdir / 'config.json').read_text())
  config['data']['data_dir'] = str(root)
  (workdir / 'config.json').write_text(json.dumps(config))
  return workdir, root


def trained_mean_std(root):
  config = folder_config(root).data
  return datasets.measure_channel_stats(
      datasets.load_split(config, config.train_split))


def test_validation_of_a_folder_changed_since_training_is_refused(trained):
  workdir, root = trained
  before = evaluate.evaluate(str(workdir), split='validation',
                             num_misclassified=0)
  assert before['num_examples'] == 6
  write_folder(root, per_class=5, first=100)  # 15 images more.
  with pytest.raises(ValueError) as refused:
    evaluate.evaluate(str(workdir), split='validation', num_misclassified=0)
  message = str(refused.value)
  assert message.startswith('the training data changed since the run '
                            'trained: it was train[:12] of image folder')
  assert "'train': 18 files" in message and "'train': 33 files" in message
  assert "'train[12:]' is a slice of it" in message


def test_evaluating_training_images_says_so(trained):
  workdir, _ = trained
  result = evaluate.evaluate(str(workdir), split='train[8:]',
                             num_misclassified=0)
  assert result['num_examples'] == 10 and result['training_examples'] == 4
  assert ('warning: 4 of these 10 examples are training examples' in
          evaluate.format_summary(result))


def test_readers_normalise_with_the_statistics_the_run_trained_with(trained):
  workdir, root = trained
  mean, std = trained_mean_std(root)
  write_folder(root, per_class=5, first=100)  # Other statistics now.
  now_mean, _ = trained_mean_std(root)
  assert not np.allclose(mean, now_mean)
  loaded = inference.load(str(workdir))
  np.testing.assert_array_equal(loaded.mean, mean)
  np.testing.assert_array_equal(loaded.std, std)


def test_a_moved_dataset_is_read_from_data_dir(trained, tmp_path):
  workdir, root = trained
  moved = root.rename(tmp_path / 'moved')
  with pytest.raises(ValueError, match=f'image folder {root} does not exist.*'
                     'pass --data_dir=DIR'):
    evaluate.evaluate(str(workdir), split='validation', num_misclassified=0)
  result = evaluate.evaluate(str(workdir), split='validation',
                             num_misclassified=0, data_dir=str(moved))
  assert result['num_examples'] == 6
  assert inference.load(str(workdir), data_dir=str(moved)).step == 2


def edited(workdir, edit):
  config = json.loads((workdir / 'config.json').read_text())
  edit(config)
  (workdir / 'config.json').write_text(json.dumps(config))


@pytest.mark.parametrize('edit, message', [
    (lambda c: c.update(eval_batch_size='abc'),
     "config.eval_batch_size='abc': must be an integer"),
    (lambda c: c['model'].update(depth='abc'),
     "config.model.depth='abc': must be an integer"),
    (lambda c: c.update(model=5), 'config.model=5: must be a group'),
    (lambda c: c['model'].update(dtype='float16'),
     "config.model.dtype='float16': must be one of"),
])
def test_a_hand_edited_config_json_is_validated_as_the_trainers(
    trained, edit, message):
  workdir, _ = trained
  edited(workdir, edit)
  for read in (lambda: evaluate.evaluate(str(workdir), split='validation'),
               lambda: inference.load(str(workdir))):
    with pytest.raises(ValueError) as refused:
      read()
    assert str(refused.value).startswith(
        f'{workdir}/config.json is not a valid config: {message}')


def test_a_config_json_that_disagrees_with_its_checkpoints_is_refused(
    trained):
  workdir, _ = trained
  original = (workdir / 'config.json').read_text()
  # A field config.json lacks reads as its default (a field added since the
  # run): here the whole model, which its checkpoints contradict.
  edited(workdir, lambda c: c.pop('model'))
  with pytest.raises(ValueError, match=(
      r"do not match the workdir's config.json \(.*training.model.depth: "
      r'checkpoint 8, this run 20')):
    inference.load(str(workdir))
  (workdir / 'config.json').write_text(original)
  edited(workdir, lambda c: c['data'].update(mean=[0, 0, 0],
                                             normalization='constants'))
  with pytest.raises(ValueError, match=(
      r"checkpoints in .* do not match the workdir's config.json "
      r'\(training.data.mean: checkpoint \[.*\], this run \[0, 0, 0\]; '
      r'training.data.normalization: checkpoint "measured", this run '
      r'"constants"\)')):
    inference.load(str(workdir))
  # What may differ: how a run is evaluated, e.g. the batch size.
  edited(workdir, lambda c: c['data'].update(mean=[125.31, 122.95, 113.87],
                                             normalization='measured'))
  edited(workdir, lambda c: c.update(eval_batch_size=3))
  assert inference.load(str(workdir)).step == 2


def test_pictures_on_a_full_disk_are_one_line_and_leave_nothing_half_written(
    trained, monkeypatch):
  workdir, _ = trained
  path_class = type(epath.Path('/'))

  def full_disk(self, data):
    with open(self, 'wb') as f:
      f.write(data[:100])
    raise OSError(errno.ENOSPC, 'No space left on device')

  before = sorted(p.name for p in workdir.iterdir())
  monkeypatch.setattr(path_class, 'write_bytes', full_disk)
  with pytest.raises(ValueError, match=(
      r'^cannot write .*/confusion_validation.png: No space left on device$')):
    evaluate.evaluate(str(workdir), split='validation')
  assert sorted(p.name for p in workdir.iterdir()) == before


def test_the_misclassified_picture_shows_at_most_its_cap_and_says_so(
    trained, monkeypatch):
  workdir, _ = trained
  monkeypatch.setattr(report, 'MAX_PICTURED', 2)
  result = evaluate.evaluate(str(workdir), split='train', num_misclassified=400)
  assert result['misclassified_shown'] == 2
  assert result['misclassified_asked'] == 400
  assert ('misclassified_train.png shows 2 mistakes: one picture shows at '
          'most 2 (--num_misclassified=400)') in evaluate.format_summary(
              result)


def test_a_split_the_run_lacks_is_answered_with_one_it_has(tmp_path):
  config = folder_config(tmp_path)
  with pytest.raises(ValueError, match=(
      r"^this run has no test split \(config.data.test_split is empty\) and "
      r"image_folder has none named 'test'; --split=validation \(its 'train\[12:\]'\) evaluates held-out "
      'images$')):
    inference.resolve_split(config, 'test')
  config.data.eval_split = ''
  with pytest.raises(ValueError, match=(
      r'it has no held-out split: pass a split of image_folder it did not '
      r"train on \(it trained on 'train\[:12\]'\)$")):
    inference.resolve_split(config, 'validation')


def test_a_field_added_since_a_run_reads_as_its_default(trained, monkeypatch):
  # The code gains a field (an augmentation's, say) after the run and the
  # shipped releases were written: none of them records it.
  monkeypatch.setitem(defaults.FIELDS, 'data.cutout', (0, defaults.Range(0)))
  workdir, root = trained
  assert 'cutout' not in json.loads((workdir / 'config.json').read_text())[
      'data']
  assert inference.load(str(workdir)).config.data.cutout == 0
  assert resnet_jax.pretrained('resnet20').config.data.cutout == 0
  # The trainer resumes the run at the field's default (the finished run's
  # summary is written again) and refuses any other value of it.
  config = folder_config(root)
  assert config.data.cutout == 0
  assert train.train_and_evaluate(config, str(workdir))['steps'] == 2
  config.data.cutout = 3
  with pytest.raises(ValueError, match='come from a different run.*'
                     'training.data.cutout: checkpoint 0, this run 3'):
    train.train_and_evaluate(config, str(workdir))
