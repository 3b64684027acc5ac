"""The world's schema: entity types, typed relations, and the `Entity` record.

A relation maps a subject entity to either another entity (its `target` is an
entity type) or a literal (`'year'`, `'int'`, `'str'`). Every relation carries
the *query words* a searcher would naturally add to an entity's name to find
the fact ("<film> directed" for `directed_by`); every sentence template that
renders the relation contains these words, which is what makes each hop of a
question findable with BM25 (checked by the tests).
"""

from __future__ import annotations

import dataclasses
from typing import Union

Value = Union[str, int]

PERSON = 'person'
CITY = 'city'
COUNTRY = 'country'
COMPANY = 'company'
FILM = 'film'
BAND = 'band'
BOOK = 'book'
CLUB = 'club'

ENTITY_TYPES: tuple[str, ...] = (PERSON, CITY, COUNTRY, COMPANY, FILM, BAND, BOOK, CLUB)

# Literal target kinds (anything else is an entity type).
YEAR = 'year'
INT = 'int'
STR = 'str'


@dataclasses.dataclass(frozen=True)
class Relation:
  """A typed relation.

  Attributes:
    name: identifier, e.g. 'founded_by'.
    subject: the subject's entity type.
    target: an entity type, or one of 'year', 'int', 'str'.
    query_words: words a searcher adds to the subject's name to find the fact.
    phrase: how a question names the object ("the founder of").
  """
  name: str
  subject: str
  target: str
  query_words: str
  phrase: str = ''

  @property
  def is_entity(self) -> bool:
    return self.target in ENTITY_TYPES


_RELATIONS = (
    Relation('born_in', PERSON, CITY, 'born', 'the birthplace of'),
    Relation('birth_year', PERSON, YEAR, 'born', 'the birth year of'),
    Relation('spouse', PERSON, PERSON, 'married', 'the spouse of'),
    Relation('occupation', PERSON, STR, 'works', 'the occupation of'),
    Relation('member_of', PERSON, BAND, 'member', 'the band of'),
    Relation('located_in', CITY, COUNTRY, 'country', 'the country of'),
    Relation('population', CITY, INT, 'population', 'the population of'),
    Relation('capital', COUNTRY, CITY, 'capital', 'the capital of'),
    Relation('language', COUNTRY, STR, 'language', 'the language of'),
    Relation('founded_by', COMPANY, PERSON, 'founded', 'the founder of'),
    Relation('founded_year', COMPANY, YEAR, 'founded', 'the founding year of'),
    Relation('headquartered_in', COMPANY, CITY, 'headquarters', 'the headquarters of'),
    Relation('industry', COMPANY, STR, 'industry', 'the industry of'),
    Relation('directed_by', FILM, PERSON, 'directed', 'the director of'),
    Relation('produced_by', FILM, COMPANY, 'produced', 'the producer of'),
    Relation('release_year', FILM, YEAR, 'released', 'the release year of'),
    Relation('genre', FILM, STR, 'genre', 'the genre of'),
    Relation('formed_in', BAND, CITY, 'formed', 'the home city of'),
    Relation('formed_year', BAND, YEAR, 'formed', 'the formation year of'),
    Relation('music_style', BAND, STR, 'music', 'the music of'),
    Relation('author', BOOK, PERSON, 'written', 'the author of'),
    Relation('published_year', BOOK, YEAR, 'published', 'the publication year of'),
    Relation('club_city', CLUB, CITY, 'based', 'the home city of'),
    Relation('club_founded_year', CLUB, YEAR, 'founded', 'the founding year of'),
    Relation('sport', CLUB, STR, 'sport', 'the sport of'),
)

RELATIONS: dict[str, Relation] = {r.name: r for r in _RELATIONS}


def relations_of(entity_type: str) -> list[Relation]:
  """Returns the relations whose subject is `entity_type`, in schema order."""
  return [r for r in _RELATIONS if r.subject == entity_type]


@dataclasses.dataclass
class Entity:
  """One entity of the world.

  Attributes:
    id: stable identifier ('film-00012', or 'canon-...' for canon entities).
    type: one of ENTITY_TYPES.
    name: the display name, unique in the world (also its article's title).
    facts: relation name -> value; entity-valued relations hold entity ids.
    canon: True for the hand-written entities shared by every world.
  """
  id: str
  type: str
  name: str
  facts: dict[str, Value] = dataclasses.field(default_factory=dict)
  canon: bool = False

  def to_json(self) -> dict[str, object]:
    return {'id': self.id, 'type': self.type, 'name': self.name,
            'facts': dict(self.facts), 'canon': self.canon}
