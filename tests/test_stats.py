"""Tests for judge/human correlation and the bootstrap accuracy difference."""

import numpy as np
import pytest
import scipy.stats

from restreact_jax import errors
from restreact_jax.evaluation import stats


def test_correlation_matches_scipy_and_known_values():
  x = [0.1, 0.4, 0.35, 0.8, 0.7, 0.95]
  y = [0.2, 0.5, 0.3, 0.9, 0.6, 1.0]
  c = stats.correlation(x, y)
  assert c.n == 6
  assert c.pearson_r == pytest.approx(np.corrcoef(x, y)[0, 1])
  assert c.pearson_p == pytest.approx(scipy.stats.pearsonr(x, y).pvalue)
  # Spearman on these ranks: x ranks 1,3,2,5,4,6 vs y ranks 1,3,2,5,4,6 -> 1.0.
  assert c.spearman_rho == pytest.approx(1.0)
  anti = stats.correlation([1, 2, 3, 4], [8, 6, 4, 2])
  assert anti.pearson_r == pytest.approx(-1.0)
  assert anti.spearman_rho == pytest.approx(-1.0)


def test_correlation_errors():
  with pytest.raises(errors.UserError, match='at least 3'):
    stats.correlation([1, 0], [1, 0])
  with pytest.raises(errors.UserError, match='every human value'):
    stats.correlation([1, 0, 1], [1, 1, 1])
  with pytest.raises(errors.UserError, match='equal-length'):
    stats.correlation([1, 0, 1], [1, 1])


def test_correlation_from_csv_items_and_groups(tmp_path):
  path = tmp_path / 'labels.csv'
  rows = [('a1', 'True', '1'), ('a1', 'false', '0'), ('a1', 'yes', '1'),
          ('a2', '0', '0'), ('a2', '0', '1'), ('a2', 'no', '0'),
          ('a3', '1', '1'), ('a3', '1', '1'), ('a3', '1', '1')]
  path.write_text('agent,judge,human\n' + ''.join(f'{a},{j},{h}\n' for a, j, h in rows))
  judge_vals, human_vals, keys = stats.read_label_pairs(path)
  assert judge_vals == [1, 0, 1, 0, 0, 0, 1, 1, 1]
  assert human_vals == [1, 0, 1, 0, 1, 0, 1, 1, 1]
  per_agent = stats.read_label_pairs(path, group_column='agent')
  assert per_agent[2] == ['a1', 'a2', 'a3']
  assert per_agent[0] == pytest.approx([2 / 3, 0, 1])
  assert per_agent[1] == pytest.approx([2 / 3, 1 / 3, 1])
  c = stats.correlation_from_csv(path)
  r = scipy.stats.pearsonr(judge_vals, human_vals)
  assert c.pearson_r == pytest.approx(r.statistic)
  assert c.pearson_p == pytest.approx(r.pvalue)


@pytest.mark.parametrize('text, message', [
    ('judge,human\n1,maybe\n1,0\n0,1\n', r'labels.csv:2: column human: .maybe. is not a label'),
    ('judge,humans\n1,1\n', r'missing column\(s\) human; the header has judge, humans'),
    ('judge,human\n1,1\n1\n0,1\n', r'labels.csv:3: row has 1 fields but the header has 2'),
    ('judge,human\n1,nan\n', r'labels.csv:2: column human'),
])
def test_csv_errors(tmp_path, text, message):
  path = tmp_path / 'labels.csv'
  path.write_text(text)
  with pytest.raises(errors.UserError, match=message):
    stats.correlation_from_csv(path)


def test_missing_csv_is_a_user_error(tmp_path):
  with pytest.raises(errors.UserError, match='cannot read'):
    stats.correlation_from_csv(tmp_path / 'nope.csv')


def test_bootstrap_is_deterministic_and_paired_when_keys_match():
  rng = np.random.default_rng(1)
  a = {f'q{i}': list(rng.integers(0, 2, size=3)) for i in range(40)}
  b = {f'q{i}': list(rng.integers(0, 2, size=3)) for i in range(40)}
  r1 = stats.bootstrap_accuracy_diff(a, b, n_resamples=2000, seed=7)
  r2 = stats.bootstrap_accuracy_diff(a, b, n_resamples=2000, seed=7)
  r3 = stats.bootstrap_accuracy_diff(a, b, n_resamples=2000, seed=8)
  assert r1 == r2
  assert (r1.low, r1.high) != (r3.low, r3.high)
  assert r1.paired
  assert r1.diff == pytest.approx(np.mean([np.mean(v) for v in b.values()]) -
                                  np.mean([np.mean(v) for v in a.values()]))
  assert r1.low <= r1.diff <= r1.high
  unpaired = stats.bootstrap_accuracy_diff(a, {**b, 'extra': [1]}, n_resamples=500)
  assert not unpaired.paired and unpaired.n_b == 41


def test_pairing_narrows_the_interval_when_questions_share_difficulty():
  # Question difficulty dominates; B is A plus a small improvement on a few.
  rng = np.random.default_rng(0)
  base = rng.uniform(0, 1, size=200)
  a = {f'q{i}': [float(base[i] > 0.5)] for i in range(200)}
  b = {k: [1.0] if i % 10 == 0 else v for i, (k, v) in enumerate(a.items())}
  paired = stats.bootstrap_accuracy_diff(a, b, n_resamples=2000)
  unpaired = stats.bootstrap_accuracy_diff(list(a.values()), list(b.values()), n_resamples=2000)
  assert paired.paired and not unpaired.paired
  assert paired.diff == pytest.approx(unpaired.diff)
  assert paired.high - paired.low < 0.5 * (unpaired.high - unpaired.low)
  assert paired.low > 0  # the paired test sees the improvement


def test_bootstrap_coverage_on_a_known_difference():
  # Two independent Bernoulli generations with true accuracies 0.5 and 0.6:
  # a 90% interval should contain the true 0.1 in about 90% of experiments.
  rng = np.random.default_rng(123)
  hits, trials = 0, 150
  for t in range(trials):
    a = rng.binomial(1, 0.5, size=150).astype(float)
    b = rng.binomial(1, 0.6, size=150).astype(float)
    r = stats.bootstrap_accuracy_diff(list(a), list(b), confidence=0.9, n_resamples=500, seed=t)
    hits += r.low <= 0.1 <= r.high
  assert 0.8 <= hits / trials <= 0.97


def test_bootstrap_degenerate_and_bad_input():
  r = stats.bootstrap_accuracy_diff([1, 1, 1], [0, 0, 0])
  assert (r.diff, r.low, r.high) == (-1.0, -1.0, -1.0)
  with pytest.raises(errors.UserError, match='at least 2'):
    stats.bootstrap_accuracy_diff([1], [0, 1])
  with pytest.raises(errors.UserError, match='confidence'):
    stats.bootstrap_accuracy_diff([1, 0], [0, 1], confidence=95)


def test_correctness_by_question_orders_runs():
  rows = [{'run': 1, 'question_id': 'q', 'correct_final': False},
          {'run': 0, 'question_id': 'q', 'correct_final': True}]
  assert stats.correctness_by_question(rows) == {'q': [1.0, 0.0]}
