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

It sees what the ranker always sees (`step_context.step_contexts`): the
question, the trajectory so far and the step's candidates, never a gold
answer. A ranker that reads gold labels (`oracle`) is refused, so guided
rollouts stay label-free by construction. It is meant for training rollouts only;
evaluation rolls out the policy alone (lowest perplexity).
"""

from __future__ import annotations

from restreact_jax import errors
from restreact_jax.agent.agent import choose_min_perplexity
from restreact_jax.agent.trajectory import Step, Trajectory
from restreact_jax.feedback.rankers import Ranker
from restreact_jax.feedback.step_context import step_contexts


class RankerChooser:
  """Picks the ranker's best parseable candidate of the step under way.

  Args:
    ranker: a label-free ranker (`RuleRanker` in the embedded demo). Rankers
      that need every trajectory of a question (self-consistency) cannot
      rank a trajectory still being written.
  """

  def __init__(self, ranker: Ranker):
    if getattr(ranker, 'oracle', False):
      raise errors.UserError(f'guided rollouts need a label-free ranker; {ranker.name!r} '
                             'reads gold answers')
    self.ranker = ranker
    self.picks = 0
    self.overrides = 0  # picks that differ from the lowest perplexity

  def __call__(self, trajectory: Trajectory, step: Step) -> int | None:
    ok = [i for i, c in enumerate(step.candidates) if c.parse['ok']]
    if len(ok) < 2:
      return ok[0] if ok else None
    record = trajectory.to_json()
    record['steps'].append(step.to_json())
    *_, (context, candidates) = step_contexts(record)
    ranking = self.ranker.rank(context, candidates)
    if ranking.oracle:  # the agent records this as the trajectory's failure
      raise errors.UserError(f'guided rollouts need a label-free ranker; {ranking.ranker!r} '
                             'used gold answers')
    pick = next(i for i in ranking.order if step.candidates[i].parse['ok'])
    self.picks += 1
    self.overrides += pick != choose_min_perplexity(step.candidates)
    return pick
