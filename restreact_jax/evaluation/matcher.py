"""The alias-aware answer matcher: does a long-form answer contain a reference?

Auto-eval cannot use exact match because answers are long-form sentences
("According to [link_id=4], the golden eagle flies at 320 km/h."). The matcher
normalises both sides the same way (Unicode accents, case, citations,
punctuation, articles, number words to digits, ordinal words to `1st`-style
tokens, written dates in one order) and accepts the answer when any
reference (canonical answer or alias) appears in it as a whole-token span, so
'Paris' never matches 'Parisian'. An answer that ends with "the answer is ..."
is judged on that final clause only. Yes/no references are decided by the
first yes/no word of the answer.

The matcher is also the judge's fallback when an LLM verdict cannot be parsed,
and its normaliser is shared with the label-free rankers' token overlap.
"""

from __future__ import annotations

import re
import unicodedata
from typing import Sequence

_CITATION_RE = re.compile(r'\[\s*link[ _]?id\s*=\s*[\d,\s]*\]', re.IGNORECASE)
# Thousands separators inside numbers ("1,000,000") would otherwise split one
# number into several tokens.
_THOUSANDS_RE = re.compile(r'(?<=\d),(?=\d{3}\b)')
_TOKEN_RE = re.compile(r'\d+(?:\.\d+)?(?:st|nd|rd|th)?|[a-z0-9]+')

ARTICLES = frozenset({'a', 'an', 'the'})

_UNITS = {
    'zero': 0, 'one': 1, 'two': 2, 'three': 3, 'four': 4, 'five': 5, 'six': 6,
    'seven': 7, 'eight': 8, 'nine': 9, 'ten': 10, 'eleven': 11, 'twelve': 12,
    'thirteen': 13, 'fourteen': 14, 'fifteen': 15, 'sixteen': 16,
    'seventeen': 17, 'eighteen': 18, 'nineteen': 19,
}
_TENS = {
    'twenty': 20, 'thirty': 30, 'forty': 40, 'fifty': 50, 'sixty': 60,
    'seventy': 70, 'eighty': 80, 'ninety': 90,
}
_SCALES = {'hundred': 100, 'thousand': 1_000, 'million': 1_000_000,
           'billion': 1_000_000_000}
_ORDINAL_UNITS = {
    'first': 1, 'second': 2, 'third': 3, 'fourth': 4, 'fifth': 5, 'sixth': 6,
    'seventh': 7, 'eighth': 8, 'ninth': 9, 'tenth': 10, 'eleventh': 11,
    'twelfth': 12, 'thirteenth': 13, 'fourteenth': 14, 'fifteenth': 15,
    'sixteenth': 16, 'seventeenth': 17, 'eighteenth': 18, 'nineteenth': 19,
}
_ORDINAL_TENS = {
    'twentieth': 20, 'thirtieth': 30, 'fortieth': 40, 'fiftieth': 50,
    'sixtieth': 60, 'seventieth': 70, 'eightieth': 80, 'ninetieth': 90,
}
_ORDINAL_SCALES = {'hundredth': 100, 'thousandth': 1_000}
_NUMBER_WORDS = (set(_UNITS) | set(_TENS) | set(_SCALES) | set(_ORDINAL_UNITS)
                 | set(_ORDINAL_TENS) | set(_ORDINAL_SCALES))
_MONTHS = {
    'january': 1, 'february': 2, 'march': 3, 'april': 4, 'may': 5, 'june': 6,
    'july': 7, 'august': 8, 'september': 9, 'october': 10, 'november': 11,
    'december': 12, 'jan': 1, 'feb': 2, 'mar': 3, 'apr': 4, 'jun': 6, 'jul': 7,
    'aug': 8, 'sep': 9, 'sept': 9, 'oct': 10, 'nov': 11, 'dec': 12,
}
_MONTH_NAMES = ('january', 'february', 'march', 'april', 'may', 'june', 'july',
                'august', 'september', 'october', 'november', 'december')
_YES = frozenset({'yes', 'true', 'correct'})
_NO = frozenset({'no', 'false', 'incorrect'})


def _ordinal_suffix(n: int) -> str:
  if 10 <= n % 100 <= 20:
    return 'th'
  return {1: 'st', 2: 'nd', 3: 'rd'}.get(n % 10, 'th')


def _parse_number_words(words: Sequence[str]) -> tuple[str, int] | None:
  """Parses a maximal run of number words from the start of `words`.

  Returns:
    (digits, consumed) for the longest prefix that spells a number
    ("twenty one" -> ('21', 2), "third" -> ('3rd', 1)), or None.
  """
  total, current, consumed, ordinal = 0, 0, 0, False
  seen_number = False
  i = 0
  while i < len(words) and not ordinal:
    w = words[i]
    if w == 'and' and seen_number and i + 1 < len(words) and (
        words[i + 1] in _UNITS or words[i + 1] in _TENS or
        words[i + 1] in _ORDINAL_UNITS or words[i + 1] in _ORDINAL_TENS):
      i += 1  # "one hundred and five"
      continue
    if w in _UNITS:
      current += _UNITS[w]
    elif w in _TENS:
      current += _TENS[w]
    elif w in _ORDINAL_UNITS:
      current += _ORDINAL_UNITS[w]
      ordinal = True
    elif w in _ORDINAL_TENS:
      current += _ORDINAL_TENS[w]
      ordinal = True
    elif w in _SCALES or w in _ORDINAL_SCALES:
      if not seen_number:
        break  # a bare "hundred" is a word, not a number
      scale = _SCALES.get(w) or _ORDINAL_SCALES[w]
      if scale == 100:
        current = max(current, 1) * 100
      else:
        total += max(current, 1) * scale
        current = 0
      ordinal = w in _ORDINAL_SCALES
    else:
      break
    seen_number = True
    i += 1
    consumed = i
  if not seen_number:
    return None
  value = total + current
  return (f'{value}{_ordinal_suffix(value)}' if ordinal else str(value)), consumed


def _numbers_to_digits(tokens: list[str]) -> list[str]:
  out: list[str] = []
  i = 0
  while i < len(tokens):
    if tokens[i] in _NUMBER_WORDS:
      parsed = _parse_number_words(tokens[i:])
      if parsed is not None:
        out.append(parsed[0])
        i += parsed[1]
        continue
    out.append(tokens[i])
    i += 1
  return out


def _is_day(tok: str) -> bool:
  day = re.fullmatch(r'(\d{1,2})(?:st|nd|rd|th)?', tok)
  return bool(day) and 1 <= int(day.group(1)) <= 31


def _is_year(tok: str) -> bool:
  return bool(re.fullmatch(r'\d{3,4}', tok))


def _canonical_dates(tokens: list[str]) -> list[str]:
  """Writes "29 May 1932", "May 29th 1932", "Sept 29 1932" as 'may 29 1932'.

  Month, day, year stay separate tokens so a year-only reference still matches
  inside a full date.
  """
  out: list[str] = []
  i = 0
  while i < len(tokens):
    a, b, c = (tokens[i:i + 3] + ['', '', ''])[:3]
    if a in _MONTHS and _is_day(b) and _is_year(c):
      month, day, year = _MONTHS[a], int(re.match(r'\d+', b).group()), c
    elif _is_day(a) and b in _MONTHS and _is_year(c):
      month, day, year = _MONTHS[b], int(re.match(r'\d+', a).group()), c
    else:
      out.append(tokens[i])
      i += 1
      continue
    out.extend([_MONTH_NAMES[month - 1], str(day), year])
    i += 3
  return out


def normalize_tokens(text: str) -> list[str]:
  """The matcher's token sequence for `text` (see the module docstring).

  Args:
    text: any answer, reference or snippet.

  Returns:
    Lower-case tokens with accents, citations, punctuation and articles removed,
    number and ordinal words written as digits and dates as month day year.
  """
  text = unicodedata.normalize('NFKD', text)
  text = ''.join(ch for ch in text if not unicodedata.combining(ch)).lower()
  text = _CITATION_RE.sub(' ', text)
  text = _THOUSANDS_RE.sub('', text)
  tokens = _TOKEN_RE.findall(text)
  tokens = _numbers_to_digits(tokens)
  tokens = _canonical_dates(tokens)
  return [t for t in tokens if t not in ARTICLES]


def normalize_text(text: str) -> str:
  """`normalize_tokens` joined with single spaces."""
  return ' '.join(normalize_tokens(text))


def contains_span(haystack: Sequence[str], needle: Sequence[str]) -> bool:
  """Whether the token list `needle` occurs contiguously in `haystack`."""
  n = len(needle)
  if n == 0 or n > len(haystack):
    return False
  first = needle[0]
  return any(haystack[i] == first and list(haystack[i:i + n]) == list(needle)
             for i in range(len(haystack) - n + 1))


def _yes_no(tokens: Sequence[str]) -> str | None:
  for tok in tokens:
    if tok in _YES:
      return 'yes'
    if tok in _NO:
      return 'no'
  return None


_FINAL = ('answer', 'is')


def final_clause(tokens: Sequence[str]) -> list[str]:
  """What follows the last "the answer is", when the answer says it.

  Long-form answers restate their evidence ("X was born in 1901 and Y in
  1897. The answer is Y."); an answer that names its conclusion is judged on
  that conclusion alone, so restating both sides of a comparison does not
  count as answering with both.
  """
  tokens = list(tokens)
  for i in range(len(tokens) - 2, -1, -1):
    if tokens[i:i + 2] == list(_FINAL) and i + 2 < len(tokens):
      return tokens[i + 2:]
  return tokens


def matching_reference(answer: str, references: Sequence[str]) -> str | None:
  """The first reference that `answer` contains, or None.

  Args:
    answer: the model's (long-form) answer.
    references: the canonical answer followed by its aliases.

  Returns:
    The matching reference string as given, or None when none matches.
  """
  answer_tokens = final_clause(normalize_tokens(answer))
  for ref in references:
    ref_tokens = normalize_tokens(ref)
    if ref_tokens in (['yes'], ['no']):
      if _yes_no(answer_tokens) == ref_tokens[0]:
        return ref
    elif contains_span(answer_tokens, ref_tokens):
      return ref
  return None


def matches(answer: str, references: Sequence[str]) -> bool:
  """Whether `answer` contains any of `references` as a whole-token span."""
  return matching_reference(answer, references) is not None
