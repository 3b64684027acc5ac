"""What a ranker may look at: one step's visible state and its candidates.

`step_contexts(trajectory)` replays a trajectory (the JSON written by the
rollout) and yields, for every step, a `StepContext` holding exactly what the
policy could see when it produced that step's candidates — the question, the
actions taken so far, the search results on screen, the links selected so far,
the answer under check, and the rendered prompt — together with the step's
`Candidate`s. Gold answers are never part of it: rankers that need labels take
them separately (the oracle) so "label-free" is true by construction.

The replay follows the chosen candidate of each step (the one the rollout
continued with), as PAST_ACTIONS in the prompts do.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator, Mapping, Sequence

from restreact_jax import errors
from restreact_jax.search.types import ResultItem

STEP_TYPES = ('decision', 'summarize', 'answer', 'relevance', 'grounding')


@dataclasses.dataclass(frozen=True)
class Candidate:
  """One sampled action of a step.

  Attributes:
    text: the raw completion.
    action: the parsed action dict (`{'type': 'Search', ...}`) or None.
    ok: whether it parsed.
    error: the parse error, if any.
    perplexity: under the policy (inf if unknown).
  """
  text: str
  action: dict[str, Any] | None = None
  ok: bool = False
  error: str | None = None
  perplexity: float = math.inf


@dataclasses.dataclass(frozen=True)
class StepContext:
  """The state a step's candidates were sampled in.

  Attributes:
    question_id, repeat, step_index: where the step comes from.
    step_type: one of STEP_TYPES.
    question: ORIGINAL_QUESTION.
    past_actions: the chosen actions so far, in order; a LinkSelection also
      carries `selected_links` (full ResultItems), as PAST_ACTIONS shows it.
    current_results: the search results on screen (summarize steps).
    shown_links: every result shown so far, current ones included.
    selected_links: every link selected so far.
    summaries: the grounded summaries written so far.
    queries: the search queries issued so far.
    answer: the answer under check (relevance / grounding steps), else None.
    prompt: the rendered prompt.
    prefix_len: length of the prompt's shared preamble (exemplars).
  """
  question_id: str
  repeat: int
  step_index: int
  step_type: str
  question: str
  past_actions: tuple[dict[str, Any], ...] = ()
  current_results: tuple[ResultItem, ...] = ()
  shown_links: tuple[ResultItem, ...] = ()
  selected_links: tuple[ResultItem, ...] = ()
  summaries: tuple[str, ...] = ()
  queries: tuple[str, ...] = ()
  answer: str | None = None
  prompt: str = ''
  prefix_len: int = 0

  @property
  def visible_prompt(self) -> str:
    """The prompt without its shared exemplar preamble: the state itself."""
    return self.prompt[self.prefix_len:] if 0 < self.prefix_len < len(self.prompt) else self.prompt

  def describe(self) -> str:
    """A plain-text rendering of the state, for prompts without a rendered one."""
    lines = [f'Question: {self.question}']
    for a in self.past_actions:
      kind = a.get('type')
      if kind == 'Search':
        lines.append(f'Searched: {a.get("query", "")!r}')
      elif kind == 'LinkSelection':
        ids = [link.link_id for link in a.get('selected_links', ())]
        lines.append(f'Selected links {ids}; summary: {a.get("grounded_summarization", "")}')
      elif kind == 'Terminate':
        lines.append('Stopped searching.')
      elif kind == 'Answer':
        lines.append(f'Answer draft: {a.get("answer", "")}')
      elif kind == 'Revise_Answer':
        lines.append(f'Revised answer: {a.get("revised_answer", "")}')
      elif kind == 'Check_Answer':
        lines.append(f'Answer check passed: {a.get("passed")}')
    for r in self.current_results:
      lines.append(f'Result [link_id={r.link_id}] {r.link_text}: {r.snippet}')
    if self.answer is not None:
      lines.append(f'Answer under check: {self.answer}')
    return '\n'.join(lines)


def _result_item(d: Mapping[str, Any] | ResultItem) -> ResultItem:
  if isinstance(d, ResultItem):
    return d
  return ResultItem(int(d['link_id']), str(d.get('link_text', '')), str(d.get('snippet', '')),
                    str(d.get('doc_id', '')))


def candidates_of(step: Mapping[str, Any]) -> list[Candidate]:
  """The step's candidates with their parses (as recorded by the rollout)."""
  out = []
  for c in step.get('candidates') or []:
    parse = c.get('parse') or {}
    ppl = c.get('perplexity')
    out.append(Candidate(
        text=str(c.get('text', '')), action=parse.get('action'), ok=bool(parse.get('ok')),
        error=parse.get('error'),
        perplexity=float(ppl) if isinstance(ppl, (int, float)) else math.inf))
  return out


def chosen_action(step: Mapping[str, Any]) -> dict[str, Any] | None:
  """The parsed action of the candidate the rollout continued with, if any."""
  chosen = step.get('chosen')
  cands = step.get('candidates') or []
  if not isinstance(chosen, int) or not 0 <= chosen < len(cands):
    return None
  parse = cands[chosen].get('parse') or {}
  return parse.get('action') if parse.get('ok', True) else None


def step_contexts(trajectory: Mapping[str, Any]) -> Iterator[tuple[StepContext, list[Candidate]]]:
  """Replays a trajectory and yields each step's context and candidates.

  Args:
    trajectory: one trajectory dict (the rollout's JSON schema).

  Yields:
    (StepContext, candidates) per step, in order.
  """
  qid = str(trajectory.get('question_id', ''))
  question = str(trajectory.get('question', ''))
  repeat = int(trajectory.get('repeat', 0) or 0)
  past: list[dict[str, Any]] = []
  shown: dict[int, ResultItem] = {}
  selected: dict[int, ResultItem] = {}
  summaries: list[str] = []
  queries: list[str] = []
  pending: tuple[ResultItem, ...] = ()
  answer: str | None = None
  for index, step in enumerate(trajectory.get('steps') or []):
    step_type = step.get('step_type')
    if step_type not in STEP_TYPES:
      raise errors.UserError(
          f'trajectory {qid!r} repeat {repeat} step {index}: unknown step_type {step_type!r}')
    tool = step.get('tool') or None
    tool_results = tuple(_result_item(r) for r in (tool or {}).get('results') or [])
    current: tuple[ResultItem, ...] = ()
    if step_type == 'summarize':
      # The results may be recorded on the summarize step itself or on the
      # decision step that issued the search.
      current = tool_results or pending
      for r in current:
        shown[r.link_id] = r
    ctx = StepContext(
        question_id=qid, repeat=repeat, step_index=index, step_type=step_type,
        question=question, past_actions=tuple(past), current_results=current,
        shown_links=tuple(shown.values()), selected_links=tuple(selected.values()),
        summaries=tuple(summaries), queries=tuple(queries),
        answer=answer if step_type in ('relevance', 'grounding') else None,
        prompt=str(step.get('prompt', '')), prefix_len=int(step.get('prefix_len') or 0))
    yield ctx, candidates_of(step)

    action = chosen_action(step)
    if step_type == 'decision' and tool_results:
      pending = tool_results
    elif step_type == 'summarize':
      pending = ()
    if action is None:
      continue
    kind = action.get('type')
    record = dict(action)
    if kind == 'Search':
      queries.append(str(action.get('query', '')))
    elif kind == 'LinkSelection':
      ids = [i for i in action.get('selected_link_ids') or [] if isinstance(i, int)]
      by_id = {r.link_id: r for r in current}
      record['selected_links'] = [by_id[i] for i in ids if i in by_id]
      for r in record['selected_links']:
        selected[r.link_id] = r
      summaries.append(str(action.get('grounded_summarization', '')))
    elif kind == 'Answer':
      answer = str(action.get('answer', ''))
    elif kind == 'Revise_Answer':
      answer = str(action.get('revised_answer', ''))
    past.append(record)


def context_key(ctx: StepContext) -> tuple[str, int, int]:
  """(question_id, repeat, step_index): how rankings are joined to steps."""
  return ctx.question_id, ctx.repeat, ctx.step_index


def as_sequence(candidates: Sequence[Candidate | str]) -> list[Candidate]:
  """Accepts raw texts too (unparsed candidates) for convenience."""
  return [c if isinstance(c, Candidate) else Candidate(text=str(c)) for c in candidates]
