"""The released weights in pretrained/ still give what their READMEs record.

Each release (experiments/release.py) records the sha256 of its files, its
parameter count and how many images of its validation split it classified
correctly on the CPU. Any later change to the model, the preprocessing or
evaluation that alters what a released model computes fails here. The JPEG
copy of CIFAR-10 in ../shared holds the validation images (CI has it).
"""

import pathlib
import re

import jax
import pytest

import jpeg_copy
from experiments import release
from resnet_jax import inference

REPO = pathlib.Path(__file__).resolve().parents[1]
RELEASES = sorted(p.parent for p in (REPO / 'pretrained').glob('*/README.md'))


def recorded(out: pathlib.Path) -> dict:
  """The README's figures: file hashes, parameters, the CPU check."""
  text = (out / release.README).read_text()
  check = re.search(r'^CPU check: ([\d,]+) of ([\d,]+) images of `(.+?)` ',
                    text, re.MULTILINE)
  assert check, f'{out}: its README records no CPU check'
  number = lambda s: int(s.replace(',', ''))
  return {
      'hashes': dict(re.findall(r'^\| `(.+)` \| [\d,]+ \| `([0-9a-f]{64})` \|$',
                                text, re.MULTILINE)),
      'params': number(re.search(r'; ([\d,]+) parameters;', text)[1]),
      'correct': number(check[1]), 'examples': number(check[2]),
      'split': check[3]}


def check_release(out: pathlib.Path, data_dir: str | None = None) -> None:
  """Asserts that the release in `out` is what its README says."""
  figures = recorded(out)
  files = {p.relative_to(out).as_posix(): p for p in out.rglob('*')
           if p.is_file() and p.name != release.README}
  assert set(figures['hashes']) == set(files)
  for path, digest in figures['hashes'].items():
    assert release.sha256(files[path]) == digest, path
  loaded = inference.load(str(out))
  assert sum(x.size for x in jax.tree.leaves(loaded.variables['params'])) == (
      figures['params'])
  got = release.count_correct(str(out), figures['split'], data_dir)
  assert (got['correct'], got['examples']) == (figures['correct'],
                                               figures['examples'])


@pytest.fixture(name='jpeg_dir', scope='module')
def fixture_jpeg_dir(tmp_path_factory):
  # The whole training split: the validation split is a shuffled slice of it.
  return str(jpeg_copy.image_folder(tmp_path_factory.mktemp('jpeg'),
                                    per_class=5000))


@pytest.mark.slow
@pytest.mark.parametrize('out', RELEASES, ids=lambda p: p.name)
def test_a_release_gives_the_figures_its_readme_records(out, jpeg_dir):
  on_jpegs = inference.read_config(str(out)).data.name == 'image_folder'
  check_release(out, jpeg_dir if on_jpegs else None)
