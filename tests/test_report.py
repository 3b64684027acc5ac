"""Tests for the HTML experiment report on a constructed experiment directory."""

import json

import pytest

from restreact_jax import errors
from restreact_jax.evaluation import report
from tests.test_rankers import trajectory, cand


def _write(path, obj):
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(obj))


def _exp(tmp_path):
  exp = tmp_path / 'exp'
  _write(exp / 'world' / 'world.json', {'seed': 17})
  _write(exp / 'manifest.json', {'version': 1, 'phases': {'a': {'seconds': 10.5}, 'b': {'seconds': 2}}})
  accs = {0: {'xs': (40.0, 3.0), 's': (50.0, 2.0)}, 1: {'xs': (55.25, 1.5)}}
  for g, sizes in accs.items():
    for size, (m, sd) in sizes.items():
      _write(exp / f'gen_{g}' / 'eval' / size / 'summary.json',
             {'final': {'mean': m, 'std': sd, 'n_runs': 10},
              'answer_generation': {'mean': m - 1, 'std': sd, 'n_runs': 10}})
  t = trajectory()
  t['steps'][0]['candidates'].append(cand(None, text='<script>alert(1)</script>', ppl=9.0))
  revised = cand(None, text='a rater revision', ppl=None)
  revised['finish_reason'] = 'revision'
  t['steps'][0]['candidates'].append(revised)
  shard = exp / 'gen_1' / 'trajectories' / 'shard-00000.jsonl'
  shard.parent.mkdir(parents=True)
  shard.write_text(json.dumps(t) + '\n')
  ranked = exp / 'gen_1' / 'ranked' / 'rankings.jsonl'
  ranked.parent.mkdir(parents=True)
  rows = [{'question_id': 'q1', 'repeat': 0, 'step_index': 0, 'step_type': 'decision', 'order': [1, 0],
           'explanation': 'because <b>', 'ranker': 'rules', 'oracle': False, 'status': 'ok'},
          {'question_id': 'q1', 'repeat': 0, 'step_index': 5, 'step_type': 'answer', 'order': [0],
           'explanation': 'only one', 'ranker': 'rules', 'oracle': False, 'status': 'ok'}]
  ranked.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return exp


def test_wall_seconds_count_phases_that_overlapped_once():
  # Two test models on threads (overlapping), a later phase after a pause.
  phases = [{'seconds': 10.0, 'finished_at': 110.0}, {'seconds': 8.0, 'finished_at': 115.0},
            {'seconds': 5.0, 'finished_at': 200.0}, {'seconds': 1.5}]
  assert report.busy_seconds(phases) == pytest.approx(15.0 + 5.0 + 1.5)
  assert report.busy_seconds([]) == 0.0


def test_report_table_summary_plots_and_viewer(tmp_path):
  exp = _exp(tmp_path)
  index = report.build_report(exp)
  summary = json.loads((exp / 'report' / 'summary.json').read_text())
  assert summary['world_seed'] == 17 and summary['wall_seconds'] == pytest.approx(12.5)
  assert [g['gen'] for g in summary['generations']] == [0, 1]
  assert summary['generations'][1]['models']['xs']['final'] == {'mean': 55.25, 'std': 1.5, 'n_runs': 10}
  table = (exp / 'report' / 'table.md').read_text().splitlines()
  assert table[0] == '| generation | s | xs |'
  assert table[2] == '| gen 0 | 50.0 ± 2.0 | 40.0 ± 3.0 |'
  assert table[3] == '| gen 1 | N/A | 55.2 ± 1.5 |'
  for png in ('accuracy.png', 'examples_per_step.png', 'ranker_agreement.png'):
    assert (exp / 'report' / 'plots' / png).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  page = index.read_text()
  assert '<script>' not in page and '&lt;script&gt;alert(1)&lt;/script&gt;' in page
  assert 'because &lt;b&gt;' in page
  assert '[link_id=1]' in page  # citations of the chosen summary
  # A rater's revision is labelled as such, not given a perplexity.
  assert '<td>revision</td><td>no</td><td></td><td></td><td><pre>a rater revision</pre>' in page
  # Decision: ranker picked #2 while the rollout chose #1 -> 0% agreement; answer: 100%.
  assert '<td>1 / 0%</td>' in page and '<td>1 / 100%</td>' in page
  # Rebuilding replaces the report and leaves no temporary directories.
  report.build_report(exp, world_seed=3, wall_seconds=1.0)
  assert json.loads((exp / 'report' / 'summary.json').read_text())['world_seed'] == 3
  assert sorted(p.name for p in exp.iterdir() if p.name.startswith('.')) == []


def test_summary_is_on_the_test_split_when_the_loop_evaluated_there(tmp_path):
  exp = _exp(tmp_path)
  assert report.collect_summary(exp)['split'] == 'dev'
  # The loop's world.json keeps the seed under "config".
  _write(exp / 'world' / 'world.json', {'config': {'seed': 7, 'num_entities': 400}})
  for name, (m, sd) in {'gen_0_xxs': (5.0, 0.0), 'gen_2_xxs': (16.25, 1.8),
                        'gen_2_xxxs': (8.75, 1.8)}.items():
    _write(exp / 'test' / 'eval' / name / 'summary.json',
           {'final': {'mean': m, 'std': sd, 'n_runs': 2},
            'answer_generation': {'mean': m, 'std': sd, 'n_runs': 2}})
  summary = report.collect_summary(exp)
  assert summary['world_seed'] == 7 and summary['split'] == 'test'
  assert [(g['gen'], sorted(g['models'])) for g in summary['generations']] == [
      (0, ['xxs']), (2, ['xxs', 'xxxs'])]
  assert summary['generations'][1]['models']['xxxs']['final']['mean'] == 8.75
  assert 'heldout' not in summary


def test_heldout_evals_join_the_summary_and_the_page_beside_the_test_split(tmp_path):
  exp = _exp(tmp_path)
  for split, name, mean in (('test', 'gen_2_xxs', 16.25), ('heldout', 'gen_2_xxs', 20.8),
                            ('heldout', 'gen_0_xxs', 15.0)):
    _write(exp / split / 'eval' / name / 'summary.json',
           {'final': {'mean': mean, 'std': 1.2, 'n_runs': 2},
            'answer_generation': {'mean': mean - 1, 'std': 0.5, 'n_runs': 2},
            'funnel': {'in_results': {'mean': 60.0, 'std': 2.0, 'n_runs': 2},
                       'in_summaries': {'mean': 40.0, 'std': 0.0, 'n_runs': 2},
                       'answer_given_summaries': {'mean': mean, 'std': 1.0, 'n_runs': 2}}})
  index = report.build_report(exp)
  summary = json.loads((exp / 'report' / 'summary.json').read_text())
  assert [g['gen'] for g in summary['generations']] == [2]
  assert [(g['gen'], g['models']['xxs']['final']['mean'])
          for g in summary['heldout']['generations']] == [(0, 15.0), (2, 20.8)]
  page = index.read_text()
  assert page.index('Test split, final models') < page.index('Held-out training questions')
  assert ('<td>gen_0_xxs</td><td>15.0 ± 1.2</td><td>14.0 ± 0.5</td><td>60.0 ± 2.0</td>'
          '<td>40.0 ± 0.0</td><td>15.0 ± 1.0</td>') in page
  heldout_md = (exp / 'report' / 'heldout.md').read_text().splitlines()
  assert heldout_md[0] == ('| model | final | answer generation | answer in results | '
                           'in summaries | answered, given summaries |')
  assert heldout_md[2:] == [
      '| gen_0_xxs | 15.0 ± 1.2 | 14.0 ± 0.5 | 60.0 ± 2.0 | 40.0 ± 0.0 | 15.0 ± 1.0 |',
      '| gen_2_xxs | 20.8 ± 1.2 | 19.8 ± 0.5 | 60.0 ± 2.0 | 40.0 ± 0.0 | 20.8 ± 1.0 |']
  assert (exp / 'report' / 'test.md').read_text().count('| gen_') == 1


def test_report_errors(tmp_path):
  with pytest.raises(errors.UserError, match='does not exist'):
    report.build_report(tmp_path / 'nope')
  exp = _exp(tmp_path)
  (exp / 'gen_0' / 'eval' / 's' / 'summary.json').write_text('{broken')
  with pytest.raises(errors.UserError, match='cannot read .*summary.json'):
    report.build_report(exp)
