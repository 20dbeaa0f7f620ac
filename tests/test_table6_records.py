"""The README's Table 6 is the one the committed runs' records give.

experiments/table6/<workdir>/ keeps each finished run's config.json,
summary.json and trainer log (no checkpoints); the README's table must be
what experiments/reproduce_table6.py writes from them, never typed by hand.
"""

import json
import pathlib

from experiments import reproduce_table6 as table6

REPO = pathlib.Path(__file__).resolve().parents[1]
ROOT = REPO / 'experiments' / 'table6'
# As the README's command gives them (the data's place is not the recipe).
OVERRIDES = {'data.name': 'image_folder', 'data.test_split': ''}


def _rows(markdown: str) -> list[str]:
  return [line for line in markdown.splitlines()
          if line.startswith(('| model', '| ResNet-'))]


def test_the_readme_table_is_generated_from_the_committed_runs(tmp_path):
  found = {depth: table6.finished(str(ROOT), depth, OVERRIDES)
           for depth in table6.PAPER}
  assert [len(s) for s in found.values()] == [1, 0, 0, 1, 0]  # 20 and 56.
  generated = _rows(table6.write_tables(found, range(3), str(tmp_path),
                                        OVERRIDES))
  readme = (REPO / 'README.md').read_text()
  block = readme.split('<!-- table6 -->')[1].split('<!-- /table6 -->')[0]
  assert _rows(block) == generated
  assert _rows((ROOT / 'table6.md').read_text()) == generated
  assert '| ResNet-20 | 3 | 12.63 ± 0.31 |' in block


def test_each_committed_run_finished_the_papers_recipe():
  summaries = sorted(ROOT.glob('resnet*/summary.json'))
  assert len(summaries) == 2
  for summary_path in summaries:
    summary = json.loads(summary_path.read_text())
    config = json.loads((summary_path.parent / 'config.json').read_text())
    assert (summary['steps'], summary['batch_size']) == (64_000, 128)
    assert config['schedule']['name'] == 'paper'
    # The log's last validation is the summary's (the mean over its runs).
    log = (summary_path.parent / 'trainer.log').read_text()
    logged = float(log.split('[64000] val_accuracy=')[-1].split(',')[0])
    assert logged == float(f'{summary["final_val_accuracy"]:.6g}')
