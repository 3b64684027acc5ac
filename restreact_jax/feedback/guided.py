"""Rollouts guided by a ranker: every step continues with the ranker's pick.

In the paper a rollout continues with the lowest-perplexity candidate and the
ranker only decides which candidate becomes the step's fine-tuning target
(off-policy). With a small policy that makes most later steps worthless as
training data: once the continuation takes an unsupported summary, every step
after it stands on a wrong premise, and a precise rater rejects them all (the
README's "Embedded demo" measures this). `RankerChooser` is the agent's
`Chooser` that continues with the ranker's best parseable candidate instead,
so trajectories stay on sound ground for more hops and the later-hop states
the policy fails on get sound examples too.

With `revise` the chooser also offers the ranker a grounded revision of
every parseable summary candidate (`feedback.revision`): the revisions join
the step's candidates (recorded in the trajectory, so the mixture can train
on them) and the ranker picks among all of them. With `revise_answers` it
offers at every answer step the answer the rater reads off the summary that
completes the question's chain (`revision.revise_answer`), also when none
of the step's samples parses. With `revise_decisions` it offers
`Terminate` at a decision step whose summaries already answer the question
(`rule_ranker.answer_ready`, the rule that makes the rater prefer stopping)
when none of the samples stops: a policy that always searches twice never
offers it on a one-hop question, and the rollout would go on to a hop the
question did not ask for.

It sees what the ranker always sees (`step_context.step_contexts`): the
question, the trajectory so far and the step's candidates, never a gold
answer. A ranker that reads gold labels (`oracle`) is refused, so guided
rollouts stay label-free by construction. It is meant for training rollouts only;
evaluation rolls out the policy alone (lowest perplexity).
"""

from __future__ import annotations

from typing import Sequence

from restreact_jax import errors
from restreact_jax.agent.agent import choose_min_perplexity
from restreact_jax.agent.trajectory import Candidate, Step, Trajectory
from restreact_jax.feedback import revision
from restreact_jax.feedback.rankers import Ranker
from restreact_jax.feedback.step_context import candidates_of, step_contexts
from restreact_jax.search.types import ResultItem


class RankerChooser:
  """Picks the ranker's best parseable candidate of the step under way.

  Args:
    ranker: a label-free ranker (`RuleRanker` in the embedded demo). Rankers
      that need every trajectory of a question (self-consistency) cannot
      rank a trajectory still being written.
    revise: add a grounded revision of each summary candidate before ranking.
    revise_answers: add the rater's answer to each answer step.
    revise_decisions: add `Terminate` to a decision step whose summaries
      answer the question and whose samples all go on.
  """

  def __init__(self, ranker: Ranker, revise: bool = False, revise_answers: bool = False,
               revise_decisions: bool = False):
    if getattr(ranker, 'oracle', False):
      raise errors.UserError(f'guided rollouts need a label-free ranker; {ranker.name!r} '
                             'reads gold answers')
    self.ranker = ranker
    self.revise = revise
    self.revise_answers = revise_answers
    self.revise_decisions = revise_decisions
    self.picks = 0
    self.revisions_taken = 0  # picks that are a revision
    self.overrides = 0  # picks that differ from the lowest perplexity

  def __call__(self, trajectory: Trajectory, step: Step) -> int | None:
    record = trajectory.to_json()
    record['steps'].append(step.to_json())
    *_, (context, candidates) = step_contexts(record)
    if self.revise and step.step_type == 'summarize':
      self._add_revisions(step, context.current_results)
      candidates = candidates_of(step.to_json())
    if self.revise_answers and step.step_type == 'answer':
      self._add_candidate(step, 'answer', revision.revise_answer(
          context, getattr(self.ranker, 'compare', False)))
      candidates = candidates_of(step.to_json())
    if self.revise_decisions and step.step_type == 'decision':
      self._add_candidate(step, 'decision', revision.revise_decision(
          context, step.candidates, getattr(self.ranker, 'calculator', False),
          getattr(self.ranker, 'compare', False)))
      candidates = candidates_of(step.to_json())
    ok = [i for i, c in enumerate(step.candidates) if c.parse['ok']]
    if not ok:
      return None
    if len(ok) == 1:
      pick = ok[0]
    else:
      ranking = self.ranker.rank(context, candidates)
      if ranking.oracle:  # the agent records this as the trajectory's failure
        raise errors.UserError(f'guided rollouts need a label-free ranker; {ranking.ranker!r} '
                               'used gold answers')
      pick = next(i for i in ranking.order if step.candidates[i].parse['ok'])
      self.picks += 1
      self.overrides += pick != choose_min_perplexity(step.candidates)
    self.revisions_taken += step.candidates[pick].finish_reason == revision.REVISION
    return pick

  @staticmethod
  def _add_candidate(step: Step, step_type: str, action: dict | None) -> None:
    """Appends `action` as a revision candidate (unless None or already there)."""
    if action is None:
      return
    text = revision.as_text(action, step_type)
    if any(c.text == text for c in step.candidates):
      return
    step.candidates.append(Candidate(
        text=text, logprobs=[], perplexity=float('inf'), finish_reason=revision.REVISION,
        parse={'ok': True, 'action': action, 'error': None}))

  def _add_revisions(self, step: Step, results: Sequence[ResultItem]) -> None:
    """Appends a grounded revision of each parseable candidate (new texts only)."""
    for c in list(step.candidates):
      if c.parse['ok']:
        self._add_candidate(step, 'summarize', revision.revise_summary(c.parse['action'], results))
