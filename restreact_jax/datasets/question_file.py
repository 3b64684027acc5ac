"""Loads a user's question file (JSON lines or CSV) and validates every row.

Each row needs a non-empty `question`; `answer` (a string) and/or `answers`
(a list of strings in JSONL; a JSON list or `|`-separated text in CSV) are
optional, and so is `id` (default `<file stem>-<line>`). Bad rows are reported
by line number, one line each, and skipped; the good rows are kept. With
`strict=True` all problems are raised together as one `UserError`.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import pathlib
import sys
from typing import Any, Iterator, TextIO

from restreact_jax import errors


@dataclasses.dataclass
class QuestionFile:
  """What a question file held.

  Attributes:
    questions: valid rows as `{"id", "question", "answer", "answers"}`
      (`answer` is '' and `answers` empty when the file has no labels).
    problems: `(line number, reason)` for each skipped row.
  """
  questions: list[dict[str, Any]]
  problems: list[tuple[int, str]]


def _answers(row: dict[str, Any], from_csv: bool) -> list[str]:
  """The row's answers, answer first; raises ValueError with the reason."""
  out: list[str] = []
  answer = row.get('answer')
  if answer not in (None, ''):
    if not isinstance(answer, str):
      raise ValueError('"answer" must be a string')
    out.append(answer.strip())
  answers = row.get('answers')
  if answers not in (None, ''):
    if from_csv and isinstance(answers, str):
      text = answers.strip()
      try:
        answers = json.loads(text) if text.startswith('[') else text.split('|')
      except json.JSONDecodeError:
        raise ValueError('"answers" starts with [ but is not a JSON list') from None
    if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
      raise ValueError('"answers" must be a list of strings')
    out.extend(a.strip() for a in answers)
  if any(not a for a in out):
    raise ValueError('an answer is empty')
  return list(dict.fromkeys(out))


def _rows(path: pathlib.Path, f: TextIO) -> Iterator[tuple[int, Any]]:
  """Yields (line number, row or the reason it could not be read)."""
  if path.suffix.lower() == '.csv':
    reader = csv.DictReader(f)
    if not reader.fieldnames or 'question' not in [n.strip() for n in reader.fieldnames]:
      raise errors.UserError(f'{path}:1: CSV header must have a "question" column')
    for row in reader:
      if None in row:  # DictReader's key for fields beyond the header
        yield reader.line_num, ValueError('more fields than the header has')
        continue
      yield reader.line_num, {k.strip(): v for k, v in row.items()}
  else:
    for lineno, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        yield lineno, json.loads(line)
      except json.JSONDecodeError as e:
        yield lineno, ValueError(f'not valid JSON ({e.msg})')


def load_question_file(path: str | pathlib.Path, strict: bool = False,
                       warn: TextIO | None = sys.stderr) -> QuestionFile:
  """Reads and validates a question file.

  Args:
    path: a `.jsonl`/`.json` (one object per line) or `.csv` file.
    strict: raise one `UserError` listing every bad row instead of skipping.
    warn: where to write one warning line per skipped row (None: silent).

  Returns:
    The valid questions and the problems found.
  """
  path = pathlib.Path(path)
  if not path.exists():
    raise errors.UserError(f'{path}: question file not found')
  if path.suffix.lower() not in ('.jsonl', '.json', '.csv'):
    raise errors.UserError(f'{path}: question files must be .jsonl or .csv')
  questions: list[dict[str, Any]] = []
  problems: list[tuple[int, str]] = []
  seen: set[str] = set()
  with open(path, encoding='utf-8', newline='') as f:
    for lineno, row in _rows(path, f):
      try:
        if isinstance(row, ValueError):
          raise row
        if not isinstance(row, dict):
          raise ValueError('expected a JSON object')
        question = row.get('question')
        if not isinstance(question, str) or not question.strip():
          raise ValueError('"question" is missing or empty')
        answers = _answers(row, from_csv=path.suffix.lower() == '.csv')
        qid = row.get('id') or f'{path.stem}-{lineno}'
        if not isinstance(qid, (str, int)):
          raise ValueError('"id" must be a string or an integer')
        qid = str(qid)
        if qid in seen:
          raise ValueError(f'duplicate id {qid!r}')
      except ValueError as e:
        problems.append((lineno, str(e)))
        if warn is not None and not strict:
          print(f'{path}:{lineno}: skipped: {e}', file=warn)
        continue
      seen.add(qid)
      questions.append({'id': qid, 'question': question.strip(),
                        'answer': answers[0] if answers else '', 'answers': answers})
  if strict and problems:
    listed = '; '.join(f'line {n}: {reason}' for n, reason in problems)
    raise errors.UserError(f'{path}: {len(problems)} bad row(s): {listed}')
  if not questions:
    raise errors.UserError(f'{path}: no valid questions'
                           + (f' ({len(problems)} bad row(s))' if problems else ''))
  return QuestionFile(questions=questions, problems=problems)
