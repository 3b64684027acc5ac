"""The grammar of each step's completion, for constrained decoding.

Each pattern is the statement `prompts.render_target` writes for its step
type (comment lines first, then the action head, the fields in their order,
and the stop marker), with every string field a one-line Python string
literal with no bare '#', so the stop marker can only come at the end. Under
`AgentConfig.constrain` the engine decodes inside it (`grammar.py`), so a
completion is always a statement of the type its step declares: the model
still chooses every field's text, the search-or-terminate and pass-or-revise
choices and the link ids, but it cannot drop a field, write one the type
does not have, or break the string syntax. The parser checks
what comes back as before (`parsing.parse_step`); model output is never run.

A summarize step's link ids are limited to the current search results'
(`[]` when the search found nothing).
"""

from __future__ import annotations

import functools
from typing import Sequence

from restreact_jax import grammar as g
from restreact_jax.agent import prompts
from restreact_jax.llm import END_MARKER


def _ids(valid_link_ids: tuple[int, ...] | None) -> g.Pattern:
  if valid_link_ids is None:
    return g.int_list()
  if not valid_link_ids:
    return g.Lit('[]')  # a search without results: nothing to select
  one = g.alt(*[str(int(i)) for i in sorted(set(valid_link_ids))])
  return g.seq('[', g.optional(g.seq(one, g.Repeat(g.seq(', ', one)))), ']')


@functools.lru_cache(maxsize=256)
def _pattern(step_type: str, calculator: bool,
             valid_link_ids: tuple[int, ...] | None) -> g.Pattern:
  # The stop marker must not open inside a string or a comment, or the
  # sampler would stop there: '#' is written `\x23` in strings (as
  # `prompts.py_str` writes the marker) and comments hold no '['.
  text = g.py_string(excluded='#')
  comments = g.Repeat(g.seq('#', g.Repeat(g.CharSet('\n[', negate=True)), '\n'))
  head = prompts.ACTION_HEADS[step_type]
  if step_type == 'decision':
    actions = [g.seq('Search(query=', text, ')'), g.Lit('Terminate()')]
    if calculator:
      actions.append(g.seq('Calculate(expression=', text, ')'))
    body = g.seq(text, ', action=', g.alt(*actions), ')')
  elif step_type == 'summarize':
    body = g.seq(text, ', thoughts=', text, ', selected_link_ids=', _ids(valid_link_ids), ')')
  elif step_type == 'answer':
    body = g.seq(text, ', answer=', text, ')')
  elif step_type in ('relevance', 'grounding'):
    body = g.alt(g.seq(' Check_Answer(passed=', g.alt('True', 'False'), ')'),
                 g.seq(' Revise_Answer(revised_answer=', text, ')'))
  else:
    raise ValueError(f'unknown step type {step_type!r}')
  return g.seq(comments, head, body, '  ' + END_MARKER)


def step_grammar(step_type: str, tools: Sequence[str] = prompts.DEFAULT_TOOLS,
                 valid_link_ids: Sequence[int] | None = None) -> g.Pattern:
  """The pattern a `step_type` completion must follow.

  Args:
    step_type: one of `prompts.ACTION_HEADS`.
    tools: the agent's tools (the calculator adds `Calculate` decisions).
    valid_link_ids: a summarize step's current result ids (None: any ids;
      empty: only `[]`).
  """
  ids = None
  if step_type == 'summarize' and valid_link_ids is not None:
    ids = tuple(sorted({int(i) for i in valid_link_ids}))
  return _pattern(step_type, prompts.has_calculator(tools), ids)
