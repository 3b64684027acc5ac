"""Choice questions read label-free: which option do the summaries make right?

"Who was born first, A or B?" names its answers, so the claim rules accept
either: both are stated names, and a conclusion that repeats the question is
allowed for it. A rater reading the summaries would not: if they state A's
year and B's year, one option is right. Read as written, the question also
asks for a relation "first" (or "older") that no summary states, so its chain
never looks complete; `as_compared` reads it for the dated relation instead
("Who is older, A or B?" asks when each was born). `expected` reads that — the options
("..., A or B?"), whether the earlier or the later is asked ("first",
"older", "earlier" or "last", "younger", "later"), and the one year each
option's sentences state — and says nothing when any of it is missing or
ambiguous (no year, two years for one option, a sentence naming both, equal
years). Only the summaries the policy wrote are read; no gold answer or world
fact is used.
"""

from __future__ import annotations

import re
from typing import Sequence

from restreact_jax.feedback import claims as cl

_OPTIONS_RE = re.compile(r',\s*(?P<a>[^,?]+?)\s+or\s+(?P<b>[^,?]+?)\s*\?\s*$')
_EARLIER_RE = re.compile(r'\b(first|earlier|earliest|older|oldest)\b', re.IGNORECASE)
_LATER_RE = re.compile(r'\b(last|later|latest|younger|youngest|newer|newest)\b', re.IGNORECASE)
_YEAR_RE = re.compile(r'(?<![\d.])\d{4}(?!\d|\.\d)')
_AGE_RE = re.compile(r'\b(?:is|was)\s+(?:older|oldest|younger|youngest)\b', re.IGNORECASE)
_ORDER_RE = re.compile(r'\s*\b(?:first|earlier|earliest|last|later|latest)\b', re.IGNORECASE)
# What "older" dates, by the kind of thing the question names (else a birth).
_DATED = (('founded', re.compile(r'\b(compan|business|band|group|club|team)', re.IGNORECASE)),
          ('released', re.compile(r'\b(film|movie|album|song|book|novel)', re.IGNORECASE)))


def options(question: str) -> tuple[str, str] | None:
  """The two options of "..., A or B?", as written; None otherwise."""
  m = _OPTIONS_RE.search(question.strip())
  return (m.group('a'), m.group('b')) if m else None


def compares(question: str) -> bool:
  """Whether the question asks which of two options is earlier or later."""
  return options(question) is not None and asks_earlier(question) is not None


def as_compared(question: str) -> str:
  """A comparing question as the relation its options are dated by.

  "Who is older, A or B?" -> "Who was born, A or B?"; "Which film was
  released first, A or B?" -> "Which film was released, A or B?". Other
  questions are returned unchanged.
  """
  if not compares(question):
    return question
  dated = next((verb for verb, kind in _DATED if kind.search(question)), 'born')
  return _ORDER_RE.sub('', _AGE_RE.sub(f'was {dated}', question))


def asks_earlier(question: str) -> bool | None:
  """True for "first"/"older"/"earlier", False for "last"/"younger"/"later"."""
  earlier, later = bool(_EARLIER_RE.search(question)), bool(_LATER_RE.search(question))
  return earlier if earlier != later else None


def _tokens(name: str) -> frozenset[str]:
  return cl.read(name)[0]


def distinct(option: str, other: str) -> frozenset[str]:
  """The option's name tokens the other option does not share."""
  return _tokens(option) - _tokens(other)


def option_years(option: str, other: str, texts: Sequence[str]) -> set[int]:
  """The years stated by the texts' sentences that name `option` and not `other`."""
  years: set[int] = set()
  for text in texts:
    for sentence in cl.sentences(text):
      if concludes(option, other, cl.read(sentence)[0]):
        years |= {int(y) for y in _YEAR_RE.findall(sentence)}
  return years


def expected(question: str, texts: Sequence[str]) -> str | None:
  """The option the texts make right, or None when they do not decide it."""
  found = options(question)
  earlier = asks_earlier(question)
  if found is None or earlier is None:
    return None
  a, b = found
  if not distinct(a, b) or not distinct(b, a):
    return None
  years_a, years_b = option_years(a, b, texts), option_years(b, a, texts)
  if len(years_a) != 1 or len(years_b) != 1 or years_a == years_b:
    return None
  a_first = min(years_a) < min(years_b)
  return a if a_first == earlier else b


def concludes(option: str, other: str, names: frozenset[str]) -> bool:
  """Whether names (a conclusion's, a sentence's) pick `option`: its own
  tokens, not the other's."""
  mine, theirs = distinct(option, other), distinct(other, option)
  return bool(mine) and mine <= names and not (theirs and theirs <= names)
