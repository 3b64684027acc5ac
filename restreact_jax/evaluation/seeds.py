"""Across world seeds: does a generation beat the one before, counting every source of noise?

One experiment directory's "mean ± std over runs" measures the sampling of
its evaluation only; the fine-tune behind each generation is itself one draw
(another data order moves it by several points), and that noise is shared
by every eval run of the model. Independent loops — one per world seed, each
with its own world, data and training runs — are independent draws of all of
it, so the spread of a generation step *across seeds* is the honest error
bar, and a paired test across seeds the honest test.

`compare` reads the test-split `report/summary.json` of several loops and
gives, for every step of the policy (gen g → g + 1, and gen 0 → the last
generation) and for every student against its teacher: the per-seed
differences, their mean and standard deviation, how many seeds improved and
how many by more than the std over runs of both models, a one-sided sign
test and a one-sided paired t-test; and the seeds on which *every* step of
the policy, gen 0 → gen 1 → ... → the last, is larger than the std over
runs of both models it compares (self-improvement that holds per seed, not
only on average). `markdown` renders it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import pathlib
from typing import Any, Mapping, Sequence

import numpy as np
import scipy.stats

from restreact_jax import errors


@dataclasses.dataclass(frozen=True)
class Run:
  """One loop's test-split results: `(gen, size) -> (mean, std)` of the final answers."""
  label: str
  world_seed: int | None
  results: Mapping[tuple[int, str], tuple[float, float]]


def read_run(exp_dir: str | pathlib.Path) -> Run:
  """Reads `exp_dir/report/summary.json` (written by the loop's report phase).

  Raises:
    UserError: the file is missing or not the report's summary.
  """
  path = pathlib.Path(exp_dir) / 'report' / 'summary.json'
  try:
    summary = json.loads(path.read_text())
    results = {(int(g['gen']), str(size)): (float(stats['final']['mean']),
                                            float(stats['final']['std']))
               for g in summary['generations'] for size, stats in g['models'].items()}
  except FileNotFoundError:
    raise errors.UserError(f'{path}: not found (has the loop reached its report phase?)') from None
  except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
    raise errors.UserError(f'{path}: not a report summary ({type(e).__name__}: {e})') from None
  seed = summary.get('world_seed')
  return Run(label=pathlib.Path(exp_dir).name, world_seed=None if seed is None else int(seed),
             results=results)


@dataclasses.dataclass(frozen=True)
class Step:
  """`after - before` on every seed, and what the seeds say together.

  Attributes:
    name: e.g. 'gen 1 → gen 2 (xxs)'.
    diffs: per run, in the order given.
    mean: mean difference (points).
    sd: standard deviation of the differences across seeds (ddof 1).
    improved: seeds where `after > before`.
    beyond: per run, whether the difference exceeds the std over runs of both.
    beyond_std: how many runs are `beyond`.
    sign_p: one-sided sign test, P(at least `improved` of the non-tied seeds
      improve | no effect).
    t_p: one-sided paired t-test of mean > 0 (NaN with fewer than 2 seeds or
      no spread).
    before_sum: summed accuracy before, over seeds.
    after_sum: summed accuracy after.
  """
  name: str
  diffs: tuple[float, ...]
  mean: float
  sd: float
  improved: int
  beyond: tuple[bool, ...]
  beyond_std: int
  sign_p: float
  t_p: float
  before_sum: float
  after_sum: float


def _step(name: str, before: Sequence[tuple[float, float]],
          after: Sequence[tuple[float, float]]) -> Step:
  # Accuracies are means of run accuracies (k/n · 100): two equal ones can
  # differ in the last bits (15.416666666666664 vs ...666), which must count
  # as a tie, not a step.
  diffs = np.round(np.array([a[0] - b[0] for a, b in zip(after, before)]), 9)
  improved = int(np.sum(diffs > 0))
  untied = int(np.sum(diffs != 0))
  sign_p = float(scipy.stats.binomtest(improved, untied, 0.5, alternative='greater').pvalue
                 ) if untied else 1.0
  sd = float(np.std(diffs, ddof=1)) if len(diffs) > 1 else math.nan
  t_p = (float(scipy.stats.ttest_1samp(diffs, 0.0, alternative='greater').pvalue)
         if len(diffs) > 1 and sd > 0 else math.nan)
  beyond = tuple(bool(d > max(b[1], a[1])) for d, b, a in zip(diffs, before, after))
  return Step(name=name, diffs=tuple(float(d) for d in diffs), mean=float(np.mean(diffs)),
              sd=sd, improved=improved, beyond=beyond, beyond_std=sum(beyond),
              sign_p=sign_p, t_p=t_p,
              before_sum=float(sum(b[0] for b in before)),
              after_sum=float(sum(a[0] for a in after)))


def policy_size(runs: Sequence[Run]) -> str:
  """The size every run has at gen 0 (the policy), or a `UserError`."""
  sizes = set.intersection(*({s for g, s in r.results if g == 0} for r in runs))
  if len(sizes) != 1:
    raise errors.UserError(f'runs share {len(sizes)} gen-0 sizes ({sorted(sizes)}); '
                           'expected exactly one policy')
  return sizes.pop()


def compare(runs: Sequence[Run]) -> dict[str, Any]:
  """The policy's generation steps and the students' gaps, across runs.

  Only generations (and students) present in every run are compared.

  Returns:
    `{'runs': [...labels], 'seeds': [...], 'policy': size, 'table': {row: [(mean, std), ...]},
    'steps': [Step, ...], 'students': [Step, ...], 'chain': {'name': str, 'holds':
    [bool per run]}}`; `chain` holds on a run when every consecutive step of the
    policy is beyond the std over runs there.

  Raises:
    UserError: fewer than two runs, or no generation after gen 0 shared by all.
  """
  if len(runs) < 2:
    raise errors.UserError(f'compare needs at least 2 runs, got {len(runs)}')
  policy = policy_size(runs)
  shared = set.intersection(*(set(r.results) for r in runs))
  gens = sorted(g for g, s in shared if s == policy)
  if len(gens) < 2:
    raise errors.UserError(f'the runs share only generation(s) {gens} of {policy!r}')
  column = lambda key: [r.results[key] for r in runs]  # noqa: E731
  steps = [_step(f'gen {a} → gen {b} ({policy})', column((a, policy)), column((b, policy)))
           for a, b in zip(gens, gens[1:])]
  chain = {'name': ' → '.join(f'gen {g}' for g in gens) + f' ({policy})',
           'holds': [all(step.beyond[i] for step in steps) for i in range(len(runs))]}
  if len(gens) > 2:
    steps.append(_step(f'gen {gens[0]} → gen {gens[-1]} ({policy})',
                       column((gens[0], policy)), column((gens[-1], policy))))
  students = [_step(f'{size} − its teacher, gen {g}', column((g, policy)), column((g, size)))
              for g, size in sorted(shared) if size != policy and (g, policy) in shared]
  rows = sorted(shared, key=lambda k: (k[0], k[1] != policy, k[1]))
  table = {f'gen {g} ({s})': column((g, s)) for g, s in rows}
  return {'runs': [r.label for r in runs], 'seeds': [r.world_seed for r in runs],
          'policy': policy, 'table': table, 'steps': steps, 'students': students,
          'chain': chain}


def _p(value: float) -> str:
  return '–' if math.isnan(value) else f'{value:.3f}'


def markdown(result: Mapping[str, Any]) -> str:
  """The per-seed table and the across-seed tests as markdown."""
  heads = [f'seed {s}' if s is not None else label
           for s, label in zip(result['seeds'], result['runs'])]
  lines = ['| model | ' + ' | '.join(heads) + ' |', '|---' * (len(heads) + 1) + '|']
  for row, cells in result['table'].items():
    lines.append(f'| {row} | ' + ' | '.join(f'{m:.1f} ± {s:.1f}' for m, s in cells) + ' |')
  lines += ['', '| step | per seed | mean ± sd across seeds | improved | beyond std over runs '
            '| sign test p | paired t p | summed |', '|---|---|---|---|---|---|---|---|']
  n = len(result['runs'])
  for step in (*result['steps'], *result['students']):
    per_seed = ', '.join(f'{d:+.1f}' for d in step.diffs)
    summed = f'{step.before_sum:.1f} → {step.after_sum:.1f}'
    if step in result['students'] and step.before_sum:
      summed += f' ({100 * step.after_sum / step.before_sum:.0f} % of the teacher)'
    lines.append(f'| {step.name} | {per_seed} | {step.mean:+.1f} ± {step.sd:.1f} | '
                 f'{step.improved}/{n} | {step.beyond_std}/{n} | {_p(step.sign_p)} | '
                 f'{_p(step.t_p)} | {summed} |')
  chain = result['chain']
  held = [head for head, ok in zip(heads, chain['holds']) if ok]
  lines += ['', f'Every step of {chain["name"]} beyond the std over runs: '
            f'{len(held)}/{n}' + (f' ({", ".join(held)})' if held else '') + '.']
  return '\n'.join(lines) + '\n'


def as_json(result: Mapping[str, Any]) -> dict[str, Any]:
  """`compare`'s result as JSON-able data (NaN p-values become null)."""
  def clean(x):
    if isinstance(x, tuple):
      return list(x)
    return None if isinstance(x, float) and math.isnan(x) else x

  return {'runs': list(result['runs']), 'seeds': list(result['seeds']),
          'policy': result['policy'],
          'table': {k: [list(c) for c in v] for k, v in result['table'].items()},
          'steps': [{k: clean(v) for k, v in dataclasses.asdict(s).items()}
                    for s in result['steps']],
          'students': [{k: clean(v) for k, v in dataclasses.asdict(s).items()}
                       for s in result['students']],
          'chain': {'name': result['chain']['name'], 'holds': list(result['chain']['holds'])}}
