"""The canon: hand-written entities present, identically, in every world.

Hand-written exemplar trajectories (the seed demonstrations) talk about these
entities, so they stay valid whatever `WORLD_SEED` is. Canon entities relate
only to each other; generated entities never point at them; their articles are
rendered with a fixed paraphrase seed (so the canon passages are byte-identical
in every world); and no question of any split mentions a canon entity anywhere
in its hop chain.

Canon entities (id: name — facts):

* canon-country-veloria: Veloria — capital Ardmere, language Velorian.
* canon-country-kastavia: Kastavia — capital Tirraway, language Kastavian.
* canon-city-ardmere: Ardmere — in Veloria, population 812000.
* canon-city-solbridge: Solbridge — in Veloria, population 164000.
* canon-city-tirraway: Tirraway — in Kastavia, population 530000.
* canon-person-oren-vasko: Oren Vasko — born in Tirraway in 1902, industrialist.
* canon-person-mira-castell: Mira Castell — born in Solbridge in 1931, film
  director, married to Jonah Pell.
* canon-person-jonah-pell: Jonah Pell — born in Ardmere in 1929, composer,
  married to Mira Castell, member of The Copper Wrens.
* canon-person-ilse-marrow: Ilse Marrow — born in Ardmere in 1955, novelist.
* canon-person-kasimir-dole: Kasimir Dole — born in Solbridge in 1888, engineer.
* canon-company-lanternfield: Lanternfield Pictures — founded by Oren Vasko in
  1948, headquarters in Ardmere, film industry.
* canon-company-brightwater: Brightwater Mills — founded by Kasimir Dole in
  1921, headquarters in Tirraway, textile industry.
* canon-film-glass-orchard: The Glass Orchard — directed by Mira Castell,
  produced by Lanternfield Pictures, released 1974, drama.
* canon-book-salt-and-ember: Salt and Ember — written by Ilse Marrow,
  published 1989.
* canon-band-copper-wrens: The Copper Wrens — formed in Solbridge in 1979, folk.
* canon-club-tirraway-harriers: Tirraway Harriers — based in Tirraway,
  founded 1921, football.

Example canon questions (any exemplar template applies): "Who founded the
company that produced The Glass Orchard?" (Oren Vasko), "In which country was
Mira Castell born?" (Veloria), "Which was founded first, Lanternfield Pictures
or Brightwater Mills?" (Brightwater Mills).
"""

from __future__ import annotations

from restreact_jax.world import schema

# A fixed paraphrase seed: canon passages must not depend on the world seed.
CANON_RENDER_SEED = 20231215


def _e(eid: str, etype: str, name: str, **facts: schema.Value) -> schema.Entity:
  return schema.Entity(id=eid, type=etype, name=name, facts=dict(facts), canon=True)


def entities() -> list[schema.Entity]:
  """Returns fresh copies of the canon entities (callers may not mutate shared state)."""
  return [
      _e('canon-country-kastavia', schema.COUNTRY, 'Kastavia',
         capital='canon-city-tirraway', language='Kastavian'),
      _e('canon-country-veloria', schema.COUNTRY, 'Veloria',
         capital='canon-city-ardmere', language='Velorian'),
      _e('canon-city-ardmere', schema.CITY, 'Ardmere',
         located_in='canon-country-veloria', population=812000),
      _e('canon-city-solbridge', schema.CITY, 'Solbridge',
         located_in='canon-country-veloria', population=164000),
      _e('canon-city-tirraway', schema.CITY, 'Tirraway',
         located_in='canon-country-kastavia', population=530000),
      _e('canon-person-oren-vasko', schema.PERSON, 'Oren Vasko',
         born_in='canon-city-tirraway', birth_year=1902, occupation='industrialist'),
      _e('canon-person-mira-castell', schema.PERSON, 'Mira Castell',
         born_in='canon-city-solbridge', birth_year=1931, occupation='film director',
         spouse='canon-person-jonah-pell'),
      _e('canon-person-jonah-pell', schema.PERSON, 'Jonah Pell',
         born_in='canon-city-ardmere', birth_year=1929, occupation='composer',
         spouse='canon-person-mira-castell', member_of='canon-band-copper-wrens'),
      _e('canon-person-ilse-marrow', schema.PERSON, 'Ilse Marrow',
         born_in='canon-city-ardmere', birth_year=1955, occupation='novelist'),
      _e('canon-person-kasimir-dole', schema.PERSON, 'Kasimir Dole',
         born_in='canon-city-solbridge', birth_year=1888, occupation='engineer'),
      _e('canon-company-lanternfield', schema.COMPANY, 'Lanternfield Pictures',
         founded_by='canon-person-oren-vasko', founded_year=1948,
         headquartered_in='canon-city-ardmere', industry='film'),
      _e('canon-company-brightwater', schema.COMPANY, 'Brightwater Mills',
         founded_by='canon-person-kasimir-dole', founded_year=1921,
         headquartered_in='canon-city-tirraway', industry='textile'),
      _e('canon-film-glass-orchard', schema.FILM, 'The Glass Orchard',
         directed_by='canon-person-mira-castell', produced_by='canon-company-lanternfield',
         release_year=1974, genre='drama'),
      _e('canon-book-salt-and-ember', schema.BOOK, 'Salt and Ember',
         author='canon-person-ilse-marrow', published_year=1989),
      _e('canon-band-copper-wrens', schema.BAND, 'The Copper Wrens',
         formed_in='canon-city-solbridge', formed_year=1979, music_style='folk'),
      _e('canon-club-tirraway-harriers', schema.CLUB, 'Tirraway Harriers',
         club_city='canon-city-tirraway', club_founded_year=1921, sport='football'),
  ]


ENTITIES: tuple[schema.Entity, ...] = tuple(entities())
ENTITY_IDS: frozenset[str] = frozenset(e.id for e in ENTITIES)
NAMES: frozenset[str] = frozenset(e.name for e in ENTITIES)
