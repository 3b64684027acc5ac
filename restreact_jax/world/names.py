"""Fictional, pronounceable, never-colliding names.

Names are built from a small fixed syllable inventory (so a small SentencePiece
vocabulary splits each name word into 2-3 pieces) and a short list of English
title words. Every invented word is used by at most one entity (person first
names excepted, which repeat as in real life), every full name is unique, and
no name reuses a word of a canon name, so a name's words point a search at one
entity.
"""

from __future__ import annotations

import random

from restreact_jax.world import schema

SYLLABLES: tuple[str, ...] = (
    'ba', 'bel', 'da', 'dor', 'el', 'fa', 'fen', 'ga', 'gor', 'ka',
    'kel', 'la', 'lin', 'ma', 'mar', 'na', 'nor', 'o', 'pa', 'per',
    'ra', 'ren', 'sa', 'sol', 'ta', 'tor', 'va', 'vel', 'za', 'zen',
    'mi', 'to', 'ri', 'se', 'lo', 'ne', 'du', 'ki', 'an', 'is',
)

# Title words for films, books and bands; none is a query word of the schema.
ADJECTIVES: tuple[str, ...] = (
    'Silver', 'Hidden', 'Quiet', 'Broken', 'Golden', 'Distant', 'Burning',
    'Frozen', 'Scarlet', 'Hollow', 'Wild', 'Velvet', 'Iron', 'Crimson',
    'Silent', 'Winter', 'Northern', 'Painted', 'Restless', 'Lonely',
    'Bright', 'Shadow', 'Paper', 'Stone', 'Amber', 'Azure', 'Last', 'Lost',
)
NOUNS: tuple[str, ...] = (
    'River', 'Garden', 'Mirror', 'Harbor', 'Lantern', 'Tower', 'Forest',
    'Bridge', 'Island', 'Meadow', 'Storm', 'Valley', 'Window', 'Crown',
    'Desert', 'Shore', 'Road', 'Feather', 'Voyage', 'Summer', 'Echo',
    'Compass', 'Horizon', 'Kingdom', 'Letter', 'Candle', 'Signal', 'Winter',
)
BAND_NOUNS: tuple[str, ...] = (
    'Wolves', 'Ravens', 'Foxes', 'Sparrows', 'Tigers', 'Owls', 'Comets',
    'Rockets', 'Lions', 'Herons', 'Falcons', 'Saints', 'Drifters', 'Kites',
)
COMPANY_SUFFIXES: tuple[str, ...] = (
    'Works', 'Systems', 'Industries', 'Pictures', 'Holdings', 'Motors',
    'Studios', 'Foods', 'Labs', 'Trading',
)
CLUB_SUFFIXES: tuple[str, ...] = ('United', 'Rovers', 'Athletic', 'Wanderers', 'City')
COUNTRY_SUFFIXES: tuple[str, ...] = ('ia', 'land', 'ora')


class NameGenerator:
  """Draws unique names for entities of each type from one seeded RNG.

  Args:
    rng: the world's random generator (names are drawn in a fixed order).
    reserved: full names and words that must never be produced (the canon's).
  """

  def __init__(self, rng: random.Random, reserved: set[str] | frozenset[str] = frozenset()):
    self._rng = rng
    self._used_names: set[str] = {n.lower() for n in reserved}
    self._used_words: set[str] = set()
    for name in reserved:
      self._used_words.update(w.lower() for w in name.split())
    self._title_words = {w.lower() for w in (*ADJECTIVES, *NOUNS, *BAND_NOUNS,
                                             *COMPANY_SUFFIXES, *CLUB_SUFFIXES)}
    # First names repeat across people, so they come from a fixed pool.
    self._first_names = [self._fresh_word(2, 2) for _ in range(60)]

  def _word(self, min_syl: int, max_syl: int) -> str:
    n = self._rng.randint(min_syl, max_syl)
    word = ''.join(self._rng.choice(SYLLABLES) for _ in range(n))
    return word.capitalize()

  def _fresh_word(self, min_syl: int, max_syl: int, suffix: str = '') -> str:
    """A syllable word no other entity uses (and that is not a title word)."""
    for attempt in range(10_000):
      # Widen to longer words when the short ones run out (very large worlds).
      extra = attempt // 200
      word = self._word(min_syl + extra, max_syl + extra) + suffix
      if word.lower() not in self._used_words and word.lower() not in self._title_words:
        self._used_words.add(word.lower())
        return word
    raise RuntimeError('name space exhausted')

  def _claim(self, name: str) -> bool:
    if name.lower() in self._used_names:
      return False
    self._used_names.add(name.lower())
    return True

  def name(self, entity_type: str) -> str:
    """Returns a new unique name for an entity of `entity_type`."""
    for _ in range(10_000):
      name = self._candidate(entity_type)
      if self._claim(name):
        return name
    raise RuntimeError(f'could not draw a unique {entity_type} name')

  def _candidate(self, entity_type: str) -> str:
    rng = self._rng
    if entity_type == schema.PERSON:
      return f'{rng.choice(self._first_names)} {self._fresh_word(2, 3)}'
    if entity_type == schema.CITY:
      return self._fresh_word(2, 3)
    if entity_type == schema.COUNTRY:
      return self._fresh_word(2, 2, rng.choice(COUNTRY_SUFFIXES))
    if entity_type == schema.COMPANY:
      return f'{self._fresh_word(2, 3)} {rng.choice(COMPANY_SUFFIXES)}'
    if entity_type == schema.FILM:
      # Plain "The Adj Noun" titles first; a syllable word keeps later ones unique.
      title = f'The {rng.choice(ADJECTIVES)} {rng.choice(NOUNS)}'
      if title.lower() in self._used_names:
        title = f'{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} of {self._fresh_word(2, 3)}'
      return title
    if entity_type == schema.BOOK:
      return f'The {rng.choice(NOUNS)} of {self._fresh_word(2, 3)}'
    if entity_type == schema.BAND:
      return f'The {self._fresh_word(2, 2)} {rng.choice(BAND_NOUNS)}'
    if entity_type == schema.CLUB:
      return f'{self._fresh_word(2, 3)} {rng.choice(CLUB_SUFFIXES)}'
    raise ValueError(f'unknown entity type {entity_type!r}')
