"""The paper's ranking "reward model": an LLM rates a step's candidates 0-shot.

All steps handed to `rank_batch` become one `generate` call (greedy), so a
generation's worth of ranking prompts is batched by the engine or sent
together to an HTTP endpoint. Unreadable replies fall back to the
lowest-perplexity order (the rollout's own choice) and say so in `status`.
"""

from __future__ import annotations

from typing import Sequence

from restreact_jax import errors
from restreact_jax.feedback import ranker_prompt
from restreact_jax.feedback.rankers import Ranking, order_by_scores
from restreact_jax.feedback.step_context import Candidate, StepContext
from restreact_jax.llm import LLM, SamplingRequest


class LLMRanker:
  """Ranks candidates by asking an `LLM` with the rater prompt."""

  def __init__(self, llm: LLM, *, max_tokens: int = 256, temperature: float = 0.0,
               stop: tuple[str, ...] = ('\n***', '\n\n\n'), seed: int = 0,
               name: str = 'llm'):
    """Args:
      llm: any `LLM` (ideally an instruction-following one).
      max_tokens: budget for the three-line reply.
      temperature: 0 is greedy (the default; ratings should be reproducible).
      stop: strings that end a reply.
      seed: sampling seed when temperature > 0.
      name: recorded in every `Ranking`.
    """
    self.llm = llm
    self.max_tokens = max_tokens
    self.temperature = temperature
    self.stop = tuple(stop)
    self.seed = seed
    self.name = name

  def prompt(self, context: StepContext, candidates: Sequence[Candidate]) -> str:
    """The rater prompt for one step."""
    inputs = context.visible_prompt or context.describe()
    return ranker_prompt.render_ranker_prompt(context.step_type, inputs,
                                              [c.text for c in candidates])

  def rank(self, context: StepContext, candidates: Sequence[Candidate]) -> Ranking:
    return self.rank_batch([(context, candidates)])[0]

  def rank_batch(self, items: Sequence[tuple[StepContext, Sequence[Candidate]]]) -> list[Ranking]:
    out: list[Ranking | None] = [None] * len(items)
    ask = []
    for i, (_, cands) in enumerate(items):
      if len(cands) <= 1:
        # Nothing to compare: no call.
        out[i] = Ranking(list(range(len(cands))), [0.0] * len(cands),
                         'single candidate', self.name)
      else:
        ask.append(i)
    if ask:
      requests = [SamplingRequest(prompt=self.prompt(*items[i]), n=1,
                                  temperature=self.temperature, max_tokens=self.max_tokens,
                                  stop=self.stop, seed=self.seed) for i in ask]
      replies = self.llm.generate(requests)
      if len(replies) != len(requests):
        raise errors.UserError(
            f'ranker: the LLM returned {len(replies)} results for {len(requests)} requests')
      for i, samples in zip(ask, replies):
        cands = items[i][1]
        n = len(cands)
        text = samples[0].text if samples else ''
        by_perplexity = order_by_scores([0.0] * n, cands)
        parsed = ranker_prompt.parse_ranking_output(text, n, by_perplexity)
        scores = [0.0] * n
        for pos, idx in enumerate(parsed.order):
          scores[idx] = float(n - pos)  # Borda points from the rank
        explanation = parsed.explanation or (' '.join(text.split())[:500] if text else '')
        out[i] = Ranking(parsed.order, scores, explanation, self.name, False, parsed.status)
    return out  # type: ignore[return-value]
