"""Renders entities as encyclopedia articles cut into titled passages.

An article is an intro sentence, one paraphrased sentence per fact group,
a few inverse mentions ("X directed the film Y") and distractor facts, in a
shuffled order, cut into passages of a few sentences. Every passage is titled
with the entity's name, like a Wikipedia section. Each entity is rendered with
its own RNG seeded by (world seed, entity id), so an article does not depend on
the others; canon entities use `canon.CANON_RENDER_SEED`, so their passages are
the same in every world.
"""

from __future__ import annotations

import dataclasses
import random
from typing import Mapping, Sequence

from restreact_jax.world import canon
from restreact_jax.world import schema
from restreact_jax.world import templates

MAX_SENTENCES_PER_PASSAGE = 3
MAX_PASSAGE_CHARS = 240
_MAX_INVERSE_PER_RELATION = 3


@dataclasses.dataclass(frozen=True)
class Passage:
  """One retrievable unit of the corpus.

  Attributes:
    id: '<entity id>/<k>', unique in the corpus.
    title: the entity's name.
    text: a few sentences.
    entity_id: whose article this is.
    relations: the entity's own relations stated in this passage.
  """
  id: str
  title: str
  text: str
  entity_id: str
  relations: tuple[str, ...]

  def to_json(self) -> dict[str, str]:
    return {'id': self.id, 'title': self.title, 'text': self.text}


def inverse_index(entities: Sequence[schema.Entity]) -> dict[str, list[tuple[str, str]]]:
  """Maps an entity id to the (relation, subject id) pairs pointing at it."""
  index: dict[str, list[tuple[str, str]]] = {}
  for entity in entities:
    for relation, value in entity.facts.items():
      if relation in templates.INVERSE_TEMPLATES:
        index.setdefault(str(value), []).append((relation, entity.id))
  return index


def _fill(template: str, entity: schema.Entity, relations: Sequence[str],
          by_id: Mapping[str, schema.Entity]) -> str:
  slots = {'s': entity.name}
  for relation in relations:
    value = entity.facts[relation]
    target = schema.RELATIONS[relation].target
    if schema.RELATIONS[relation].is_entity:
      slots['o'] = by_id[str(value)].name
    elif target == schema.YEAR:
      slots['y'] = str(value)
    else:
      slots['v'] = str(value)
  return template.format(**slots)


def _sentences(entity: schema.Entity, by_id: Mapping[str, schema.Entity],
               inverse: Mapping[str, list[tuple[str, str]]],
               distractor_places: Sequence[str],
               rng: random.Random) -> tuple[str, list[tuple[str, tuple[str, ...]]]]:
  intro = rng.choice(templates.INTROS[entity.type]).format(s=entity.name)
  body: list[tuple[str, tuple[str, ...]]] = []
  for (etype, relations), paraphrases in templates.FACT_TEMPLATES.items():
    if etype == entity.type and all(r in entity.facts for r in relations):
      body.append((_fill(rng.choice(paraphrases), entity, relations, by_id), relations))
  pointing = inverse.get(entity.id, [])
  for relation, paraphrases in templates.INVERSE_TEMPLATES.items():
    subjects = [sid for rel, sid in pointing if rel == relation][:_MAX_INVERSE_PER_RELATION]
    for sid in subjects:
      body.append((rng.choice(paraphrases).format(s=entity.name, x=by_id[sid].name), ()))
  pool = list(templates.DISTRACTORS[entity.type])
  for template in rng.sample(pool, k=min(2, len(pool))):
    place = rng.choice(distractor_places) if distractor_places else entity.name
    if place == entity.name:
      # A city is not compared with itself; the canon has three cities.
      place = next((p for p in distractor_places if p != entity.name), 'a distant city')
    body.append((template.format(s=entity.name, x=place), ()))
  rng.shuffle(body)
  return intro, body


def render_article(entity: schema.Entity, by_id: Mapping[str, schema.Entity],
                   inverse: Mapping[str, list[tuple[str, str]]],
                   distractor_places: Sequence[str], seed: int) -> list[Passage]:
  """Renders one entity's article as passages.

  Args:
    entity: the entity to describe.
    by_id: every entity of the world by id (to name related entities).
    inverse: `inverse_index` of the world.
    distractor_places: city names distractor sentences may mention (canon
      articles get canon cities only, so they stay seed-independent).
    seed: the world seed (ignored for canon entities).

  Returns:
    The article's passages in order.
  """
  render_seed = canon.CANON_RENDER_SEED if entity.canon else seed
  rng = random.Random(f'{render_seed}:{entity.id}')
  intro, body = _sentences(entity, by_id, inverse, distractor_places, rng)
  chunks: list[list[tuple[str, tuple[str, ...]]]] = [[(intro, ())]]
  for sentence in body:
    current = chunks[-1]
    length = sum(len(s) + 1 for s, _ in current) + len(sentence[0])
    if len(current) >= MAX_SENTENCES_PER_PASSAGE or length > MAX_PASSAGE_CHARS:
      chunks.append([])
    chunks[-1].append(sentence)
  return [
      Passage(id=f'{entity.id}/{k}', title=entity.name,
              text=' '.join(s for s, _ in chunk), entity_id=entity.id,
              relations=tuple(r for _, rels in chunk for r in rels))
      for k, chunk in enumerate(chunks)
  ]


def render_corpus(entities: Sequence[schema.Entity], seed: int) -> list[Passage]:
  """Renders every entity's article, in entity order."""
  by_id = {e.id: e for e in entities}
  inverse = inverse_index(entities)
  canon_cities = [e.name for e in entities if e.canon and e.type == schema.CITY]
  world_cities = [e.name for e in entities if not e.canon and e.type == schema.CITY]
  passages = []
  for entity in entities:
    places = canon_cities if entity.canon else world_cities
    passages.extend(render_article(entity, by_id, inverse, places, seed))
  return passages
