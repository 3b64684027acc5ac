"""Builds a whole world (entities, corpus, questions) and reads/writes it on disk.

Layout of a world directory (all UTF-8 JSON lines, deterministic bytes):

```
world/
  corpus.jsonl              {"id", "title", "text"} per passage
  entities.jsonl            {"id", "type", "name", "facts", "canon", "split"}
  questions/train.jsonl     unlabeled pool for self-improvement (gold fields kept
  questions/dev.jsonl       for analysis only)
  questions/test.jsonl
  questions/canon.jsonl     exemplar-template questions about the canon (no split)
  world.json                config, its hash, counts, canon ids, template ids
```

`write_world` writes into a temporary sibling and renames it into place, so a
reader never sees half a world.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import time
from typing import Iterable, Iterator, Mapping, Sequence

from restreact_jax import errors, jsonl
from restreact_jax.world import canon
from restreact_jax.world import generator
from restreact_jax.world import questions as questions_lib
from restreact_jax.world import render
from restreact_jax.world import schema

# Bump when the generator's output changes for the same config.
GENERATOR_VERSION = 1


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  """How big a world to draw, and from which seed.

  Attributes:
    seed: the world seed (the `WORLD_SEED` gin macro).
    num_entities: generated entities (the canon comes on top).
    num_train: questions in the unlabeled training pool.
    num_dev: dev questions.
    num_test: test questions.
    dev_fraction: share of every entity type reserved for dev topics.
    test_fraction: share reserved for test topics.
    qtype_weights: question type -> share of every split (None: the default
      mix, `questions.QTYPE_WEIGHTS`); a type left out is never asked.
  """
  seed: int = 0
  num_entities: int = 400
  num_train: int = 300
  num_dev: int = 60
  num_test: int = 60
  dev_fraction: float = 0.15
  test_fraction: float = 0.15
  qtype_weights: Mapping[str, float] | None = None

  def validate(self) -> None:
    if self.num_entities < 20:
      raise errors.UserError(f'world num_entities must be >= 20, got {self.num_entities}')
    for name in ('num_train', 'num_dev', 'num_test'):
      if getattr(self, name) < 0:
        raise errors.UserError(f'world {name} must be >= 0, got {getattr(self, name)}')
    if not (0 <= self.dev_fraction and 0 <= self.test_fraction
            and self.dev_fraction + self.test_fraction < 1):
      raise errors.UserError(
          'world dev_fraction and test_fraction must be >= 0 and sum to < 1, got '
          f'{self.dev_fraction} and {self.test_fraction}')
    if self.qtype_weights is not None:
      try:
        questions_lib.check_qtype_weights(self.qtype_weights)
      except ValueError as e:
        raise errors.UserError(f'world qtype_weights: {e}') from None

  def fingerprint(self) -> str:
    """A hash of everything that determines the world's bytes."""
    fields = dataclasses.asdict(self)
    if fields['qtype_weights'] is None:
      del fields['qtype_weights']  # worlds of the default mix keep their hash
    else:
      fields['qtype_weights'] = {k: float(v) for k, v in fields['qtype_weights'].items()}
    payload = json.dumps({'version': GENERATOR_VERSION, **fields}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


@dataclasses.dataclass
class World:
  """A built world, in memory."""
  config: WorldConfig
  entities: list[schema.Entity]
  passages: list[render.Passage]
  support: dict[tuple[str, str], str]
  splits: dict[str, str]
  questions: dict[str, list[dict[str, object]]]
  canon_questions: list[dict[str, object]]

  def summary(self) -> dict[str, object]:
    """The contents of world.json."""
    types: dict[str, int] = {}
    for e in self.entities:
      if not e.canon:
        types[e.type] = types.get(e.type, 0) + 1
    return {
        'config': dataclasses.asdict(self.config),
        'fingerprint': self.config.fingerprint(),
        'generator_version': GENERATOR_VERSION,
        'counts': {
            'entities': len(self.entities),
            'generated_entities_by_type': types,
            'canon_entities': len(canon.ENTITY_IDS),
            'passages': len(self.passages),
            'questions': {k: len(v) for k, v in self.questions.items()},
        },
        'canon': sorted(canon.ENTITY_IDS),
        'template_ids': list(questions_lib.ALL_TEMPLATE_IDS),
        'exemplar_template_ids': list(questions_lib.EXEMPLAR_TEMPLATE_IDS),
    }


def _support_map(passages: Sequence[render.Passage]) -> dict[tuple[str, str], str]:
  support: dict[tuple[str, str], str] = {}
  for passage in passages:
    for relation in passage.relations:
      support.setdefault((passage.entity_id, relation), passage.id)
  return support


def build_world(config: WorldConfig) -> World:
  """Draws a world in memory.

  Args:
    config: size and seed.

  Returns:
    The world; the same config always gives the same world.
  """
  config.validate()
  entities = generator.generate_entities(config.seed, config.num_entities)
  passages = render.render_corpus(entities, config.seed)
  support = _support_map(passages)
  splits = questions_lib.assign_splits(entities, config.seed, config.dev_fraction,
                                       config.test_fraction)
  counts = {'train': config.num_train, 'dev': config.num_dev, 'test': config.num_test}
  questions = questions_lib.make_questions(entities, support, splits, counts, config.seed,
                                           config.qtype_weights)
  return World(config=config, entities=entities, passages=passages, support=support,
               splits=splits, questions=questions,
               canon_questions=questions_lib.canon_questions(entities, support))


def _dump_jsonl(path: pathlib.Path, rows: Iterable[dict[str, object]]) -> None:
  with open(path, 'w', encoding='utf-8') as f:
    for row in rows:
      f.write(json.dumps(row, ensure_ascii=False) + '\n')


def write_world(world: World, directory: str | os.PathLike[str]) -> pathlib.Path:
  """Writes `world` to `directory` atomically (temporary sibling, then rename).

  Args:
    world: a built world.
    directory: the target, e.g. EXP_DIR/world; replaced if it exists.

  Returns:
    The directory.
  """
  target = pathlib.Path(directory)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_name(f'.{target.name}.tmp-{os.getpid()}-{time.monotonic_ns()}')
  (tmp / 'questions').mkdir(parents=True)
  try:
    _dump_jsonl(tmp / 'corpus.jsonl', (p.to_json() for p in world.passages))
    _dump_jsonl(tmp / 'entities.jsonl',
                ({**e.to_json(), 'split': world.splits.get(e.id, 'canon')}
                 for e in world.entities))
    for split, rows in world.questions.items():
      _dump_jsonl(tmp / 'questions' / f'{split}.jsonl', rows)
    _dump_jsonl(tmp / 'questions' / 'canon.jsonl', world.canon_questions)
    (tmp / 'world.json').write_text(json.dumps(world.summary(), indent=2) + '\n',
                                    encoding='utf-8')
    if target.exists():
      # Keep the old world until the new one is complete, then swap.
      old = target.with_name(f'.{target.name}.old-{os.getpid()}')
      os.replace(target, old)
      os.replace(tmp, target)
      shutil.rmtree(old, ignore_errors=True)
    else:
      os.replace(tmp, target)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  return target


def read_summary(directory: str | os.PathLike[str]) -> dict[str, object] | None:
  """Returns world.json of a world directory, or None if there is none."""
  path = pathlib.Path(directory) / 'world.json'
  if not path.exists():
    return None
  try:
    return json.loads(path.read_text(encoding='utf-8'))
  except json.JSONDecodeError as e:
    raise errors.UserError(f'{path}: not valid JSON ({e})') from None


def iter_jsonl(path: str | os.PathLike[str]) -> Iterator[dict[str, object]]:
  """Yields the JSON objects of a JSON-lines file, naming the line on errors."""
  return jsonl.iter_jsonl(path)


def load_questions(directory: str | os.PathLike[str], split: str) -> list[dict[str, object]]:
  """Reads `questions/<split>.jsonl` of a world directory."""
  return list(iter_jsonl(pathlib.Path(directory) / 'questions' / f'{split}.jsonl'))


def load_corpus(directory: str | os.PathLike[str]) -> list[dict[str, object]]:
  """Reads `corpus.jsonl` of a world directory."""
  return list(iter_jsonl(pathlib.Path(directory) / 'corpus.jsonl'))
