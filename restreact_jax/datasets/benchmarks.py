"""Plain loaders for the shipped Bamboogle and BamTwoogle copies.

Bamboogle (Press et al. 2023, arXiv:2210.03350; 125 two-hop questions; MIT per
its Hugging Face mirror) is the paper's validation set; BamTwoogle (Aksitov et
al. 2023, arXiv:2312.10003; 100 questions; CC BY 4.0) its test set. Provenance
and licences are in `data/<name>/SOURCE.md` and `LICENSE`.
"""

from __future__ import annotations

import json
import pathlib

from restreact_jax import errors

DATA_DIR = pathlib.Path(__file__).resolve().parent / 'data'
FILES: dict[str, pathlib.Path] = {
    'bamboogle': DATA_DIR / 'bamboogle' / 'bamboogle.jsonl',
    'bamtwoogle': DATA_DIR / 'bamtwoogle' / 'bamtwoogle.jsonl',
}
SIZES: dict[str, int] = {'bamboogle': 125, 'bamtwoogle': 100}


def load(name: str) -> list[dict[str, object]]:
  """Returns a shipped dataset's examples in their original order.

  Args:
    name: 'bamboogle' or 'bamtwoogle'.

  Returns:
    `{"id", "question", "answer", "answers"}` dicts; `answers[0] == answer`.
  """
  if name not in FILES:
    raise errors.UserError(f'unknown dataset {name!r}; known: {", ".join(sorted(FILES))}')
  with open(FILES[name], encoding='utf-8') as f:
    return [json.loads(line) for line in f if line.strip()]


def load_bamboogle() -> list[dict[str, object]]:
  """The 125 Bamboogle questions."""
  return load('bamboogle')


def load_bamtwoogle() -> list[dict[str, object]]:
  """The 100 BamTwoogle questions."""
  return load('bamtwoogle')
