"""Answers of the wrong kind: what a question asks for, and what an answer names.

The typing rater (`RuleRanker(typed=True)`) rejects "The answer is X" when X
is not the kind of thing the question asks for. Two lexical readings, neither
using a label:

* numbers (`wrong_number`): a question asking for a number ("When", "In what
  year", "How old": `text_overlap.asks_number`) must conclude something with
  a digit; any other question must not conclude only numbers;
* entities (`wrong_entity`): a question asking for a kind ("Which country",
  "In which city", a question that starts "Where" asks for a place, one that
  starts "Who" for a person) must not conclude a name that the sources call
  only something else. The sources call a name a kind by apposition ("the
  city of Seza", "the company Fenfen Holdings"), by predication ("Seza is a
  city", "Seza is one of the cities of ...") or, for a person, by what only
  a person does ("Savel Masol was born ...", "... works as ...", "... is
  married ..."). A name the sources call nothing is not judged; nor is a
  question that offers its answers ("A or B?").
"""

from __future__ import annotations

from typing import Iterable, Sequence

from restreact_jax.feedback import claims as cl
from restreact_jax.feedback import text_overlap as ov

ARTICLES = frozenset({'the', 'a', 'an'})

# Kind nouns (and their plurals and synonyms) -> the kind they name.
KINDS: dict[str, str] = {}
for _kind, _words in {
    'person': 'person persons people man men woman women',
    'film': 'film films movie movies',
    'book': 'book books novel novels',
    'company': 'company companies business businesses firm firms',
    'band': 'band bands group groups',
    'club': 'club clubs team teams',
    'city': 'city cities town towns village villages',
    'country': 'country countries nation nations',
    'place': 'place places',
    'song': 'song songs',
    'album': 'album albums',
}.items():
  for _word in _words.split():
    KINDS[_word] = _kind
PLACES = frozenset({'city', 'country', 'place'})
# What follows a name only when the name is a person's.
PERSON_MARKS = (('was', 'born'), ('is', 'married'), ('was', 'married'), ('married',),
                ('works', 'as'), ('died',))


def words(text: str) -> list[str]:
  """The text's words, lower-cased (citations are removed by `claims.sentences`)."""
  return [w.lower() for w in cl.WORD_RE.findall(text)]


def asked_kinds(question: str) -> frozenset[str] | None:
  """The kinds a question's answer may be, or None when it does not say.

  "which/what <kind>" anywhere names the kind; otherwise a sentence starting
  "Where" asks for a place, one starting "Who" for a person. A question that
  offers its answers is not typed here (the options are its kinds).
  """
  if cl.offers_choice(question):
    return None
  ws = words(question)
  for w, nxt in zip(ws, ws[1:]):
    if w in ('which', 'what') and nxt in KINDS:
      kind = KINDS[nxt]
      return PLACES if kind == 'place' else frozenset({kind})
  starts = {ws[0] for ws in map(words, cl.sentences(question)) if ws}
  if 'where' in starts:
    return PLACES
  if 'who' in starts:
    return frozenset({'person'})
  return None


def concluded_name(answer: str) -> tuple[str, ...]:
  """The words of the name in the answer's first "The answer is X" (lower-cased).

  The name is the run of capitalised words (or numbers) right after "The
  answer is", a leading article dropped; empty when there is none.
  """
  for sentence in cl.sentences(answer):
    m = cl.CONCLUSION_RE.match(sentence)
    if not m:
      continue
    run: list[str] = []
    for word in cl.WORD_RE.findall(sentence[m.end():]):
      if not (word[0].isupper() or word[0].isdigit()):
        break
      run.append(word.lower())
    while run and run[0] in ARTICLES:
      run = run[1:]
    return tuple(run)
  return ()


def _whole(raw: Sequence[str], start: int, end: int) -> bool:
  """Whether raw[start:end] is a whole name: no capitalised word joins it."""
  joins_before = start > 0 and raw[start - 1][0].isupper() and raw[start - 1].lower() not in ARTICLES
  joins_after = end < len(raw) and raw[end][0].isupper()
  return not joins_before and not joins_after


def kinds_called(name: Sequence[str], sources: Iterable[str]) -> frozenset[str]:
  """The kinds the sources call `name` (a word sequence, as `concluded_name`)."""
  name = tuple(name)
  n = len(name)
  found: set[str] = set()
  if not n:
    return frozenset()
  for source in sources:
    for sentence in cl.sentences(source):
      raw = cl.WORD_RE.findall(sentence)
      ws = [w.lower() for w in raw]
      for i in range(len(ws) - n + 1):
        if tuple(ws[i:i + n]) != name or not _whole(raw, i, i + n):
          continue
        before = ws[max(0, i - 4):i]
        if before and before[-1] in ARTICLES:  # "the film The Paper Summer"
          before = before[:-1]
        after = ws[i + n:i + n + 5]
        # Apposition: "the <kind> X", "the <kind> of X".
        if len(before) >= 2 and before[-1] in KINDS and before[-2] in ARTICLES:
          found.add(KINDS[before[-1]])
        if (len(before) >= 3 and before[-1] == 'of' and before[-2] in KINDS
            and before[-3] in ARTICLES):
          found.add(KINDS[before[-2]])
        # Predication: "X is a <kind>", "X is one of the <kinds>".
        if after[:1] == ['is'] and len(after) >= 3 and after[1] in ('a', 'an') and after[2] in KINDS:
          found.add(KINDS[after[2]])
        if after[:4] == ['is', 'one', 'of', 'the'] and len(after) >= 5 and after[4] in KINDS:
          found.add(KINDS[after[4]])
        if any(tuple(after[:len(m)]) == m for m in PERSON_MARKS):
          found.add('person')
  return frozenset(found)


def wrong_number(question: str, concluded: frozenset[str]) -> bool:
  """A number where the question asks for a name, or a name where it asks for a number.

  `concluded` are the conclusion's names (`claims.conclusion_names`); none is
  not mistyped (other rules judge it).
  """
  if not concluded:
    return False
  numeric = [any(ch.isdigit() for ch in name) for name in concluded]
  return not any(numeric) if ov.asks_number(question) else all(numeric)


def wrong_entity(question: str, answer: str, sources: Iterable[str]) -> bool:
  """Whether the answer concludes a name the sources call only another kind."""
  asked = asked_kinds(question)
  if asked is None:
    return False
  if asked & PLACES:
    asked |= {'place'}
  called = kinds_called(concluded_name(answer), sources)
  return bool(called) and not called & asked


def mistyped(question: str, answer: str, sources: Iterable[str]) -> bool:
  """Whether the answer's conclusion is not the kind the question asks for."""
  return (wrong_number(question, cl.conclusion_names(answer))
          or wrong_entity(question, answer, sources))
