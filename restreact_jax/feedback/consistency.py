"""Self-consistency: prefer candidates that agree with the other trajectories.

A label-free ranker that needs the group of trajectories of one question
(gen 2 rolls out several per question): the answer most trajectories reach is
more often right, so a candidate whose answer agrees with the other
trajectories' final answers ranks higher. Agreement with one other answer is
0.75 x recall + 0.25 x precision of its *core* (content tokens not already in
the question) in the candidate's core — recall-heavy because long-form answers
carry bridge entities the others may omit — averaged over the group's other
trajectories (a hedge naming every rival answer is not caught here; the rule
rater's grounding is); the candidate's own trajectory is left out so a
rollout does not vote for itself. Summaries and Terminate are scored by how
much of the group's answers they already contain; Search by the complement
(search on while the consensus is not yet found). Without at least
`min_group` other answers every score is 0 (status 'no_group').
"""

from __future__ import annotations

import collections
from typing import Any, Iterable, Mapping, Sequence

from restreact_jax.feedback import text_overlap as ov
from restreact_jax.feedback.implied_answer import available_text, implied_answer
from restreact_jax.feedback.rankers import TOOL_ACTIONS, Ranking, SequentialRanker, order_by_scores
from restreact_jax.feedback.step_context import Candidate, StepContext


def _core(text: str, question: str) -> set[str]:
  return ov.new_tokens(text, question)


def _agreement(mine: set[str], other: set[str]) -> float:
  common = len(mine & other)
  if not common:
    return 0.0
  return 0.75 * common / len(other) + 0.25 * common / len(mine)


def _recall(text: set[str], answer: set[str]) -> float:
  return len(text & answer) / len(answer) if answer else 0.0


class SelfConsistencyRanker(SequentialRanker):
  """Ranks by agreement with the group's final answers."""

  def __init__(self, trajectories: Iterable[Mapping[str, Any]], *, min_group: int = 2,
               name: str = 'consistency'):
    """Args:
      trajectories: all trajectories of the generation (grouped by question_id).
      min_group: fewest other final answers needed to vote.
      name: recorded in every `Ranking`.
    """
    self.finals: dict[str, list[tuple[int, str]]] = collections.defaultdict(list)
    for t in trajectories:
      answer = t.get('final_answer')
      if answer and str(answer).strip():
        self.finals[str(t.get('question_id'))].append((int(t.get('repeat', 0) or 0), str(answer)))
    self.min_group = min_group
    self.name = name

  def rank(self, context: StepContext, candidates: Sequence[Candidate]) -> Ranking:
    others = [a for r, a in self.finals.get(context.question_id, []) if r != context.repeat]
    n = len(candidates)
    if len(others) < self.min_group:
      return Ranking(order_by_scores([0.0] * n, candidates), [0.0] * n,
                     f'{len(others)} other final answer(s) for this question: no vote',
                     self.name, status='no_group')
    cores = [_core(a, context.question) for a in others]
    scores, notes = [], []
    for k, cand in enumerate(candidates, 1):
      answer = implied_answer(context, cand)
      if answer is not None:
        mine = _core(answer, context.question)
        score = sum(_agreement(mine, c) for c in cores) / len(cores)
        notes.append(f'#{k}: answer agreement {score:.2f}')
      else:
        text = available_text(context, cand)
        if text is not None:
          mine = _core(text, context.question)
          score = sum(_recall(mine, c) for c in cores) / len(cores)
          notes.append(f'#{k}: contains {score:.2f} of the group answers')
        elif cand.ok and isinstance(cand.action, dict) and cand.action.get('type') in TOOL_ACTIONS:
          have = _core(' '.join(context.summaries), context.question)
          score = 1.0 - sum(_recall(have, c) for c in cores) / len(cores)
          notes.append(f'#{k}: search on, group answers still missing {score:.2f}')
        else:
          score = -1.0
          notes.append(f'#{k}: no answer (unparseable or failed check)')
      scores.append(score)
    return Ranking(order_by_scores(scores, candidates), scores,
                   f'agreement with {len(others)} other trajectories; ' + '; '.join(notes),
                   self.name)
