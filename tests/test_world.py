"""Tests for the world generator: determinism, names, canon, templates, facts."""

import filecmp
import json
import re

import pytest
import Stemmer

from restreact_jax import errors
from restreact_jax.world import build
from restreact_jax.world import canon
from restreact_jax.world import names
from restreact_jax.world import questions
from restreact_jax.world import schema
from restreact_jax.world import templates

SMALL = dict(num_entities=150, num_train=80, num_dev=20, num_test=20)
_STEM = Stemmer.Stemmer('english').stemWord


def _stems(text):
  return {_STEM(w) for w in re.findall(r'\w\w+', text.lower())}


@pytest.fixture(scope='module')
def small_world():
  return build.build_world(build.WorldConfig(seed=3, **SMALL))


def _write(tmp_path, name, seed):
  return build.write_world(build.build_world(build.WorldConfig(seed=seed, **SMALL)),
                           tmp_path / name)


def _files(directory):
  return sorted(str(p.relative_to(directory)) for p in directory.rglob('*') if p.is_file())


def test_same_seed_gives_byte_identical_world(tmp_path):
  a, b = _write(tmp_path, 'a', 7), _write(tmp_path, 'b', 7)
  assert _files(a) == _files(b)
  assert 'corpus.jsonl' in _files(a) and 'questions/dev.jsonl' in _files(a)
  match, mismatch, err = filecmp.cmpfiles(a, b, _files(a), shallow=False)
  assert not mismatch and not err and len(match) == len(_files(a))


def test_other_seed_gives_different_world(tmp_path):
  a, c = _write(tmp_path, 'a', 7), _write(tmp_path, 'c', 8)
  assert (a / 'corpus.jsonl').read_bytes() != (c / 'corpus.jsonl').read_bytes()
  assert (a / 'questions/test.jsonl').read_bytes() != (c / 'questions/test.jsonl').read_bytes()


def test_default_world_size_and_speed_budget():
  world = build.build_world(build.WorldConfig(seed=0))
  summary = world.summary()
  assert summary['counts']['entities'] == 400 + len(canon.ENTITY_IDS)
  assert summary['counts']['questions'] == {'train': 300, 'dev': 60, 'test': 60}
  assert 800 < summary['counts']['passages'] < 2000


@pytest.mark.parametrize('num_entities', [150, pytest.param(10_000, marks=pytest.mark.slow)])
def test_names_never_collide(num_entities):
  world = build.build_world(build.WorldConfig(seed=11, num_entities=num_entities,
                                              num_train=10, num_dev=5, num_test=5))
  names_ = [e.name.lower() for e in world.entities]
  assert len(names_) == len(set(names_))
  common = {w.lower() for w in (*names.ADJECTIVES, *names.NOUNS, *names.BAND_NOUNS,
                                *names.COMPANY_SUFFIXES, *names.CLUB_SUFFIXES, 'The', 'of')}
  canon_words = {w.lower() for n in canon.NAMES for w in n.split()} - common
  owners = {}
  for e in world.entities:
    if e.canon:
      continue
    # Invented words belong to one entity (person first names repeat on purpose).
    words = e.name.split()[1:] if e.type == schema.PERSON else e.name.split()
    for w in (w.lower() for w in words if w.lower() not in common):
      assert w not in canon_words, (w, e.name)
      assert owners.setdefault(w, e.id) == e.id, (w, owners[w], e.id)
  assert owners
  assert max(len(w) for e in world.entities for w in e.name.split()) <= 16


@pytest.mark.parametrize('seed', [0, 1, 2])
def test_canon_is_identical_in_every_world(seed):
  world = build.build_world(build.WorldConfig(seed=seed, **SMALL))
  reference = build.build_world(build.WorldConfig(seed=99, **SMALL))
  canon_passages = [p for p in world.passages if p.entity_id in canon.ENTITY_IDS]
  assert canon_passages == [p for p in reference.passages if p.entity_id in canon.ENTITY_IDS]
  assert {p.entity_id for p in canon_passages} == set(canon.ENTITY_IDS)
  assert world.canon_questions == reference.canon_questions
  generated_names = {e.name for e in world.entities if not e.canon}
  assert not generated_names & canon.NAMES


def test_canon_questions_cover_exemplar_templates(small_world):
  qs = small_world.canon_questions
  assert [q['template_id'] for q in qs] == list(questions.EXEMPLAR_TEMPLATE_IDS)
  by_template = {q['template_id']: q for q in qs}
  assert by_template['film_producer_founder.0']['question'] == (
      'Who founded the company that produced The Glass Orchard?')
  assert by_template['film_producer_founder.0']['answers'][0] == 'Oren Vasko'
  assert by_template['cmp_company_founded.0']['answers'][0] == 'Brightwater Mills'
  assert by_template['arith_founder_age.0']['answers'][0] == str(1948 - 1902)
  assert all(e['entity_id'] in canon.ENTITY_IDS for q in qs for e in q['hop_chain'])


def test_exemplar_templates_are_a_strict_subset():
  exemplar, every = set(questions.EXEMPLAR_TEMPLATE_IDS), set(questions.ALL_TEMPLATE_IDS)
  assert exemplar < every
  assert len(every) >= 2 * len(exemplar)
  for template_id in every:
    assert questions.template_text(template_id)


def test_every_paraphrase_contains_its_relations_query_words():
  for (_, relations), paraphrases in templates.FACT_TEMPLATES.items():
    for relation in relations:
      wanted = _stems(schema.RELATIONS[relation].query_words)
      for text in paraphrases:
        assert wanted <= _stems(text), (relation, text)


def test_fillers_do_not_use_hop_query_words():
  hop_relations = {r for f in questions.FAMILIES for r in f.path} | {
      f.year for f in questions.FAMILIES if f.year} | {'birth_year'}
  hop_words = set().union(*(_stems(schema.RELATIONS[r].query_words) for r in hop_relations))
  for texts in (*templates.DISTRACTORS.values(), *templates.INTROS.values()):
    for text in texts:
      assert not _stems(text) & hop_words, text


def test_facts_are_consistent(small_world):
  by_id = {e.id: e for e in small_world.entities}
  for e in small_world.entities:
    for relation, value in e.facts.items():
      rel = schema.RELATIONS[relation]
      assert rel.subject == e.type
      if rel.is_entity:
        assert by_id[value].type == rel.target
        assert by_id[value].canon == e.canon  # canon is a closed subgraph
    if e.type == schema.COMPANY:
      assert e.facts['founded_year'] >= by_id[e.facts['founded_by']].facts['birth_year'] + 18
    if e.type == schema.FILM:
      assert e.facts['release_year'] > by_id[e.facts['produced_by']].facts['founded_year']
    if e.type == schema.COUNTRY:
      assert by_id[e.facts['capital']].facts['located_in'] == e.id
    if 'spouse' in e.facts:
      assert by_id[e.facts['spouse']].facts['spouse'] == e.id


def test_every_fact_has_a_supporting_passage_stating_it(small_world):
  passages = {p.id: p for p in small_world.passages}
  by_id = {e.id: e for e in small_world.entities}
  for e in small_world.entities:
    for relation, value in e.facts.items():
      passage = passages[small_world.support[(e.id, relation)]]
      assert passage.title == e.name
      shown = by_id[value].name if schema.RELATIONS[relation].is_entity else str(value)
      assert shown in passage.text


def test_world_json_records_config_and_canon(tmp_path):
  directory = _write(tmp_path, 'w', 5)
  summary = json.loads((directory / 'world.json').read_text())
  assert summary['config']['seed'] == 5
  assert summary['canon'] == sorted(canon.ENTITY_IDS)
  assert summary['exemplar_template_ids'] == list(questions.EXEMPLAR_TEMPLATE_IDS)
  corpus = build.load_corpus(directory)
  assert len(corpus) == summary['counts']['passages']
  assert set(corpus[0]) == {'id', 'title', 'text'}


def test_bad_config_is_a_user_error():
  with pytest.raises(errors.UserError, match='num_entities'):
    build.build_world(build.WorldConfig(num_entities=3))
  with pytest.raises(errors.UserError, match='dev_fraction'):
    build.build_world(build.WorldConfig(dev_fraction=0.6, test_fraction=0.5))


def test_rewrite_replaces_world_atomically(tmp_path):
  directory = _write(tmp_path, 'w', 1)
  before = (directory / 'corpus.jsonl').read_bytes()
  build.write_world(build.build_world(build.WorldConfig(seed=2, **SMALL)), directory)
  assert (directory / 'corpus.jsonl').read_bytes() != before
  assert sorted(p.name for p in tmp_path.iterdir()) == ['w']  # no temporaries left
