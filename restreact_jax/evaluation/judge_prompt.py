"""The auto-eval judge prompt (5-shot, code-formatted) and its verdict parser.

The layout follows the paper's auto-eval prompt (PAPER_NOTES §5): a module
docstring, a `Check_Answer` stub, then exemplars behind `# Example N:` banners,
each setting `ORIGINAL_QUESTION`, `ANSWER` and `REF_ANSWER`, giving one to
three `#` reasoning comments and ending
`Check_Answer(ORIGINAL_QUESTION, ANSWER, REF_ANSWER) = True  # [END]`.
The open example sets the three variables and leaves the reasoning and the
verdict to the model. The exemplars themselves live in `exemplars/judge.json`.

Every string is written with `repr`, so quotes, newlines, backslashes or a
literal `# [END]` inside a question or answer stay inside one Python literal.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
import re

from restreact_jax import errors
from restreact_jax.llm import END_MARKER

EXEMPLARS_PATH = pathlib.Path(__file__).parent / 'exemplars' / 'judge.json'
VERDICT_CALL = 'Check_Answer(ORIGINAL_QUESTION, ANSWER, REF_ANSWER)'

_HEADER = '''"""Check whether the ANSWER implies the REF_ANSWER to the question."""


def Check_Answer(ORIGINAL_QUESTION, ANSWER, REF_ANSWER):
  """Check whether the ANSWER implies the REF_ANSWER."""
  # todo

'''
_BANNER = '#########################\n# Example {n}:\n#########################\n'

_VERDICT_RE = re.compile(
    r'Check_Answer\s*\([^)]*\)\s*(?:=|==|is)\s*(True|False)\b')
_BARE_RE = re.compile(r'\b(True|False)\b')


@dataclasses.dataclass(frozen=True)
class JudgeExemplar:
  question: str
  answer: str
  ref_answer: str
  reasoning: tuple[str, ...]
  verdict: bool


def _one_line(text: str) -> str:
  # A newline inside a reasoning comment would start uncommented code.
  return ' '.join(text.split())


def load_exemplars(path: str | pathlib.Path = EXEMPLARS_PATH) -> tuple[JudgeExemplar, ...]:
  """Reads judge exemplars from a JSON file (`{"exemplars": [...]}`).

  Args:
    path: the JSON file; the package's `exemplars/judge.json` by default.

  Returns:
    The exemplars in file order.
  """
  try:
    rows = json.loads(pathlib.Path(path).read_text())['exemplars']
    out = []
    for i, row in enumerate(rows):
      reasoning = tuple(_one_line(r) for r in row['reasoning'])
      if not 1 <= len(reasoning) <= 3 or not all(reasoning):
        raise errors.UserError(
            f'{path}: exemplar {i}: needs 1 to 3 non-empty reasoning lines')
      if not isinstance(row['verdict'], bool):
        raise errors.UserError(f'{path}: exemplar {i}: verdict must be true or false')
      out.append(JudgeExemplar(str(row['question']), str(row['answer']),
                               str(row['ref_answer']), reasoning, row['verdict']))
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise errors.UserError(f'cannot read judge exemplars from {path}: {e}') from e
  return tuple(out)


@functools.lru_cache(maxsize=4)
def _default_exemplars() -> tuple[JudgeExemplar, ...]:
  return load_exemplars()


def _variables(question: str, answer: str, ref_answer: str) -> str:
  return (f'ORIGINAL_QUESTION: str = {question!r}\n'
          f'ANSWER: str = {answer!r}\n'
          f'REF_ANSWER: str = {ref_answer!r}\n')


def render_exemplar(n: int, ex: JudgeExemplar) -> str:
  """One closed exemplar, banner included."""
  comments = ''.join(f'# {line}\n' for line in ex.reasoning)
  return (_BANNER.format(n=n) + _variables(ex.question, ex.answer, ex.ref_answer)
          + comments + f'{VERDICT_CALL} = {ex.verdict}  {END_MARKER}\n\n')


def render_judge_prompt(question: str, answer: str, ref_answer: str,
                        exemplars: tuple[JudgeExemplar, ...] | None = None) -> str:
  """The full judge prompt for one (question, answer, reference).

  Args:
    question: the original question.
    answer: the agent's answer to judge.
    ref_answer: the gold answer.
    exemplars: the shots; the packaged five by default.

  Returns:
    The prompt; the model continues it with reasoning comments and the verdict
    line, ending at `# [END]`.
  """
  shots = _default_exemplars() if exemplars is None else exemplars
  body = ''.join(render_exemplar(i + 1, ex) for i, ex in enumerate(shots))
  return (_HEADER + body + _BANNER.format(n=len(shots) + 1)
          + _variables(str(question), str(answer), str(ref_answer)))


def prompt_prefix(exemplars: tuple[JudgeExemplar, ...] | None = None) -> str:
  """The part shared by every judge prompt (an engine may prefill it once)."""
  shots = _default_exemplars() if exemplars is None else exemplars
  return _HEADER + ''.join(render_exemplar(i + 1, ex) for i, ex in enumerate(shots))


def parse_verdict(text: str) -> bool | None:
  """Reads the verdict from the model's continuation.

  Accepts `Check_Answer(...) = True`, `== False`, `is True`; otherwise a
  single bare `True`/`False` (all occurrences agreeing). Anything else,
  including contradicting verdicts, is unparseable.

  Args:
    text: the generated continuation (the stop marker already cut).

  Returns:
    True or False, or None when no verdict can be read.
  """
  text = text.split(END_MARKER)[0]
  # Reasoning comments may quote True/False; only code lines carry the verdict.
  code = '\n'.join(line for line in text.splitlines() if not line.lstrip().startswith('#'))
  calls = _VERDICT_RE.findall(code)
  if calls:
    found = set(calls)
  else:
    found = set(_BARE_RE.findall(code))
  if len(found) != 1:
    return None
  return found.pop() == 'True'
