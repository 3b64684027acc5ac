"""Reading JSON-lines files with errors that name the file and line.

Every phase of the loop writes JSONL (corpus, questions, trajectories,
rankings, eval results). A writer killed mid-line leaves a torn last line;
readers of files that are appended to while the loop runs pass
`torn_tail_ok=True` to drop it (the unit in flight is lost, not the file).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Iterable, Iterator

from restreact_jax import errors


def iter_jsonl_numbered(path: str | os.PathLike[str], *, torn_tail_ok: bool = False,
                        objects_only: bool = True) -> Iterator[tuple[int, Any]]:
  """Yields `(line_number, value)` for each non-blank line.

  Args:
    path: the file.
    torn_tail_ok: skip an unparseable *last* line with no trailing newline.
    objects_only: require every line to be a JSON object.

  Raises:
    UserError: `path:line: ...` for a missing file or a bad line.
  """
  path = pathlib.Path(path)
  try:
    text = path.read_text(encoding='utf-8')
  except FileNotFoundError:
    raise errors.UserError(f'{path}: file not found') from None
  except (OSError, UnicodeDecodeError) as e:
    raise errors.UserError(f'{path}: cannot read ({e})') from None
  lines = text.split('\n')
  for lineno, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      row = json.loads(line)
    except json.JSONDecodeError as e:
      if torn_tail_ok and lineno == len(lines):
        return
      raise errors.UserError(f'{path}:{lineno}: not valid JSON ({e.msg})') from None
    if objects_only and not isinstance(row, dict):
      raise errors.UserError(f'{path}:{lineno}: expected a JSON object')
    yield lineno, row


def iter_jsonl(path: str | os.PathLike[str], *, torn_tail_ok: bool = False,
               objects_only: bool = True) -> Iterator[Any]:
  """Yields each non-blank line's JSON value (see `iter_jsonl_numbered`)."""
  for _, row in iter_jsonl_numbered(path, torn_tail_ok=torn_tail_ok, objects_only=objects_only):
    yield row


def iter_jsonl_files(paths: Iterable[str | os.PathLike[str]], *,
                     torn_tail_ok: bool = False) -> Iterator[dict[str, Any]]:
  """`iter_jsonl` over several files, in order."""
  for path in paths:
    yield from iter_jsonl(path, torn_tail_ok=torn_tail_ok)
