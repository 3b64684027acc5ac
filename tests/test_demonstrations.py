"""Tests for the scripted pilot demonstrations (agent/demonstrations.py)."""

import json

import pytest

from restreact_jax.agent import calculator
from restreact_jax.agent import demonstrations as demos_lib
from restreact_jax.agent import parsing
from restreact_jax.agent import prompts
from restreact_jax.evaluation import matcher
from restreact_jax.rest import phases
from restreact_jax.search import bm25
from restreact_jax.search.types import ResultItem
from restreact_jax.world import build


@pytest.fixture(scope='module')
def world(tmp_path_factory):
  root = tmp_path_factory.mktemp('world')
  directory = build.write_world(build.build_world(build.WorldConfig(
      seed=5, num_entities=160, num_train=60, num_dev=10, num_test=10)), root / 'world')
  bm25.build_index(directory / 'corpus.jsonl', root / 'search' / 'bm25')
  questions = [json.loads(l) for l in (directory / 'questions' / 'train.jsonl').open()]
  return root, questions, bm25.BM25Search(root / 'search' / 'bm25')


def test_demonstrations_replay_and_state_only_what_the_hits_show(world):
  _, questions, tool = world
  demos, skipped = demos_lib.demonstrate_all(questions, tool)
  assert len(demos) + len(skipped) == len(questions)
  assert len(demos) >= 0.8 * len(questions)
  by_id = {q['id']: q for q in questions}
  for demo in demos:
    q = by_id[demo.name.split(':', 1)[1]]
    shown = {}
    for search in demo.searches:
      for r in search['results']:
        shown[r['link_id']] = r['snippet']
      summary = search['summary']
      (chosen,) = summary['selected_link_ids']
      # Every sentence of the summary is a sentence of the chosen snippet.
      text = summary['grounded_summarization'].replace(f' [link_id={chosen}]', '')
      for sentence in text.split('. '):
        assert sentence.rstrip('.') in shown[chosen]
    # The answer's conclusion is the gold answer, and only that.
    assert matcher.matches(demo.answer['answer'], q['answers'])
    steps = prompts.exemplar_steps(demo, 5)
    assert len(steps['decision']) == len(demo.searches) + 1
    for step_type, pairs in steps.items():
      for _, target in pairs:
        assert parsing.parse_step(step_type, target).ok, (step_type, target)
    # The first prompt shows the budget given to the replay.
    assert 'REMAINING_SEARCHES: int = 5' in steps['decision'][0][0]


def test_with_the_calculator_an_arithmetic_question_calculates_its_answer(world):
  _, questions, tool = world
  tools = ('search', 'calculator')
  arithmetic = [q for q in questions if q['qtype'] == 'arithmetic']
  assert arithmetic
  calculating = 0
  for q in questions:
    plain = demos_lib.demonstrate(q, tool)
    demo = demos_lib.demonstrate(q, tool, calculate=True)
    assert not (plain and plain.uses_calculator)
    if q['qtype'] != 'arithmetic':
      assert demo == plain  # only arithmetic questions change
      continue
    if demo is None:
      continue
    calculating += 1
    *searches, calculation = demo.searches
    assert searches == list(plain.searches)
    # Later year minus birth year, each as a summary stated it: the gold answer.
    assert calculator.calculate(calculation['calculate']) == q['answers'][0]
    later, birth = calculation['calculate'].split(' - ')
    summaries = ' '.join(s['summary']['grounded_summarization'] for s in searches)
    assert later in summaries and birth in summaries
    assert demo.answer['answer'].endswith(f'The answer is {q["answers"][0]}.')
    steps = prompts.exemplar_steps(demo, 5)
    # Two searches, the calculation, Terminate; every target parses with the tool.
    assert [('Calculate(' in t, 'Terminate(' in t) for _, t in steps['decision']][-2:] == [
        (True, False), (False, True)]
    for step_type, pairs in steps.items():
      for _, target in pairs:
        assert parsing.parse_step(step_type, target, tools=tools).ok, (step_type, target)
    # The answer step shows the calculation with its result.
    (state, _), = steps['answer']
    assert f"result='{q['answers'][0]}'" in state
  assert calculating >= len(arithmetic) // 2


def test_a_fact_missing_from_the_hits_skips_the_question(world):
  _, questions, _ = world

  class Blind:
    def search(self, queries, k=3):
      return [[ResultItem(link_id=1, link_text='Nothing', snippet='Nothing here.')] for _ in queries]

  assert demos_lib.demonstrate(questions[0], Blind()) is None
  demos, skipped = demos_lib.demonstrate_all(questions[:3], Blind())
  assert not demos and len(skipped) == 3


def test_json_round_trip(world):
  _, questions, tool = world
  demo = demos_lib.demonstrate(questions[0], tool)
  again = demos_lib.from_json(json.loads(json.dumps(demos_lib.to_json(demo))))
  assert prompts.exemplar_steps(again) == prompts.exemplar_steps(demo)


def test_seed_phase_sets_the_pilot_apart(world, tmp_path):
  root, questions, _ = world
  out = tmp_path / 'seed'
  out.mkdir()
  result = phases.write_seed(out, 'world', exp_dir=root, pilot_questions=20, max_searches=4)
  unlabeled = [json.loads(l) for l in (out / 'train_unlabeled.jsonl').open()]
  pilot = [json.loads(l) for l in (out / 'pilot.jsonl').open()]
  assert [q['id'] for q in unlabeled] == [q['id'] for q in questions[:-20]]
  pilot_ids = {p['name'].split(':', 1)[1] for p in pilot}
  assert pilot_ids <= {q['id'] for q in questions[-20:]}
  assert len(pilot) == result['pilot_demonstrations'] == 20 - len(result['pilot_skipped'])
  seed = [json.loads(l) for l in (out / 'seed.jsonl').open()]
  assert result['examples'] == len(seed)
  assert {r['question_id'] for r in seed} >= {f'pilot:{i}' for i in pilot_ids}
  assert all('REMAINING_SEARCHES: int = 4' in r['inputs'] for r in seed
             if r['step_type'] == 'decision' and 'PAST_ACTIONS: List[Action] = []' in r['inputs'])


def test_seed_phase_rejects_a_pilot_as_large_as_train(world, tmp_path):
  root, questions, _ = world
  with pytest.raises(Exception, match='pilot_questions'):
    phases.write_seed(tmp_path, 'world', exp_dir=root, pilot_questions=len(questions))


def test_entity_symbols_are_single_pieces(world, tmp_path):
  from restreact_jax import vocab as vocab_lib
  root, questions, _ = world
  symbols = phases.entity_symbols(root / 'world' / 'entities.jsonl')
  result = phases.train_vocabulary(tmp_path, [root / 'world' / 'corpus.jsonl'], 1536, symbols,
                                   model_type='bpe')
  assert result['entity_symbols'] == len(symbols)
  vocab = vocab_lib.load_vocabulary(tmp_path / 'spm.model')
  for name in symbols[:50]:
    assert len(vocab.encode(name)) == 1, name
    assert vocab.decode(vocab.encode(f"query='{name} born'")) == f"query='{name} born'"
  with pytest.raises(Exception, match='vocab_size'):
    phases.train_vocabulary(tmp_path, [root / 'world' / 'corpus.jsonl'], len(symbols), symbols)
