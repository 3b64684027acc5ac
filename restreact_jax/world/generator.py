"""The entity graph: a deterministic draw of typed entities and their relations.

`generate_entities(seed, num_entities)` returns the canon entities followed by
`num_entities` generated ones whose relations are consistent (a company is
founded after its founder turned 18, a film is released after its producer
was founded, a country's capital lies in it, spouses are symmetric). Generated
entities never point at canon entities. Same seed and size give the same
entities in the same order; only seeded `random.Random` draws and ordered
containers are used (never set iteration, which varies between processes).
"""

from __future__ import annotations

import random

from restreact_jax.world import canon
from restreact_jax.world import names as names_lib
from restreact_jax.world import schema
from restreact_jax.world import templates

# Share of generated entities per type; tuned so that every 2-3 hop template
# has many topics while people (the shared hubs) stay the largest group.
DEFAULT_PROPORTIONS: dict[str, float] = {
    schema.PERSON: 0.32,
    schema.CITY: 0.10,
    schema.COUNTRY: 0.03,
    schema.COMPANY: 0.12,
    schema.FILM: 0.17,
    schema.BAND: 0.07,
    schema.BOOK: 0.12,
    schema.CLUB: 0.07,
}
_MIN_COUNTS = {schema.COUNTRY: 2, schema.CITY: 4, schema.PERSON: 8}
_LAST_YEAR = 2023


def type_counts(num_entities: int,
                proportions: dict[str, float] | None = None) -> dict[str, int]:
  """Splits `num_entities` over the entity types (at least one of each)."""
  proportions = proportions or DEFAULT_PROPORTIONS
  total = sum(proportions.values())
  counts = {}
  for etype in schema.ENTITY_TYPES:
    share = proportions.get(etype, 0.0) / total
    counts[etype] = max(_MIN_COUNTS.get(etype, 1), round(num_entities * share))
  return counts


class _Builder:
  """Holds the RNG and the entities while the graph is drawn (one use)."""

  def __init__(self, seed: int, counts: dict[str, int]):
    self.rng = random.Random(seed)
    self.counts = counts
    self.names = names_lib.NameGenerator(self.rng, reserved=canon.NAMES)
    self.by_type: dict[str, list[schema.Entity]] = {t: [] for t in schema.ENTITY_TYPES}
    self.roles: dict[str, str] = {}
    self.by_role: dict[str, list[schema.Entity]] = {}

  def new(self, etype: str, **facts: schema.Value) -> schema.Entity:
    index = len(self.by_type[etype])
    entity = schema.Entity(id=f'{etype}-{index:05d}', type=etype,
                           name=self.names.name(etype), facts=dict(facts))
    self.by_type[etype].append(entity)
    return entity

  def pick(self, etype: str, role: str | None = None) -> schema.Entity:
    pool = self.by_type[etype]
    if role is not None:
      pool = self.by_role.get(role) or pool
    return self.rng.choice(pool)

  def build(self) -> list[schema.Entity]:
    rng = self.rng
    for _ in range(self.counts[schema.COUNTRY]):
      country = self.new(schema.COUNTRY)
      stem = country.name[:-2] if country.name.endswith('ia') else country.name
      country.facts['language'] = stem + templates.LANGUAGE_SUFFIX
    countries = self.by_type[schema.COUNTRY]
    for i in range(self.counts[schema.CITY]):
      # The first cities go one per country so every country has a capital.
      country = countries[i] if i < len(countries) else rng.choice(countries)
      self.new(schema.CITY, located_in=country.id, population=rng.randrange(20, 2000) * 1000)
      if i < len(countries):
        country.facts['capital'] = self.by_type[schema.CITY][-1].id
    self._people()
    for _ in range(self.counts[schema.COMPANY]):
      founder = self.pick(schema.PERSON, 'founder')
      year = min(_LAST_YEAR - 5, int(founder.facts['birth_year']) + rng.randint(22, 55))
      self.new(schema.COMPANY, founded_by=founder.id, founded_year=year,
               headquartered_in=self.pick(schema.CITY).id,
               industry=rng.choice(templates.INDUSTRIES))
    for _ in range(self.counts[schema.FILM]):
      director = self.pick(schema.PERSON, 'director')
      producer = self.pick(schema.COMPANY)
      earliest = max(int(producer.facts['founded_year']) + 1,
                     int(director.facts['birth_year']) + 22)
      self.new(schema.FILM, directed_by=director.id, produced_by=producer.id,
               release_year=min(_LAST_YEAR, earliest + rng.randint(0, 20)),
               genre=rng.choice(templates.GENRES))
    for _ in range(self.counts[schema.BAND]):
      self.new(schema.BAND, formed_in=self.pick(schema.CITY).id,
               formed_year=rng.randint(1950, 2015),
               music_style=rng.choice(templates.MUSIC_STYLES))
    for person in self.by_type[schema.PERSON]:
      if self.roles[person.id] == 'musician':
        person.facts['member_of'] = self.pick(schema.BAND).id
    for _ in range(self.counts[schema.BOOK]):
      author = self.pick(schema.PERSON, 'writer')
      published = int(author.facts['birth_year']) + rng.randint(20, 60)
      self.new(schema.BOOK, author=author.id, published_year=min(_LAST_YEAR, published))
    for _ in range(self.counts[schema.CLUB]):
      self.new(schema.CLUB, club_city=self.pick(schema.CITY).id,
               club_founded_year=rng.randint(1860, 1990), sport=rng.choice(templates.SPORTS))
    return [e for etype in schema.ENTITY_TYPES for e in self.by_type[etype]]

  def _people(self) -> None:
    rng = self.rng
    roles = ('director', 'founder', 'writer', 'musician', 'other')
    weights = (0.25, 0.25, 0.2, 0.15, 0.15)
    for i in range(self.counts[schema.PERSON]):
      # Cycle the first roles so tiny worlds still have one person per role.
      role = roles[i] if i < len(roles) else rng.choices(roles, weights)[0]
      person = self.new(schema.PERSON, born_in=self.pick(schema.CITY).id,
                        birth_year=rng.randint(1880, 1985),
                        occupation=rng.choice(templates.OCCUPATIONS[role]))
      self.roles[person.id] = role
      self.by_role.setdefault(role, []).append(person)
    people = list(self.by_type[schema.PERSON])
    rng.shuffle(people)
    # About a third of the people are married, in pairs.
    for a, b in zip(people[0:len(people) // 3:2], people[1:len(people) // 3:2]):
      a.facts['spouse'] = b.id
      b.facts['spouse'] = a.id


def generate_entities(seed: int, num_entities: int,
                      proportions: dict[str, float] | None = None) -> list[schema.Entity]:
  """Draws a world's entities.

  Args:
    seed: the world seed; the same seed and size give identical entities.
    num_entities: how many entities to generate (the canon comes on top).
    proportions: optional share per entity type (default DEFAULT_PROPORTIONS).

  Returns:
    The canon entities, then the generated ones grouped by type.
  """
  generated = _Builder(seed, type_counts(num_entities, proportions)).build()
  return [*canon.entities(), *generated]
