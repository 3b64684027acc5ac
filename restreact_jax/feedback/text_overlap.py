"""Token overlap between what a candidate claims and what the model could see.

The rule-based rater judges grounding by content tokens: a query is grounded
when its tokens come from the question or earlier summaries; a summary when its
claim tokens occur in the snippets of the links it selected; an answer when its
tokens occur in the summaries and selected snippets. Tokens are the matcher's
normalised tokens (so "twenty-one" and "21" agree) minus stop words ("answer"
among them: "the answer is X" states a conclusion, not a fact to ground).
"""

from __future__ import annotations

import re
from typing import Iterable

from restreact_jax.evaluation import matcher

_CITATION_RE = re.compile(r'\[\s*link[ _]?id\s*=\s*([\d,\s]+)\]', re.IGNORECASE)

STOPWORDS = frozenset('''
about above according after again against all also am and any are as at be because been before
being below between both but by can could did do does doing down during each few for from further
had has have having he her here hers herself him himself his how i if in into is it its itself just
me more most my myself nor not of off on once only or other our ours ourselves out over own same
she should so some such than that their theirs them themselves then there these they this those
through to too under until up very was we were what when where which while who whom why will with
would you your yours yourself yourselves link id based known called named did does whose
answer
'''.split())

# Question words that ask for a person, a number or a date: the span an answer
# must contain to look like an answer.
_NUMBER_ASKS = ('how many', 'how much', 'how old', 'how long', 'how tall', 'what year',
                'which year', 'in what year', 'when')


def cited_ids(text: str) -> list[int]:
  """Link ids cited as `[link_id=N]` or `[link_id=4, 5, 6]`, in order, unique."""
  out: list[int] = []
  for group in _CITATION_RE.findall(text or ''):
    for part in group.split(','):
      part = part.strip()
      if part.isdigit() and int(part) not in out:
        out.append(int(part))
  return out


def content_tokens(text: str) -> set[str]:
  """Normalised tokens of `text` without stop words (citations removed)."""
  return {t for t in matcher.normalize_tokens(text or '') if t not in STOPWORDS}


def support(claim: str, evidence: Iterable[str]) -> float:
  """Fraction of `claim`'s content tokens that occur in the evidence texts.

  Args:
    claim: a query, summary or answer.
    evidence: the texts it may draw on.

  Returns:
    A value in [0, 1]; 0.0 for a claim without content tokens.
  """
  tokens = content_tokens(claim)
  if not tokens:
    return 0.0
  seen: set[str] = set()
  for e in evidence:
    seen |= content_tokens(e)
  return len(tokens & seen) / len(tokens)


def new_tokens(text: str, question: str) -> set[str]:
  """Content tokens of `text` that the question does not already contain."""
  return content_tokens(text) - content_tokens(question)


def asks_number(question: str) -> bool:
  """Whether the question asks for a number ("how many", "what year", "when")."""
  q = ' '.join(matcher.normalize_tokens(question))
  return any(q.startswith(w) or f' {w} ' in f' {q} ' for w in _NUMBER_ASKS)


def answer_like(question: str, text: str) -> bool:
  """Whether `text` contains a span of the kind the question asks for.

  A number for "how many / what year / when" questions; for the rest, any
  content token the question does not contain (a name, a place, yes/no).

  Args:
    question: the original question.
    text: a summary or answer.

  Returns:
    True when an answer-like span is present.
  """
  extra = new_tokens(text, question)
  q = ' '.join(matcher.normalize_tokens(question))
  if asks_number(question):
    return any(any(ch.isdigit() for ch in t) for t in extra)
  if q.split()[:1] in (['is'], ['are'], ['was'], ['were'], ['did'], ['do'], ['does'], ['can']):
    return bool({'yes', 'no'} & set(matcher.normalize_tokens(text))) or bool(extra)
  return bool(extra)


def overlap(a: str, b: str) -> float:
  """Jaccard overlap of two texts' content tokens (0 when both are empty)."""
  ta, tb = content_tokens(a), content_tokens(b)
  if not ta and not tb:
    return 0.0
  return len(ta & tb) / len(ta | tb)
