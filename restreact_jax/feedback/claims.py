"""Claim-level checks: is a summary sentence stated by one source sentence?

Token overlap (`text_overlap.support`) asks whether a claim's words occur
*somewhere* in the evidence, which a claim that recombines facts passes: with
the snippet "X was directed by A. X was produced by B." the claim "X was
produced by A" has every word on screen. A rater reading the snippet would
reject it; so do these checks. A sentence is read as its **names** (tokens
written capitalised or as digits: entities, places, years) and its
**relation words** (the other content words, stemmed). Then, label-free:

* `entailed`: every claim clause ("X wrote Y, who was born in Z" has two)
  has one evidence sentence that holds all of its names and all of its
  relation words — the same fact, not a recombination of two;
* `relevant`: some claim sentence shares a relation word with the question
  ("directed" for "the director of"), so the fact is one the question needs;
* `connected` / `novel`: every claim sentence names something already known
  (the question's or an earlier summary's names) and something new — a step
  along the question's chain, not a restatement ("X was produced by X");
* `repetitive`: a claim sentence that repeats three words is garbled;
* `complete`: the summaries state (nearly) every relation the question asks
  for — the chain is not cut short before the last hop.

Stemming is a five-letter prefix plus a small table of irregular English
forms (wrote / written -> write); no gold answer or world fact is used.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

from restreact_jax.evaluation import matcher
from restreact_jax.feedback import text_overlap as ov

_CITATION_RE = re.compile(r'\[\s*link[ _]?id\s*=\s*[\d,\s]*\]', re.IGNORECASE)
_SENTENCE_RE = re.compile(r'(?<=[.!?])\s+')
WORD_RE = re.compile(r"[^\W_][\w'-]*")
# "The answer is X": a conclusion, checked as an answer span, not as a claim.
CONCLUSION_RE = re.compile(r'^\s*(so\s+)?the answer is\b', re.IGNORECASE)
# Clause boundaries inside a sentence: one clause states one fact.
_CLAUSE_RE = re.compile(r'[,;:()]|\b(?:and|who|which|whose|where)\b')
STEM_LEN = 5
IRREGULAR = {
    'wrote': 'write', 'written': 'write', 'writer': 'write', 'writes': 'write',
    'writing': 'write', 'birth': 'born', 'began': 'begin', 'begun': 'begin',
    'built': 'build', 'made': 'make', 'led': 'lead', 'won': 'win', 'sang': 'sing',
    'sung': 'sing', 'grew': 'grow', 'grown': 'grow', 'died': 'die', 'death': 'die',
}


def stem(token: str) -> str:
  """A relation word's stem: an irregular form's lemma, else a short prefix."""
  return IRREGULAR.get(token, token[:STEM_LEN])


def sentences(text: str) -> list[str]:
  """The text's sentences, citations removed, empty ones dropped."""
  return [s for s in _SENTENCE_RE.split(_CITATION_RE.sub(' ', text or '')) if s.strip()]


def read(sentence: str) -> tuple[frozenset[str], frozenset[str]]:
  """A sentence's (names, relation stems); stop words and articles dropped."""
  names, relations = set(), set()
  for word in WORD_RE.findall(sentence):
    for token in matcher.normalize_tokens(word):
      if token in ov.STOPWORDS:
        continue
      if word[0].isupper() or word[0].isdigit():
        names.add(token)
      else:
        relations.add(stem(token))
  return frozenset(names), frozenset(relations)


def _stated_by(claim: tuple[frozenset[str], frozenset[str]],
               source: tuple[frozenset[str], frozenset[str]]) -> bool:
  names, relations = claim
  src_names, src_relations = source
  # A sentence-initial relation word is capitalised in the source ("Born in");
  # compare both readings.
  src_all = src_names | src_relations | {stem(n) for n in src_names}
  return names <= src_all and relations <= src_all


def claims(text: str) -> list[str]:
  """The sentences of a summary or answer that state facts (no conclusion)."""
  return [s for s in sentences(text) if not CONCLUSION_RE.match(s)]


def repetitive(text: str, n: int = 3) -> bool:
  """Whether a claim sentence says the same three words twice (garbled text).

  "X was produced X was produced by Y" is stated word for word by its source
  and still not a sentence a rater would accept.
  """
  for sentence in claims(text):
    tokens = matcher.normalize_tokens(sentence)
    grams = [tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)]
    if len(grams) != len(set(grams)):
      return True
  return False


def clauses(sentence: str) -> list[str]:
  """A sentence's clauses ("X wrote Y, who was born in Z" has two)."""
  return [c for c in _CLAUSE_RE.split(sentence) if c.strip()]


def entailed(text: str, evidence: Iterable[str]) -> bool:
  """Whether every claim clause that names something is stated by one source sentence.

  A text whose claims name nothing states no checkable fact: not entailed.
  """
  sources = [read(s) for e in evidence for s in sentences(e)]
  parts = [read(c) for s in claims(text) for c in clauses(s)]
  parts = [p for p in parts if p[0]]
  if not parts:
    return False
  return all(any(_stated_by(p, src) for src in sources) for p in parts)


def _initial_stem(sentence: str) -> frozenset[str]:
  """The stem of a sentence's first word ("Born in X, ..." starts with a relation)."""
  words = WORD_RE.findall(sentence)
  return frozenset(stem(t) for t in matcher.normalize_tokens(words[0])) if words else frozenset()


def relevant(text: str, question: str) -> bool:
  """Whether some claim sentence shares a relation word with the question.

  A claim's first word counts as a relation word too: capitalised, `read`
  takes it for a name.
  """
  asked = read(question)[1]
  return any((read(s)[1] | _initial_stem(s)) & asked for s in claims(text))


def known_names(question: str, summaries: Sequence[str]) -> frozenset[str]:
  """The names the question and the summaries so far mention."""
  names = set(read(question)[0])
  for summary in summaries:
    for s in sentences(summary):
      names |= read(s)[0]
  return frozenset(names)


def connected(text: str, known: frozenset[str]) -> bool:
  """Whether every claim sentence names something known and something new."""
  parts = [read(s)[0] for s in claims(text)]
  return bool(parts) and all(names & known and names - known for names in parts)


def conclusion_names(text: str) -> frozenset[str]:
  """The names of the text's "The answer is X" sentences (empty if none)."""
  out: set[str] = set()
  for s in sentences(text):
    if CONCLUSION_RE.match(s):
      out |= read(CONCLUSION_RE.sub('', s))[0]
  return frozenset(out)


# Nouns that name what kind of thing is asked about, not a relation to follow.
TYPE_NOUNS = frozenset(stem(w) for w in '''
person people man woman film movie book novel company business band group club
team city town place song album
'''.split())
COMPLETE = 0.75


def coverage(question: str, summaries: Sequence[str]) -> float:
  """The share of the question's relation words that the summaries state.

  "In what country was the writer of X born?" asks for three relations
  (country, write, born); a chain that stopped at "X is a novel written by Y"
  covers one of them. Type nouns ("film", "person") do not count. 1.0 for a
  question that names no relation.
  """
  asked = read(question)[1] - TYPE_NOUNS
  if not asked:
    return 1.0
  seen: set[str] = set()
  for summary in summaries:
    for s in claims(summary):
      seen |= read(s)[1]
  return len(asked & seen) / len(asked)


def complete(question: str, summaries: Sequence[str]) -> bool:
  """Whether the summaries cover enough of the question's relations to answer."""
  return coverage(question, summaries) >= COMPLETE - 1e-9


# "How old was X when ..." and "How many years after X was born ..." ask for a
# quantity a calculation computes from two years; the words that ask for the
# quantity are no relation a summary states.
_QUANTITY_RE = re.compile(r'\bhow (old|many years(?: (?:after|before))?|long)\b', re.IGNORECASE)


def as_computed(question: str) -> str:
  """A quantity question as a calculating agent reads it: what must be stated.

  "How old was the director of X when the film was released?" needs the
  director's birth and the release stated (its quantity is the calculation's
  result): the rewrite reads "born was the director of X when the film was
  released?". Other questions are returned unchanged.
  """
  return _QUANTITY_RE.sub(lambda m: 'born' if m.group(1).lower() == 'old' else '', question)


def offers_choice(question: str) -> bool:
  """Whether the question names its candidate answers ("A or B?")."""
  return ' or ' in f' {question.lower()} '
