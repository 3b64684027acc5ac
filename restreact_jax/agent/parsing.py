"""Safe parsing of model outputs: `ast` and literals only, never eval/exec.

A step's output is `# comment` lines followed by one statement
`ACTION_SELECTED[: Type] = Ctor(field=literal, ...)`; the stop marker
`# [END]` is usually already cut off by the sampler. Harmless variants are
accepted: a missing or different annotation, extra whitespace, either quote
style, positional arguments in field order, a trailing `# [END]`, and for the
decision step the bare `Search(query=..., thoughts=...)` / `Terminate(...)`
form that PAST_ACTIONS uses. With the calculator among the caller's `tools`
the decision step also accepts `Calculate(expression=..., thoughts=...)`
(wrapped or bare); without it a `Calculate` is a `wrong_class` like any other
constructor. The parser checks only that the expression is a non-empty
string; evaluating it is the calculator's job (a bad expression is a tool
error the agent records, not a parse failure). Anything else is classified:

  empty              nothing but whitespace / comments
  syntax             not Python, or more than the one statement
  no_action_selected the statement does not assign ACTION_SELECTED
  wrong_class        a constructor this step type does not allow
  bad_field          a missing, unknown, non-literal or ill-typed field
  unknown_link_id    a selected link id that the current results lack
  empty_thoughts     `thoughts` is blank (the ranker calls such actions bad)

`parse_step` never raises, whatever the text.
"""

from __future__ import annotations

import ast
import dataclasses
from typing import Any, Collection

from restreact_jax.llm import END_MARKER

ERRORS = ('syntax', 'no_action_selected', 'wrong_class', 'bad_field', 'unknown_link_id',
          'empty_thoughts', 'empty')

# Outputs longer than this are not worth parsing (and bound parse time).
MAX_TEXT_CHARS = 50_000

# Fields of every constructor the model may write, in positional order.
_FIELDS = {
    'ActionWrapper': ('thoughts', 'action'),
    'Search': ('query', 'thoughts'),
    'Calculate': ('expression', 'thoughts'),
    'Terminate': ('thoughts',),
    'LinkSelection': ('grounded_summarization', 'thoughts', 'selected_link_ids'),
    'Answer': ('thoughts', 'answer'),
    'Check_Answer': ('passed',),
    'Revise_Answer': ('revised_answer',),
}
_ALLOWED = {
    'decision': ('ActionWrapper', 'Search', 'Terminate'),
    'summarize': ('LinkSelection',),
    'answer': ('Answer',),
    'relevance': ('Check_Answer', 'Revise_Answer'),
    'grounding': ('Check_Answer', 'Revise_Answer'),
}


@dataclasses.dataclass(frozen=True)
class ParseResult:
  """The outcome of parsing one candidate.

  Attributes:
    ok: whether `action` is usable.
    action: the action dict (see module docstring of `agent.trajectory`).
    error: one of `ERRORS` when not ok.
    comments: the `#` lines written before the action, without the `#`.
  """
  ok: bool
  action: dict[str, Any] | None
  error: str | None
  comments: list[str] = dataclasses.field(default_factory=list)


class _Bad(Exception):
  """Internal: carries an error class out of the nested checks."""

  def __init__(self, error: str):
    super().__init__(error)
    self.error = error


def _fail(error: str, comments: list[str] | None = None) -> ParseResult:
  return ParseResult(ok=False, action=None, error=error, comments=comments or [])


def _call_fields(node: ast.AST, allowed: Collection[str]) -> tuple[str, dict[str, ast.AST]]:
  """Checks `node` is `Ctor(...)` with Ctor in `allowed`; maps fields to nodes."""
  if not isinstance(node, ast.Call):
    raise _Bad('wrong_class')
  func = node.func
  name = func.id if isinstance(func, ast.Name) else (
      func.attr if isinstance(func, ast.Attribute) else None)
  if name not in allowed:
    raise _Bad('wrong_class')
  fields = _FIELDS[name]
  if len(node.args) > len(fields) or any(isinstance(a, ast.Starred) for a in node.args):
    raise _Bad('bad_field')
  out = dict(zip(fields, node.args))
  for kw in node.keywords:
    if kw.arg is None or kw.arg not in fields or kw.arg in out:
      raise _Bad('bad_field')
    out[kw.arg] = kw.value
  return name, out


def _literal(node: ast.AST | None, kind: type | tuple[type, ...]) -> Any:
  if node is None:
    raise _Bad('bad_field')
  try:
    value = ast.literal_eval(node)
  except Exception:  # pylint: disable=broad-except
    raise _Bad('bad_field') from None
  if kind is str and not isinstance(value, str):
    raise _Bad('bad_field')
  if kind is bool and not isinstance(value, bool):
    raise _Bad('bad_field')
  return value


def _text(fields: dict[str, ast.AST], name: str, *, required: bool = True,
          nonempty: bool = True) -> str:
  if name not in fields:
    if required:
      raise _Bad('bad_field')
    return ''
  value = _literal(fields[name], str)
  if nonempty and not value.strip():
    raise _Bad('bad_field')
  return value


def _thoughts(fields: dict[str, ast.AST]) -> str:
  # A missing `thoughts` is as bad as a blank one (the ranker's rule).
  value = _text(fields, 'thoughts', required=False, nonempty=False)
  if not value.strip():
    raise _Bad('empty_thoughts')
  return value


def _decision(node: ast.AST, calculator: bool) -> dict[str, Any]:
  actions = ('Search', 'Calculate', 'Terminate') if calculator else ('Search', 'Terminate')
  name, fields = _call_fields(node, ('ActionWrapper', *actions))
  if name == 'ActionWrapper':
    thoughts_node = fields.get('thoughts')
    inner_name, inner = _call_fields(fields.get('action'), actions) if (
        'action' in fields) else (None, None)
    if inner_name is None:
      raise _Bad('bad_field')
    # Thoughts belong to the wrapper; accept them on the inner action too.
    if 'thoughts' in inner and thoughts_node is not None:
      raise _Bad('bad_field')
    merged = dict(inner)
    if thoughts_node is not None:
      merged['thoughts'] = thoughts_node
    name, fields = inner_name, merged
  if name == 'Search':
    query = _text(fields, 'query')
    return {'type': 'Search', 'query': query, 'thoughts': _thoughts(fields)}
  if name == 'Calculate':
    expression = _text(fields, 'expression')
    return {'type': 'Calculate', 'expression': expression, 'thoughts': _thoughts(fields)}
  return {'type': 'Terminate', 'thoughts': _thoughts(fields)}


def _summarize(node: ast.AST, valid_link_ids: Collection[int] | None) -> dict[str, Any]:
  _, fields = _call_fields(node, _ALLOWED['summarize'])
  summary = _text(fields, 'grounded_summarization')
  thoughts = _thoughts(fields)
  if 'selected_link_ids' not in fields:
    raise _Bad('bad_field')
  ids = _literal(fields['selected_link_ids'], list)
  if not isinstance(ids, (list, tuple)) or not all(
      isinstance(i, int) and not isinstance(i, bool) for i in ids):
    raise _Bad('bad_field')
  ids = list(dict.fromkeys(ids))  # A repeated id selects the link once.
  if valid_link_ids is not None and any(i not in valid_link_ids for i in ids):
    raise _Bad('unknown_link_id')
  return {'type': 'LinkSelection', 'grounded_summarization': summary, 'thoughts': thoughts,
          'selected_link_ids': ids}


def _answer(node: ast.AST) -> dict[str, Any]:
  _, fields = _call_fields(node, _ALLOWED['answer'])
  answer = _text(fields, 'answer')
  return {'type': 'Answer', 'thoughts': _thoughts(fields), 'answer': answer}


def _check(step_type: str, node: ast.AST) -> dict[str, Any]:
  name, fields = _call_fields(node, _ALLOWED[step_type])
  if name == 'Check_Answer':
    if 'passed' not in fields:
      raise _Bad('bad_field')
    return {'type': 'Check_Answer', 'passed': _literal(fields['passed'], bool)}
  return {'type': 'Revise_Answer', 'revised_answer': _text(fields, 'revised_answer')}


def _comments(lines: list[str]) -> list[str]:
  out = []
  for line in lines:
    stripped = line.strip()
    if stripped.startswith('#') and stripped != END_MARKER:
      out.append(stripped[1:].strip())
  return out


def _is_action_target(stmt: ast.stmt) -> bool:
  if isinstance(stmt, ast.Assign):
    return (len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name) and
            stmt.targets[0].id == 'ACTION_SELECTED')
  if isinstance(stmt, ast.AnnAssign):
    return isinstance(stmt.target, ast.Name) and stmt.target.id == 'ACTION_SELECTED'
  return False


def parse_step(step_type: str, text: str, *,
               valid_link_ids: Collection[int] | None = None,
               tools: Collection[str] = ('search',)) -> ParseResult:
  """Parses one candidate output of a step.

  Args:
    step_type: 'decision', 'summarize', 'answer', 'relevance' or 'grounding'.
    text: the model's completion (stop marker cut or not).
    valid_link_ids: for 'summarize', the ids of CURRENT_SEARCH_RESULTS.
    tools: the agent's tools; with 'calculator' a decision may `Calculate`.

  Returns:
    A `ParseResult`; never raises.
  """
  if step_type not in _ALLOWED:
    raise ValueError(f'unknown step type {step_type!r}')
  try:
    return _parse(step_type, text, valid_link_ids, 'calculator' in tools)
  except Exception:  # pylint: disable=broad-except
    # Defensive: the parser promises never to raise on model output.
    return _fail('syntax')


def _parse(step_type: str, text: Any, valid_link_ids: Collection[int] | None,
           calculator: bool) -> ParseResult:
  if not isinstance(text, str) or not text.strip():
    return _fail('empty')
  if len(text) > MAX_TEXT_CHARS:
    return _fail('syntax')
  lines = text.splitlines()
  try:
    module = ast.parse(text, mode='exec')
  except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
    return _fail('syntax', _comments(_leading_comment_lines(lines)))
  if not module.body:
    return _fail('empty', _comments(lines))
  stmts = module.body
  targets = [s for s in stmts if _is_action_target(s)]
  if not targets:
    return _fail('no_action_selected', _comments(lines[:stmts[0].lineno - 1]))
  if len(stmts) > 1:
    return _fail('syntax', _comments(lines[:stmts[0].lineno - 1]))
  stmt = stmts[0]
  # ast line numbers count only '\n'/'\r' breaks; splitlines also splits on
  # rarer separators, so recompute the prefix from the raw text.
  head = text.split('\n')[:stmt.lineno - 1]
  comments = _comments(head)
  try:
    if step_type == 'decision':
      action = _decision(stmt.value, calculator)
    elif step_type == 'summarize':
      action = _summarize(stmt.value, valid_link_ids)
    elif step_type == 'answer':
      action = _answer(stmt.value)
    else:
      action = _check(step_type, stmt.value)
  except _Bad as bad:
    return _fail(bad.error, comments)
  return ParseResult(ok=True, action=action, error=None, comments=comments)


def _leading_comment_lines(lines: list[str]) -> list[str]:
  out = []
  for line in lines:
    if line.strip() and not line.strip().startswith('#'):
      break
    out.append(line)
  return out
