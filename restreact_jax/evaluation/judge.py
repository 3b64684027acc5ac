"""Judges behind one door: `Judge.judge(question, answer, references) -> bool`.

Two judges: `MatcherJudge` (alias-aware whole-span match, no model) and
`LLMJudge` (the paper's auto-eval: a separate greedy LLM call on the 5-shot
code prompt). Both also judge many items at once with `judge_batch`, which
returns `Verdict`s saying where each decision came from; the LLM judge sends
all its prompts in one `generate` call and falls back to the matcher, counting
the cases, when a verdict cannot be parsed.
"""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence

from restreact_jax import errors
from restreact_jax.evaluation import judge_prompt
from restreact_jax.evaluation import matcher
from restreact_jax.llm import END_MARKER, LLM, SamplingRequest


@dataclasses.dataclass(frozen=True)
class JudgeItem:
  question: str
  answer: str
  references: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class Verdict:
  """One judged answer.

  Attributes:
    correct: the decision.
    source: 'matcher', 'llm', 'fallback' (LLM output unparseable, matcher
      decided) or 'empty' (no answer to judge: incorrect without a call).
    raw: the LLM's continuation, when there was one.
  """
  correct: bool
  source: str
  raw: str = ''


class Judge(Protocol):
  name: str

  def judge(self, question: str, answer: str, references: Sequence[str]) -> bool:
    """Whether `answer` answers `question` as the references do."""
    ...

  def judge_batch(self, items: Sequence[JudgeItem]) -> list[Verdict]:
    """Verdicts for many items, in order."""
    ...


def _check_references(references: Sequence[str]) -> tuple[str, ...]:
  if isinstance(references, str):
    references = (references,)
  refs = tuple(str(r) for r in references if str(r).strip())
  if not refs:
    raise errors.UserError('judge: a question has no reference answers')
  return refs


def make_item(question: str, answer: str | None, references: Sequence[str]) -> JudgeItem:
  """A `JudgeItem` with its references checked (a missing answer becomes '')."""
  return JudgeItem(str(question), '' if answer is None else str(answer),
                   _check_references(references))


class MatcherJudge:
  """Correct iff the answer contains the canonical answer or an alias."""

  name = 'matcher'

  def judge(self, question: str, answer: str, references: Sequence[str]) -> bool:
    return self.judge_batch([make_item(question, answer, references)])[0].correct

  def judge_batch(self, items: Sequence[JudgeItem]) -> list[Verdict]:
    return [Verdict(matcher.matches(it.answer, it.references), 'matcher')
            if it.answer.strip() else Verdict(False, 'empty') for it in items]


class LLMJudge:
  """The paper's auto-eval: greedy continuation of the judge prompt.

  The reference shown as `REF_ANSWER` is the canonical answer (the first
  reference); aliases still count through the matcher fallback.
  """

  def __init__(self, llm: LLM, *, max_tokens: int = 128,
               fallback: MatcherJudge | None = None,
               exemplars: tuple[judge_prompt.JudgeExemplar, ...] | None = None,
               name: str = 'llm_judge'):
    """Args:
      llm: any `LLM`.
      max_tokens: budget for the reasoning comments and the verdict line.
      fallback: decides unparseable verdicts (the matcher by default).
      exemplars: the shots (the packaged five by default).
      name: recorded in evaluation summaries.
    """
    self.llm = llm
    self.max_tokens = max_tokens
    self.fallback = fallback or MatcherJudge()
    self.exemplars = exemplars
    self.name = name
    self.calls = 0
    self.unparseable = 0

  def judge(self, question: str, answer: str, references: Sequence[str]) -> bool:
    return self.judge_batch([make_item(question, answer, references)])[0].correct

  def judge_batch(self, items: Sequence[JudgeItem]) -> list[Verdict]:
    out: list[Verdict | None] = [None] * len(items)
    asks = [i for i, it in enumerate(items) if it.answer.strip()]
    for i, it in enumerate(items):
      if not it.answer.strip():
        out[i] = Verdict(False, 'empty')
    if asks:
      prefix = judge_prompt.prompt_prefix(self.exemplars)
      requests = [SamplingRequest(
          prompt=judge_prompt.render_judge_prompt(
              items[i].question, items[i].answer, items[i].references[0], self.exemplars),
          n=1, temperature=0.0, max_tokens=self.max_tokens, stop=(END_MARKER,),
          prefix=prefix) for i in asks]
      samples = self.llm.generate(requests)
      self.calls += len(requests)
      if len(samples) != len(requests):
        raise errors.UserError(
            f'judge: the LLM returned {len(samples)} results for {len(requests)} requests')
      for i, sample_list in zip(asks, samples):
        raw = sample_list[0].text if sample_list else ''
        verdict = judge_prompt.parse_verdict(raw)
        if verdict is None:
          self.unparseable += 1
          fb = self.fallback.judge_batch([items[i]])[0]
          out[i] = Verdict(fb.correct, 'fallback', raw)
        else:
          out[i] = Verdict(verdict, 'llm', raw)
    return out  # type: ignore[return-value]
