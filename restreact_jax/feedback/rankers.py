"""The AI-feedback ranking door: `Ranker.rank(step_context, candidates) -> Ranking`.

In the paper (PAPER_NOTES §4) a ranker sees what the model could see plus a
step's sampled candidates and orders them; the top-ranked candidate becomes
that step's fine-tuning target (off-policy: the rollout itself continued with
the lowest-perplexity sample). Implementations:

* `llm_ranker.LLMRanker` — the paper's 0-shot rater prompt on any `LLM`;
* `rule_ranker.RuleRanker` — the rater instructions as explicit rules;
* `consistency.SelfConsistencyRanker` — agreement of answers across the
  trajectories of one question;
* `oracle.OracleRanker` — gold answers; ablations only, always `oracle=True`;
* `WeightedRanker` (here) — a weighted sum of normalised scores.

`rank_batch` ranks many steps at once (the LLM ranker sends one `generate`
call); `rank_trajectories` ranks every step of many trajectories and
`ranking_row` is the JSONL row the mixture builder joins on
`(question_id, repeat, step_index)`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterable, Mapping, Protocol, Sequence

import tqdm

from restreact_jax import errors
from restreact_jax.feedback.step_context import Candidate, StepContext, step_contexts

# A tool call (a search, or a calculation with the calculator on) gathers
# evidence instead of committing to an answer; both score like a search.
TOOL_ACTIONS = ('Search', 'Calculate')


@dataclasses.dataclass(frozen=True)
class Ranking:
  """A ranker's verdict on one step's candidates.

  Attributes:
    order: candidate indices, best first (a permutation of range(n)).
    scores: one score per candidate, by candidate index (higher is better).
    explanation: why, in words (rule scores, the LLM's explanation, ...).
    ranker: the ranker's name.
    oracle: True when gold labels were used (never for the default mixture).
    status: 'ok', or how the output was repaired ('partial', 'fallback', ...).
  """
  order: list[int]
  scores: list[float]
  explanation: str
  ranker: str
  oracle: bool = False
  status: str = 'ok'

  @property
  def best(self) -> int:
    return self.order[0]


class Ranker(Protocol):
  name: str

  def rank(self, context: StepContext, candidates: Sequence[Candidate]) -> Ranking:
    """Orders one step's candidates, best first."""
    ...

  def rank_batch(self, items: Sequence[tuple[StepContext, Sequence[Candidate]]]) -> list[Ranking]:
    """Ranks many steps; same results as calling `rank` on each."""
    ...


def order_by_scores(scores: Sequence[float], candidates: Sequence[Candidate]) -> list[int]:
  """Indices by score (high first); ties go to lower perplexity, then index.

  The tie-break is the rollout's own choice rule, so a ranker that cannot
  tell candidates apart defers to the policy.
  """
  def key(i: int) -> tuple[float, float, int]:
    s = scores[i]
    ppl = candidates[i].perplexity if i < len(candidates) else math.inf
    return (-s if math.isfinite(s) else math.inf, ppl if math.isfinite(ppl) else math.inf, i)
  return sorted(range(len(scores)), key=key)


class SequentialRanker:
  """Mixin: `rank_batch` by calling `rank` on each item."""

  def rank_batch(self, items: Sequence[tuple[StepContext, Sequence[Candidate]]]) -> list[Ranking]:
    return [self.rank(ctx, cands) for ctx, cands in items]  # type: ignore[attr-defined]


def _normalised(scores: Sequence[float]) -> list[float]:
  """Min-max to [0, 1] so rankers on different scales can be added."""
  finite = [s for s in scores if math.isfinite(s)]
  if not finite:
    return [0.5] * len(scores)
  lo, hi = min(finite), max(finite)
  if hi == lo:
    return [0.5 if math.isfinite(s) else 0.0 for s in scores]
  return [(s - lo) / (hi - lo) if math.isfinite(s) else (0.0 if s < 0 else 1.0) for s in scores]


class WeightedRanker:
  """A weighted sum of other rankers' min-max normalised scores.

  Each component ranks the whole batch in one go (so an LLM ranker inside
  still makes one `generate` call).
  """

  def __init__(self, components: Sequence[tuple[Ranker, float]]):
    """Args:
      components: (ranker, weight) pairs; weights must be >= 0, not all 0.
    """
    if not components:
      raise errors.UserError('WeightedRanker needs at least one (ranker, weight) pair')
    weights = [float(w) for _, w in components]
    if any(w < 0 or not math.isfinite(w) for w in weights) or sum(weights) == 0:
      raise errors.UserError(f'WeightedRanker weights must be >= 0 and not all 0, got {weights}')
    self.components = [(r, w) for (r, _), w in zip(components, weights)]
    self.name = 'weighted(' + ','.join(f'{r.name}:{w:g}' for r, w in self.components) + ')'
    # Reads gold labels if any component does (its rankings say so too).
    self.oracle = any(getattr(r, 'oracle', False) for r, w in self.components if w)

  def rank(self, context: StepContext, candidates: Sequence[Candidate]) -> Ranking:
    return self.rank_batch([(context, candidates)])[0]

  def rank_batch(self, items: Sequence[tuple[StepContext, Sequence[Candidate]]]) -> list[Ranking]:
    per_component = [r.rank_batch(items) for r, _ in self.components]
    out = []
    for i, (_, cands) in enumerate(items):
      total = [0.0] * len(cands)
      parts, statuses, oracle = [], [], False
      for (ranker, w), rankings in zip(self.components, per_component):
        rk = rankings[i]
        for j, s in enumerate(_normalised(rk.scores)):
          total[j] += w * s
        oracle = oracle or rk.oracle
        parts.append(f'[{ranker.name} x{w:g}: {" > ".join(f"#{k + 1}" for k in rk.order)}] '
                     f'{rk.explanation}')
        if rk.status != 'ok':
          statuses.append(f'{ranker.name}:{rk.status}')
      out.append(Ranking(order=order_by_scores(total, cands), scores=total,
                         explanation='\n'.join(parts), ranker=self.name, oracle=oracle,
                         status=';'.join(statuses) or 'ok'))
    return out


def rank_trajectories(ranker: Ranker, trajectories: Iterable[Mapping[str, Any]], *,
                      batch_size: int = 256, min_candidates: int = 2,
                      progress: bool = True) -> list[tuple[StepContext, list[Candidate], Ranking]]:
  """Ranks every step (with at least `min_candidates` candidates) of many trajectories.

  Args:
    ranker: any `Ranker`.
    trajectories: trajectory dicts.
    batch_size: steps per `rank_batch` call (one LLM `generate` call each).
    min_candidates: steps with fewer candidates have nothing to rank.
    progress: show a tqdm bar.

  Returns:
    (context, candidates, ranking) per ranked step, in trajectory order.
  """
  items = [(ctx, cands) for t in trajectories for ctx, cands in step_contexts(t)
           if len(cands) >= min_candidates]
  out = []
  bar = tqdm.tqdm(total=len(items), desc=f'ranking ({ranker.name})', unit='step',
                  disable=not progress)
  for start in range(0, len(items), batch_size):
    chunk = items[start:start + batch_size]
    rankings = ranker.rank_batch(chunk)
    if len(rankings) != len(chunk):
      raise errors.UserError(f'ranker {ranker.name} returned {len(rankings)} rankings for '
                             f'{len(chunk)} steps')
    for (ctx, cands), rk in zip(chunk, rankings):
      out.append((ctx, cands, rk))
    bar.update(len(chunk))
  bar.close()
  return out


def ranking_row(context: StepContext, ranking: Ranking) -> dict[str, Any]:
  """The JSONL row for one ranked step (`order` is 0-based candidate indices)."""
  return {'question_id': context.question_id, 'repeat': context.repeat,
          'step_index': context.step_index, 'step_type': context.step_type,
          'order': list(ranking.order), 'scores': [float(s) for s in ranking.scores],
          'explanation': ranking.explanation, 'ranker': ranking.ranker,
          'oracle': ranking.oracle, 'status': ranking.status}
