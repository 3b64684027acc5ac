"""Tests for the across-seed comparison (`evaluation.seeds`, `restreact seeds`)."""

import json

import numpy as np
import pytest
import scipy.stats

from restreact_jax import errors
from restreact_jax import main as cli
from restreact_jax.evaluation import seeds


def _write(exp_dir, world_seed, table):
  """`table`: {gen: {size: (mean, std)}} as the report's summary.json holds it."""
  gens = [{'gen': g, 'models': {size: {'final': {'mean': m, 'std': s, 'n_runs': 2},
                                       'answer_generation': {'mean': m, 'std': s, 'n_runs': 2}}
                                for size, (m, s) in models.items()}}
          for g, models in table.items()]
  (exp_dir / 'report').mkdir(parents=True)
  (exp_dir / 'report' / 'summary.json').write_text(json.dumps(
      {'world_seed': world_seed, 'wall_seconds': 1.0, 'generations': gens}))
  return exp_dir


# gen 0 -> gen 1 -> gen 2 of the policy 'p' and the student 's' on three seeds.
TABLES = {
    0: {0: {'p': (10.0, 0.0)}, 1: {'p': (15.0, 1.0)}, 2: {'p': (18.0, 0.5), 's': (14.0, 0.5)}},
    7: {0: {'p': (14.0, 1.0)}, 1: {'p': (14.5, 2.0)}, 2: {'p': (20.0, 0.0), 's': (20.5, 1.0)}},
    1: {0: {'p': (12.0, 2.0)}, 1: {'p': (11.0, 0.5)}, 2: {'p': (16.0, 1.0), 's': (12.0, 0.0)}},
}


@pytest.fixture
def runs(tmp_path):
  return [seeds.read_run(_write(tmp_path / f's{k}', k, t)) for k, t in TABLES.items()]


def test_steps_are_paired_across_seeds(runs):
  result = seeds.compare(runs)
  assert result['policy'] == 'p' and result['seeds'] == [0, 7, 1]
  first, second, whole = result['steps']
  assert first.name == 'gen 0 → gen 1 (p)' and whole.name == 'gen 0 → gen 2 (p)'
  assert first.diffs == (5.0, 0.5, -1.0)
  assert first.improved == 2
  # Beyond the std over runs of both generations: only seed 0 (+5 > 1); seed 7's +0.5 < 2.
  assert first.beyond == (True, False, False) and first.beyond_std == 1
  assert first.mean == pytest.approx(np.mean([5.0, 0.5, -1.0]))
  assert first.sd == pytest.approx(np.std([5.0, 0.5, -1.0], ddof=1))
  assert first.sign_p == pytest.approx(0.5)  # P(X >= 2), X ~ Bin(3, 1/2)
  assert first.t_p == pytest.approx(scipy.stats.ttest_1samp(
      [5.0, 0.5, -1.0], 0.0, alternative='greater').pvalue)
  assert second.diffs == (3.0, 5.5, 5.0) and second.improved == 3 and second.beyond_std == 3
  # Both steps beyond the std over runs: seed 0 only (seed 7's first step is inside
  # it, seed 1's first falls), though gen 2 beats gen 0 beyond it on all three.
  assert whole.beyond == (True, True, True)
  assert result['chain'] == {'name': 'gen 0 → gen 1 → gen 2 (p)', 'holds': [True, False, False]}
  assert second.sign_p == pytest.approx(0.125)
  assert (second.before_sum, second.after_sum) == (40.5, 54.0)
  (student,) = result['students']
  assert student.diffs == (-4.0, 0.5, -4.0)
  assert (student.before_sum, student.after_sum) == (54.0, 46.5)


def test_markdown_and_json_carry_the_numbers(runs):
  result = seeds.compare(runs)
  text = seeds.markdown(result)
  assert '| gen 2 (s) | 14.0 ± 0.5 | 20.5 ± 1.0 | 12.0 ± 0.0 |' in text
  assert '| gen 1 → gen 2 (p) | +3.0, +5.5, +5.0 | +4.5 ± 1.3 | 3/3 | 3/3 | 0.125 |' in text
  assert '54.0 → 46.5 (86 % of the teacher)' in text
  data = seeds.as_json(result)
  json.dumps(data)  # plain data
  assert data['steps'][1]['diffs'] == [3.0, 5.5, 5.0]
  assert data['steps'][0]['beyond'] == [True, False, False]
  assert 'Every step of gen 0 → gen 1 → gen 2 (p) beyond the std over runs: 1/3 (seed 0).' in text
  assert data['chain']['holds'] == [True, False, False]


def test_ties_and_no_spread_do_not_fake_significance(tmp_path):
  flat = {0: {'p': (10.0, 0.0)}, 1: {'p': (10.0, 0.0)}}
  result = seeds.compare([seeds.read_run(_write(tmp_path / f's{k}', k, flat)) for k in (0, 1)])
  (step,) = result['steps']
  assert step.improved == 0 and step.sign_p == 1.0 and np.isnan(step.t_p)
  assert seeds.as_json(result)['steps'][0]['t_p'] is None


def test_equal_accuracies_in_float_noise_are_a_tie(tmp_path):
  # 37 of 240 right at gen 0 and at gen 1, as two summaries of one loop held them.
  noisy = {0: {'p': (15.416666666666664, 1.8)}, 1: {'p': (15.416666666666666, 0.6)}}
  assert noisy[0]['p'][0] != noisy[1]['p'][0]
  other = {0: {'p': (10.0, 0.0)}, 1: {'p': (12.0, 0.0)}}
  result = seeds.compare([seeds.read_run(_write(tmp_path / f's{k}', k, t))
                          for k, t in ((0, noisy), (1, other))])
  (step,) = result['steps']
  assert step.diffs[0] == 0.0 and step.improved == 1
  # The tie is left out of the sign test: one of one improved.
  assert step.sign_p == pytest.approx(0.5)


def test_bad_inputs_name_the_problem(tmp_path, runs):
  with pytest.raises(errors.UserError, match='not found'):
    seeds.read_run(tmp_path / 'nowhere')
  (tmp_path / 'bad' / 'report').mkdir(parents=True)
  (tmp_path / 'bad' / 'report' / 'summary.json').write_text('{"generations": [{"gen": 0}]}')
  with pytest.raises(errors.UserError, match='not a report summary'):
    seeds.read_run(tmp_path / 'bad')
  with pytest.raises(errors.UserError, match='at least 2 runs'):
    seeds.compare(runs[:1])
  only_gen0 = seeds.read_run(_write(tmp_path / 'g0', 3, {0: {'p': (1.0, 0.0)}}))
  with pytest.raises(errors.UserError, match='share only generation'):
    seeds.compare([runs[0], only_gen0])


def _cli(*args):
  import gin
  gin.clear_config(clear_constants=True)  # as a fresh process would start
  return cli.main(['seeds', *args])


def test_command_reads_globs_and_writes_both_files(tmp_path, runs, capsys):
  del runs  # the fixture wrote s0, s7, s1
  out = tmp_path / 'cmp' / 'seeds.md'
  assert _cli(f'--exp_dirs={tmp_path}/s*', f'--out={out}') == 0
  printed = capsys.readouterr().out
  assert '| gen 0 → gen 2 (p) |' in printed and out.read_text() in printed
  assert json.loads(out.with_suffix('.json').read_text())['seeds'] == [0, 1, 7]  # sorted glob
  assert _cli(f'--exp_dirs={tmp_path}/none*') == 2
  assert 'matches no directory' in capsys.readouterr().err
