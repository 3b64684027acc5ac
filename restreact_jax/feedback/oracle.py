"""The oracle ranker: gold answers decide. For ablations only.

The paper's ranker never sees labels; this one does, to measure how much a
label-free ranker leaves on the table. It is never a default, and every
`Ranking` it makes says `oracle=True` so an oracle-ranked mixture cannot be
mistaken for a label-free one. A candidate scores 1 when the answer it commits
to (or the summary it writes, or the summaries a Terminate freezes) contains a
gold answer or alias (`evaluation.matcher`); a Search scores 1 while the gold
answer is not yet in the summaries.
"""

from __future__ import annotations

from typing import Mapping, Sequence

from restreact_jax import errors
from restreact_jax.evaluation import matcher
from restreact_jax.feedback.implied_answer import available_text, implied_answer
from restreact_jax.feedback.rankers import TOOL_ACTIONS, Ranking, SequentialRanker, order_by_scores
from restreact_jax.feedback.step_context import Candidate, StepContext


class OracleRanker(SequentialRanker):
  """Ranks by whether candidates lead to a gold answer."""

  oracle = True  # reads gold labels: ablations only

  def __init__(self, answers_by_question: Mapping[str, Sequence[str]], name: str = 'oracle'):
    """Args:
      answers_by_question: `{question_id: [canonical, *aliases]}`.
      name: recorded in every `Ranking`.
    """
    self.answers = {str(k): [str(a) for a in v] for k, v in answers_by_question.items()}
    self.name = name

  def rank(self, context: StepContext, candidates: Sequence[Candidate]) -> Ranking:
    gold = self.answers.get(context.question_id)
    if not gold:
      raise errors.UserError(f'oracle ranker: no gold answers for question {context.question_id!r}')
    scores, notes = [], []
    for k, cand in enumerate(candidates, 1):
      text = implied_answer(context, cand)
      if text is None:
        text = available_text(context, cand)
      if text is not None:
        score = 1.0 if matcher.matches(text, gold) else 0.0
      elif cand.ok and isinstance(cand.action, dict) and cand.action.get('type') in TOOL_ACTIONS:
        score = 0.0 if matcher.matches(' '.join(context.summaries), gold) else 1.0
      else:
        score = -1.0
      scores.append(score)
      notes.append(f'#{k}: {score:+.0f}')
    return Ranking(order_by_scores(scores, candidates), scores,
                   f'gold {gold[0]!r}: ' + ', '.join(notes), self.name, oracle=True)
