"""Statistics for auto-eval: judge-vs-human agreement and generation deltas.

* `correlation` / `correlation_from_csv`: Pearson and Spearman correlation with
  p-values (scipy) between judge verdicts and human labels — the check the
  paper reports as Pearson 0.98 (p = 6.6e-8), Spearman 0.83 (p = 0.0015),
  computed over a varied set of agents. With a `group` column the labels are
  first averaged per group (per agent), as in the paper; without one the
  correlation is over individual items.
* `bootstrap_accuracy_diff`: a percentile bootstrap confidence interval for the
  difference in accuracy between two generations, resampling questions jointly
  (paired) when both generations were evaluated on the same questions, and
  deterministic for a seed.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import math
import os
from typing import Mapping, Sequence

import numpy as np
import scipy.stats

from restreact_jax import errors

_TRUE = frozenset({'1', 'true', 't', 'yes', 'y', 'correct'})
_FALSE = frozenset({'0', 'false', 'f', 'no', 'n', 'incorrect', 'wrong'})


@dataclasses.dataclass(frozen=True)
class Correlation:
  pearson_r: float
  pearson_p: float
  spearman_rho: float
  spearman_p: float
  n: int


def correlation(judge: Sequence[float], human: Sequence[float]) -> Correlation:
  """Pearson and Spearman correlation (two-sided p-values) of paired values.

  Args:
    judge: judge verdicts (0/1) or per-group judge accuracies.
    human: the human labels or accuracies, paired with `judge`.

  Returns:
    The coefficients, their p-values and the number of pairs.
  """
  x = np.asarray(judge, dtype=np.float64)
  y = np.asarray(human, dtype=np.float64)
  if x.shape != y.shape or x.ndim != 1:
    raise errors.UserError(
        f'correlation needs two equal-length lists, got {x.shape} and {y.shape}')
  if x.size < 3:
    raise errors.UserError(f'correlation needs at least 3 pairs, got {x.size}')
  for name, v in (('judge', x), ('human', y)):
    if np.all(v == v[0]):
      raise errors.UserError(f'correlation is undefined: every {name} value is {v[0]:g}')
  pearson = scipy.stats.pearsonr(x, y)
  spearman = scipy.stats.spearmanr(x, y)
  return Correlation(float(pearson.statistic), float(pearson.pvalue),
                     float(spearman.statistic), float(spearman.pvalue), int(x.size))


def _label(value: str, where: str) -> float:
  v = value.strip().lower()
  if v in _TRUE:
    return 1.0
  if v in _FALSE:
    return 0.0
  try:
    f = float(v)
  except ValueError:
    f = math.nan
  if not math.isfinite(f):
    raise errors.UserError(f'{where}: {value!r} is not a label (use 1/0, true/false, yes/no or a number)')
  return f


def read_label_pairs(path: str | os.PathLike[str], judge_column: str = 'judge',
                     human_column: str = 'human',
                     group_column: str | None = None) -> tuple[list[float], list[float], list[str]]:
  """Reads paired judge/human labels from a CSV file with a header row.

  Args:
    path: the CSV file.
    judge_column: column of judge verdicts.
    human_column: column of human labels.
    group_column: if set (e.g. 'agent'), labels are averaged per group.

  Returns:
    (judge values, human values, keys): one entry per row, or per group
    (keys are the group names, sorted) when `group_column` is set.
  """
  try:
    with open(path, newline='') as f:
      reader = csv.DictReader(f)
      columns = reader.fieldnames or []
      needed = [c for c in (judge_column, human_column, group_column) if c]
      absent = [c for c in needed if c not in columns]
      if absent:
        raise errors.UserError(
            f'{path}: missing column(s) {", ".join(absent)}; the header has '
            f'{", ".join(columns) or "nothing"}')
      judge_vals, human_vals, keys = [], [], []
      for row in reader:
        where = f'{path}:{reader.line_num}'
        if None in row or any(row[c] is None for c in needed):
          raise errors.UserError(f'{where}: row has {len([v for v in row.values() if v is not None])} '
                                 f'fields but the header has {len(columns)}')
        judge_vals.append(_label(row[judge_column], f'{where}: column {judge_column}'))
        human_vals.append(_label(row[human_column], f'{where}: column {human_column}'))
        keys.append(row[group_column].strip() if group_column else str(reader.line_num))
  except OSError as e:
    raise errors.UserError(f'cannot read {path}: {e.strerror}') from e
  except csv.Error as e:
    raise errors.UserError(f'{path}: not a valid CSV file ({e})') from e
  if not group_column:
    return judge_vals, human_vals, keys
  groups: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
  for k, j, h in zip(keys, judge_vals, human_vals):
    groups[k].append((j, h))
  names = sorted(groups)
  return ([float(np.mean([j for j, _ in groups[g]])) for g in names],
          [float(np.mean([h for _, h in groups[g]])) for g in names], names)


def correlation_from_csv(path: str | os.PathLike[str], judge_column: str = 'judge',
                         human_column: str = 'human',
                         group_column: str | None = None) -> Correlation:
  """`correlation` of the labels in a CSV file (see `read_label_pairs`)."""
  judge_vals, human_vals, _ = read_label_pairs(path, judge_column, human_column, group_column)
  return correlation(judge_vals, human_vals)


@dataclasses.dataclass(frozen=True)
class BootstrapDiff:
  """Accuracy of B minus accuracy of A with a percentile interval.

  `diff`, `low`, `high` are in the units of the inputs (fractions for 0/1).
  """
  diff: float
  low: float
  high: float
  confidence: float
  paired: bool
  n_a: int
  n_b: int
  n_resamples: int


def _per_question(scores: Mapping[str, Sequence[float]] | Sequence[float]) -> dict[str, float] | np.ndarray:
  if isinstance(scores, Mapping):
    return {str(k): float(np.mean(np.asarray(v, dtype=np.float64))) for k, v in scores.items()}
  # A flat list is one score per question; a list of lists is runs per question.
  return np.array([float(np.mean(np.asarray(v, dtype=np.float64))) for v in scores])


def bootstrap_accuracy_diff(a: Mapping[str, Sequence[float]] | Sequence[float],
                            b: Mapping[str, Sequence[float]] | Sequence[float], *,
                            confidence: float = 0.95, n_resamples: int = 10_000,
                            seed: int = 0) -> BootstrapDiff:
  """Bootstrap CI for accuracy(b) - accuracy(a).

  Each question's score is the mean of its correctness over runs. When `a`
  and `b` are both mappings keyed by question id with the same keys, the
  questions are resampled jointly (paired), which removes the variance of
  question difficulty; otherwise each side is resampled independently.

  Args:
    a: generation A: `{question_id: [correct per run]}`, or a list with one
      score (or one list of runs) per question.
    b: generation B, the same form.
    confidence: interval mass.
    n_resamples: bootstrap resamples.
    seed: the same seed gives the same interval.

  Returns:
    The observed difference and its interval.
  """
  if not 0.0 < confidence < 1.0:
    raise errors.UserError(f'bootstrap confidence must be in (0, 1), got {confidence}')
  pa, pb = _per_question(a), _per_question(b)
  paired = isinstance(pa, dict) and isinstance(pb, dict) and set(pa) == set(pb)
  if paired:
    ids = sorted(pa)
    xa = np.array([pa[i] for i in ids])
    xb = np.array([pb[i] for i in ids])
  else:
    xa = np.array(list(pa.values())) if isinstance(pa, dict) else pa
    xb = np.array(list(pb.values())) if isinstance(pb, dict) else pb
  if xa.size < 2 or xb.size < 2:
    raise errors.UserError(
        f'bootstrap needs at least 2 questions per side, got {xa.size} and {xb.size}')
  if not (np.all(np.isfinite(xa)) and np.all(np.isfinite(xb))):
    raise errors.UserError('bootstrap: scores must be finite numbers')

  def statistic(sa, sb, axis=-1):
    return np.mean(sb, axis=axis) - np.mean(sa, axis=axis)

  observed = float(statistic(xa, xb))
  if np.all(xa == xa[0]) and np.all(xb == xb[0]):
    # No variation to resample; scipy would warn about a degenerate distribution.
    low = high = observed
  else:
    res = scipy.stats.bootstrap((xa, xb), statistic, n_resamples=n_resamples,
                                paired=paired, vectorized=True,
                                confidence_level=confidence, method='percentile',
                                rng=np.random.default_rng(seed))
    low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
  return BootstrapDiff(observed, low, high, confidence, paired, int(xa.size),
                       int(xb.size), n_resamples)


def correctness_by_question(rows: Sequence[Mapping[str, object]],
                            kind: str = 'final') -> dict[str, list[float]]:
  """`{question_id: [0/1 per run]}` from auto-eval `results.jsonl` rows.

  Args:
    rows: rows written by `autoeval.write_result`.
    kind: 'final' or 'answer_generation'.

  Returns:
    Correctness per question, ordered by run.
  """
  out: dict[str, list[tuple[int, float]]] = collections.defaultdict(list)
  for row in rows:
    try:
      out[str(row['question_id'])].append((int(row['run']), float(bool(row[f'correct_{kind}']))))
    except KeyError as e:
      raise errors.UserError(f'auto-eval result row lacks {e.args[0]!r}: {dict(row)}') from e
  return {q: [v for _, v in sorted(runs)] for q, runs in out.items()}
