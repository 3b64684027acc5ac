"""Bamboogle-shaped questions over the world, and the entity-disjoint splits.

Question families (each with several surface templates; a template id is
`<family>.<k>`):

* one_hop: `birthplace`, `director`, `author`.
* two_hop (the bulk, as in Bamboogle): `film_producer_founder`,
  `film_director_birthplace`, `film_director_birthyear`,
  `book_author_birthplace`, `book_author_birthyear`,
  `company_founder_birthplace`, `company_hq_country`, `person_birth_country`,
  `spouse_birthplace`, `band_country`, `club_country`, `member_band_city`,
  `film_producer_hq`.
* three_hop: `film_producer_founder_birthplace`, `film_director_birth_country`,
  `book_author_birth_country`, `company_hq_capital`.
* comparison: `cmp_company_founded`, `cmp_person_born`, `cmp_film_released`.
* arithmetic: `arith_founder_age`, `arith_director_age`.

**Exemplar templates** (`EXEMPLAR_TEMPLATE_IDS`, a strict subset of
`ALL_TEMPLATE_IDS`) are the surfaces the hand-written exemplar trajectories
use; each one can be instantiated over the canon (see `canon_questions`).

**Splits.** Every generated entity is assigned to exactly one of train / dev /
test (per entity type, by a seeded shuffle). A question's *topic entities* are
the entities named in its text (one, or two for comparisons); a question
belongs to a split only if all its topic entities do. Hence train, dev and
test share no topic entity. Intermediate and answer entities (a director, a
city) may be shared between splits, as they are on Wikipedia. No question of
any split involves a canon entity anywhere in its hop chain.

**Hops.** `hop_chain` lists the facts to look up, in order: `{"entity",
"entity_id", "relation", "value", "passage_id"}`. `num_hops` is the number of
distinct entities that must be searched for. `supporting_passages` are the
passages stating those facts.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Mapping, Sequence

from restreact_jax.world import schema

SPLITS = ('train', 'dev', 'test')
QTYPE_WEIGHTS: dict[str, float] = {
    'one_hop': 0.10, 'two_hop': 0.50, 'three_hop': 0.15,
    'comparison': 0.125, 'arithmetic': 0.125,
}


def check_qtype_weights(weights: Mapping[str, float]) -> None:
  """Raises ValueError unless `weights` is a question mix over known qtypes.

  Every key must be a qtype of QTYPE_WEIGHTS, every weight >= 0, and the
  weights must sum to 1 (a qtype left out is never asked).
  """
  unknown = sorted(set(weights) - set(QTYPE_WEIGHTS))
  if unknown:
    raise ValueError(f'unknown question types {unknown}; known: {list(QTYPE_WEIGHTS)}')
  if any(not float(w) >= 0 for w in weights.values()):
    raise ValueError(f'question type weights must be >= 0, got {dict(weights)}')
  if abs(sum(float(w) for w in weights.values()) - 1) > 1e-6:
    raise ValueError(f'question type weights must sum to 1, got {dict(weights)}')


@dataclasses.dataclass(frozen=True)
class Family:
  """A question family: what is asked, and its surface templates.

  Attributes:
    id: family name.
    qtype: one of QTYPE_WEIGHTS.
    topic_type: the entity type named in the question.
    surfaces: templates with `{x}` (or `{a}`/`{b}` for comparisons).
    path: relations to follow from the topic (path and arithmetic families).
    year: the compared year relation (comparison), or the topic's own year
      relation (arithmetic: answer = topic year - birth year of the path's end).
  """
  id: str
  qtype: str
  topic_type: str
  surfaces: tuple[str, ...]
  path: tuple[str, ...] = ()
  year: str = ''


FAMILIES: tuple[Family, ...] = (
    Family('birthplace', 'one_hop', schema.PERSON,
           ('Where was {x} born?', 'In which city was {x} born?'), ('born_in',)),
    Family('director', 'one_hop', schema.FILM,
           ('Who directed {x}?', 'Who was the director of the film {x}?'), ('directed_by',)),
    Family('author', 'one_hop', schema.BOOK,
           ('Who wrote {x}?', 'Who is the author of the book {x}?'), ('author',)),
    Family('film_producer_founder', 'two_hop', schema.FILM,
           ('Who founded the company that produced {x}?',
            'Who is the founder of the company that produced the film {x}?',
            'The film {x} was produced by a company. Who founded that company?'),
           ('produced_by', 'founded_by')),
    Family('film_director_birthplace', 'two_hop', schema.FILM,
           ('Where was the director of {x} born?',
            'In which city was the person who directed {x} born?',
            'The film {x} was directed by someone. Where was that person born?'),
           ('directed_by', 'born_in')),
    Family('film_director_birthyear', 'two_hop', schema.FILM,
           ('In what year was the director of {x} born?',
            'When was the person who directed the film {x} born?'),
           ('directed_by', 'birth_year')),
    Family('book_author_birthplace', 'two_hop', schema.BOOK,
           ('Where was the author of {x} born?',
            'In which city was the writer of the book {x} born?'),
           ('author', 'born_in')),
    Family('book_author_birthyear', 'two_hop', schema.BOOK,
           ('In what year was the author of {x} born?',
            'When was the person who wrote {x} born?'),
           ('author', 'birth_year')),
    Family('company_founder_birthplace', 'two_hop', schema.COMPANY,
           ('Where was the founder of {x} born?',
            'In which city was the person who founded {x} born?'),
           ('founded_by', 'born_in')),
    Family('company_hq_country', 'two_hop', schema.COMPANY,
           ('In which country does {x} have its headquarters?',
            'In what country are the headquarters of {x}?'),
           ('headquartered_in', 'located_in')),
    Family('person_birth_country', 'two_hop', schema.PERSON,
           ('In which country was {x} born?',
            '{x} was born in a city. Which country is that city in?'),
           ('born_in', 'located_in')),
    Family('spouse_birthplace', 'two_hop', schema.PERSON,
           ('Where was the spouse of {x} born?',
            'In which city was the person married to {x} born?'),
           ('spouse', 'born_in')),
    Family('band_country', 'two_hop', schema.BAND,
           ('In which country was the band {x} formed?',
            '{x} formed in a city. Which country is it in?'),
           ('formed_in', 'located_in')),
    Family('club_country', 'two_hop', schema.CLUB,
           ('In which country is {x} based?',
            'The club {x} is based in a city. In which country is that city?'),
           ('club_city', 'located_in')),
    Family('member_band_city', 'two_hop', schema.PERSON,
           ('In which city was the band of {x} formed?',
            '{x} is a member of a band. Where was that band formed?'),
           ('member_of', 'formed_in')),
    Family('film_producer_hq', 'two_hop', schema.FILM,
           ('Where are the headquarters of the company that produced {x}?',
            'In which city is the company that produced the film {x} headquartered?'),
           ('produced_by', 'headquartered_in')),
    Family('film_producer_founder_birthplace', 'three_hop', schema.FILM,
           ('Where was the founder of the company that produced {x} born?',
            'The film {x} was produced by a company. Where was the founder of that company born?'),
           ('produced_by', 'founded_by', 'born_in')),
    Family('film_director_birth_country', 'three_hop', schema.FILM,
           ('In which country was the director of {x} born?',
            'In what country was the person who directed the film {x} born?'),
           ('directed_by', 'born_in', 'located_in')),
    Family('book_author_birth_country', 'three_hop', schema.BOOK,
           ('In which country was the author of {x} born?',
            'In what country was the writer of the book {x} born?'),
           ('author', 'born_in', 'located_in')),
    Family('company_hq_capital', 'three_hop', schema.COMPANY,
           ('What is the capital of the country where {x} has its headquarters?',
            '{x} has its headquarters in a city. What is the capital of that city\'s country?'),
           ('headquartered_in', 'located_in', 'capital')),
    Family('cmp_company_founded', 'comparison', schema.COMPANY,
           ('Which was founded first, {a} or {b}?',
            'Which company is older, {a} or {b}?'), year='founded_year'),
    Family('cmp_person_born', 'comparison', schema.PERSON,
           ('Who was born first, {a} or {b}?', 'Who is older, {a} or {b}?'),
           year='birth_year'),
    Family('cmp_film_released', 'comparison', schema.FILM,
           ('Which film was released first, {a} or {b}?',
            'Which came out earlier, the film {a} or the film {b}?'), year='release_year'),
    Family('arith_founder_age', 'arithmetic', schema.COMPANY,
           ('How old was the founder of {x} when the company was founded?',
            'How many years after its founder was born was {x} founded?'),
           ('founded_by',), year='founded_year'),
    Family('arith_director_age', 'arithmetic', schema.FILM,
           ('How old was the director of {x} when the film was released?',
            'How many years after its director was born was {x} released?'),
           ('directed_by',), year='release_year'),
)
FAMILIES_BY_ID: dict[str, Family] = {f.id: f for f in FAMILIES}

ALL_TEMPLATE_IDS: tuple[str, ...] = tuple(
    f'{f.id}.{k}' for f in FAMILIES for k in range(len(f.surfaces)))

# The surfaces used by the hand-written exemplar trajectories (about the canon).
EXEMPLAR_TEMPLATE_IDS: tuple[str, ...] = (
    'birthplace.0',
    'film_producer_founder.0',
    'film_director_birthplace.0',
    'person_birth_country.0',
    'company_hq_country.0',
    'book_author_birthyear.0',
    'film_producer_founder_birthplace.0',
    'cmp_company_founded.0',
    'arith_founder_age.0',
)


def template_text(template_id: str) -> str:
  """Returns the surface text of a template id such as 'birthplace.0'."""
  family, k = template_id.rsplit('.', 1)
  return FAMILIES_BY_ID[family].surfaces[int(k)]


def natural_query(hop: Mapping[str, str]) -> str:
  """The query a searcher would type for one hop: entity name + relation words."""
  return f'{hop["entity"]} {schema.RELATIONS[hop["relation"]].query_words}'


def aliases(entity: schema.Entity) -> list[str]:
  """Accepted spellings of an entity as an answer, canonical name first."""
  out = [entity.name]
  words = entity.name.split()
  if entity.type == schema.PERSON and len(words) > 1:
    out.append(words[-1])
  elif entity.type in (schema.COMPANY, schema.CLUB) and len(words) > 1:
    out.append(words[0])
  elif entity.type in (schema.FILM, schema.BOOK, schema.BAND) and words[0] == 'The':
    out.append(' '.join(words[1:]))
  return out


class QuestionMaker:
  """Turns (family, topics) into question records for one world.

  Args:
    entities: every entity of the world.
    support: (entity id, relation) -> id of the passage stating that fact.
  """

  def __init__(self, entities: Sequence[schema.Entity],
               support: Mapping[tuple[str, str], str]):
    self.by_id = {e.id: e for e in entities}
    self.support = support

  def _hop(self, entity: schema.Entity, relation: str) -> dict[str, str]:
    value = entity.facts[relation]
    shown = self.by_id[str(value)].name if schema.RELATIONS[relation].is_entity else str(value)
    return {'entity': entity.name, 'entity_id': entity.id, 'relation': relation,
            'value': shown, 'passage_id': self.support[(entity.id, relation)]}

  def resolvable(self, family: Family, topic: schema.Entity) -> bool:
    """Whether every fact the family needs exists for `topic`."""
    entity = topic
    for relation in family.path:
      if relation not in entity.facts:
        return False
      if schema.RELATIONS[relation].is_entity:
        entity = self.by_id[str(entity.facts[relation])]
    if family.qtype == 'arithmetic':
      return 'birth_year' in entity.facts and family.year in topic.facts
    return True

  def make(self, family: Family, topics: Sequence[schema.Entity],
           surface: int) -> dict[str, object]:
    """Builds one question record (without its id)."""
    chain: list[dict[str, str]] = []
    if family.qtype == 'comparison':
      a, b = topics
      chain = [self._hop(a, family.year), self._hop(b, family.year)]
      first = a if int(a.facts[family.year]) < int(b.facts[family.year]) else b
      answers = aliases(first)
      text = family.surfaces[surface].format(a=a.name, b=b.name)
    else:
      (topic,) = topics
      entity = topic
      for relation in family.path:
        chain.append(self._hop(entity, relation))
        if schema.RELATIONS[relation].is_entity:
          entity = self.by_id[str(entity.facts[relation])]
      if family.qtype == 'arithmetic':
        chain.append(self._hop(entity, 'birth_year'))
        chain.append(self._hop(topic, family.year))
        years = int(topic.facts[family.year]) - int(entity.facts['birth_year'])
        answers = [str(years), f'{years} years', f'{years} years old']
      elif schema.RELATIONS[family.path[-1]].is_entity:
        answers = aliases(entity)
      else:
        answers = [chain[-1]['value']]
      text = family.surfaces[surface].format(x=topic.name)
    passages = list(dict.fromkeys(h['passage_id'] for h in chain))
    return {
        'question': text,
        'answers': answers,
        'qtype': family.qtype,
        'num_hops': len(dict.fromkeys(h['entity_id'] for h in chain)),
        'hop_chain': chain,
        'supporting_passages': passages,
        'template_id': f'{family.id}.{surface}',
        'topic_entities': [t.id for t in topics],
    }


def assign_splits(entities: Sequence[schema.Entity], seed: int,
                  dev_fraction: float, test_fraction: float) -> dict[str, str]:
  """Assigns every generated entity to 'train', 'dev' or 'test'.

  Args:
    entities: the world's entities (canon ones are skipped).
    seed: the world seed.
    dev_fraction: share of each type's entities that go to dev.
    test_fraction: share that go to test.

  Returns:
    entity id -> split name.
  """
  rng = random.Random(f'{seed}:splits')
  out: dict[str, str] = {}
  for etype in schema.ENTITY_TYPES:
    ids = [e.id for e in entities if e.type == etype and not e.canon]
    rng.shuffle(ids)
    n_dev = round(len(ids) * dev_fraction)
    n_test = round(len(ids) * test_fraction)
    for i, eid in enumerate(ids):
      out[eid] = 'dev' if i < n_dev else 'test' if i < n_dev + n_test else 'train'
  return out


_Ask = tuple[Family, tuple[schema.Entity, ...]]


def _candidates(maker: QuestionMaker, pool: Mapping[str, list[schema.Entity]],
                rng: random.Random) -> dict[str, dict[str, list[_Ask]]]:
  """All (family, topics) a split can ask, grouped by qtype then family."""
  out: dict[str, dict[str, list[_Ask]]] = {}
  for family in FAMILIES:
    topics = pool.get(family.topic_type, [])
    if family.qtype == 'comparison':
      pairs = []
      seen = set()
      for _ in range(4 * len(topics)):
        if len(topics) < 2:
          break
        a, b = rng.sample(topics, 2)
        key = tuple(sorted((a.id, b.id)))
        if key not in seen and a.facts[family.year] != b.facts[family.year]:
          seen.add(key)
          pairs.append((family, (a, b)))
      found = pairs
    else:
      found = [(family, (t,)) for t in topics if maker.resolvable(family, t)]
    out.setdefault(family.qtype, {})[family.id] = found
  return out


def make_split(maker: QuestionMaker, pool: Mapping[str, list[schema.Entity]],
               count: int, rng: random.Random,
               weights: Mapping[str, float] | None = None) -> list[dict[str, object]]:
  """Draws up to `count` distinct questions about the entities in `pool`.

  Qtypes follow `weights` (default QTYPE_WEIGHTS; a qtype without weight is
  never asked); within a qtype the families take turns, so every family is
  represented. Each (family, topics) is asked at most once.
  """
  if weights is None:
    weights = QTYPE_WEIGHTS
  asked = [q for q in QTYPE_WEIGHTS if weights.get(q, 0) > 0]
  grouped = _candidates(maker, pool, rng)
  queues: dict[str, list[_Ask]] = {}
  for qtype, by_family in grouped.items():
    lists = [list(v) for v in by_family.values()]
    for items in lists:
      rng.shuffle(items)
    # Round-robin across families so no family crowds out the others.
    merged = []
    for i in range(max((len(x) for x in lists), default=0)):
      merged.extend(x[i] for x in lists if i < len(x))
    queues[qtype] = merged
  chosen: list[_Ask] = []
  for qtype in asked:
    queue = queues.get(qtype, [])
    take = min(round(count * weights[qtype]), len(queue))
    chosen.extend(queue[:take])
    queues[qtype] = queue[take:]
  # Fill any shortfall from what is left of the asked qtypes.
  for qtype in asked:
    while len(chosen) < count and queues.get(qtype):
      chosen.append(queues[qtype].pop(0))
  chosen = chosen[:count]
  rng.shuffle(chosen)
  return [maker.make(family, topics, rng.randrange(len(family.surfaces)))
          for family, topics in chosen]


def make_questions(entities: Sequence[schema.Entity],
                   support: Mapping[tuple[str, str], str],
                   splits: Mapping[str, str], counts: Mapping[str, int],
                   seed: int, weights: Mapping[str, float] | None = None
                   ) -> dict[str, list[dict[str, object]]]:
  """Builds the question splits.

  Args:
    entities: the world's entities.
    support: (entity id, relation) -> supporting passage id.
    splits: entity id -> split (from `assign_splits`).
    counts: split -> number of questions wanted.
    seed: the world seed.
    weights: qtype -> share of every split (default QTYPE_WEIGHTS).

  Returns:
    split -> question records with ids '<split>-NNNNN'.
  """
  maker = QuestionMaker(entities, support)
  out = {}
  for split in SPLITS:
    pool: dict[str, list[schema.Entity]] = {}
    for e in entities:
      if not e.canon and splits.get(e.id) == split:
        pool.setdefault(e.type, []).append(e)
    rng = random.Random(f'{seed}:questions:{split}')
    records = make_split(maker, pool, counts.get(split, 0), rng, weights)
    out[split] = [{'id': f'{split}-{i:05d}', **r} for i, r in enumerate(records)]
  return out


def canon_questions(entities: Sequence[schema.Entity],
                    support: Mapping[tuple[str, str], str]) -> list[dict[str, object]]:
  """One question per exemplar template about canon entities (never a split).

  These are the questions the hand-written exemplar trajectories answer; they
  are the same for every world seed.
  """
  maker = QuestionMaker(entities, support)
  canon = [e for e in entities if e.canon]
  out = []
  for template_id in EXEMPLAR_TEMPLATE_IDS:
    family_id, k = template_id.rsplit('.', 1)
    family = FAMILIES_BY_ID[family_id]
    topics = [e for e in canon if e.type == family.topic_type]
    if family.qtype == 'comparison':
      pair = next((a, b) for a in topics for b in topics
                  if a.id < b.id and a.facts[family.year] != b.facts[family.year])
      record = maker.make(family, pair, int(k))
    else:
      topic = next(t for t in topics if maker.resolvable(family, t))
      record = maker.make(family, (topic,), int(k))
    out.append({'id': f'canon-{len(out):05d}', **record})
  return out
