"""What answer a candidate commits to, for rankers that compare answers.

The answer step's candidate commits to its `answer`; a self-check that passes
commits to the answer under check, one that revises to its revision. Earlier
steps commit to no answer yet, but what they make available can still be
compared: a summary's text, and — for a decision — the summaries so far
(when stopping) versus nothing (when searching on).
"""

from __future__ import annotations

from restreact_jax.feedback.step_context import Candidate, StepContext


def implied_answer(ctx: StepContext, cand: Candidate) -> str | None:
  """The answer text `cand` commits to, or None (no answer, or unparseable).

  Args:
    ctx: the step's visible state.
    cand: one candidate.

  Returns:
    For answer / relevance / grounding steps, the answer the trajectory would
    carry on with if `cand` were chosen; None otherwise.
  """
  a = cand.action
  if not cand.ok or not isinstance(a, dict):
    return None
  kind = a.get('type')
  if kind == 'Answer':
    return str(a.get('answer', ''))
  if kind == 'Revise_Answer':
    return str(a.get('revised_answer', ''))
  if kind == 'Check_Answer':
    passed = a.get('passed') is True or a.get('passed') in ('True', 'true')
    return ctx.answer if passed else None
  return None


def available_text(ctx: StepContext, cand: Candidate) -> str | None:
  """For summarize and decision steps: the text the candidate makes final.

  A summary candidate contributes its summary; a Terminate freezes the
  summaries so far; a Search contributes nothing yet (None).
  """
  a = cand.action
  if not cand.ok or not isinstance(a, dict):
    return None
  kind = a.get('type')
  if kind == 'LinkSelection':
    return str(a.get('grounded_summarization', ''))
  if kind == 'Terminate':
    return ' '.join(ctx.summaries)
  return None
