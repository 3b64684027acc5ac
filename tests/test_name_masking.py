"""Tests for name masking (agent/name_masking.py) and its use in the loop's phases."""

import concurrent.futures
import json
import random

import pytest

from restreact_jax import errors
from restreact_jax import llm as llm_lib
from restreact_jax.agent import name_masking
from restreact_jax.rest import phases

NAMES = ['Fafa Losene', 'Namar Foods', 'The Frozen Signal', 'Frozen', 'Kipa', 'Kipaba']


def test_placeholders_follow_first_appearance_and_longest_name_wins():
  m = name_masking.NameMasker(NAMES)
  text = 'The Frozen Signal was produced by Namar Foods. Frozen is a city near Kipaba, not Kipa.'
  table = m.table(text)
  assert table == {'The Frozen Signal': '@1', 'Namar Foods': '@2', 'Frozen': '@3',
                   'Kipaba': '@4', 'Kipa': '@5'}
  masked = m.mask(text, table)
  assert masked == '@1 was produced by @2. @3 is a city near @4, not @5.'
  assert m.unmask(masked, table) == text


def test_words_inside_other_words_are_not_names():
  m = name_masking.NameMasker(['Kipa'])
  assert m.mask('Kipaland and xKipa and Kipa.', {'Kipa': '@1'}) == 'Kipaland and xKipa and @1.'


def test_unknown_placeholders_stay_as_written():
  table = {'Kipa': '@1'}
  assert name_masking.NameMasker.unmask('@1 and @7 and @12', table) == 'Kipa and @7 and @12'


def test_mask_pair_uses_one_table_prompt_first():
  m = name_masking.NameMasker(NAMES)
  inputs, targets = m.mask_pair("Q: 'Who founded Namar Foods?'", "A: 'Fafa Losene founded Namar Foods'")
  assert inputs == "Q: 'Who founded @1?'"
  assert targets == "A: '@2 founded @1'"


def test_round_trip_on_random_texts():
  rng = random.Random(0)
  m = name_masking.NameMasker(NAMES)
  words = NAMES + ['the', 'was', 'in', '1921', '@', "'", '"', '.', 'link_id=3']
  for _ in range(500):
    text = ' '.join(rng.choice(words) for _ in range(rng.randint(0, 30)))
    table = m.table(text)
    assert m.unmask(m.mask(text, table), table) == text


class _Echo:
  """An LLM that answers with the last line of its prompt; records what it saw."""

  def __init__(self):
    self.seen = []

  def generate(self, requests):
    self.seen.extend(requests)
    return [[llm_lib.Sample(text=r.prompt.splitlines()[-1], tokens=(1,), logprobs=(0.0,),
                            finish_reason='stop')] for r in requests]


def test_masked_llm_masks_prompts_and_unmasks_samples():
  inner = _Echo()
  wrapped = name_masking.MaskedLLM(inner, name_masking.NameMasker(NAMES))
  prompt = '"""Docs."""\nQ: Who founded Namar Foods?\nFafa Losene founded Namar Foods'
  (samples,) = wrapped.generate([llm_lib.SamplingRequest(prompt=prompt, prefix='"""Docs."""\n')])
  assert inner.seen[0].prompt == '"""Docs."""\nQ: Who founded @1?\n@2 founded @1'
  assert inner.seen[0].prefix == '"""Docs."""\n'
  assert samples[0].text == 'Fafa Losene founded Namar Foods'


def test_masked_corpus_and_masker_from_the_world(tmp_path):
  world = tmp_path / 'world'
  world.mkdir()
  (world / 'entities.jsonl').write_text(''.join(
      json.dumps({'id': str(i), 'name': n}) + '\n' for i, n in enumerate(NAMES)))
  (world / 'corpus.jsonl').write_text(json.dumps(
      {'id': 'a/0', 'title': 'Namar Foods', 'text': 'Fafa Losene founded Namar Foods.'}) + '\n')
  out = tmp_path / 'vocab'
  out.mkdir()
  path = phases.write_masked_corpus(out, tmp_path)
  (doc,) = [json.loads(l) for l in path.open()]
  assert doc == {'id': 'a/0', 'title': '@1', 'text': '@2 founded @1.'}


def test_the_worlds_years_are_masked_like_names(tmp_path):
  world = tmp_path / 'world'
  world.mkdir()
  (world / 'entities.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in [
      {'id': 'p', 'name': 'Fafa Losene', 'facts': {'birth_year': 1958, 'born_in': 'c'}},
      {'id': 'c', 'name': 'Kipa', 'facts': {}}]))
  masker = name_masking.from_world(tmp_path)
  text = 'Fafa Losene was born in Kipa in 1958, not in 19580 or 1959.'
  table = masker.table(text)
  assert masker.mask(text, table) == '@1 was born in @2 in @3, not in 19580 or 1959.'
  assert masker.unmask('The answer is @3.', table) == 'The answer is 1958.'
  # Without years only the names are masked.
  names_only = name_masking.from_world(tmp_path, years=False)
  assert names_only.mask(text, names_only.table(text)).endswith('in @2 in 1958, not in 19580 or 1959.')
  assert phases.entity_symbols(world / 'entities.jsonl') == ['Fafa Losene', 'Kipa', '1958']


def _years_world(tmp_path):
  world = tmp_path / 'world'
  world.mkdir()
  (world / 'entities.jsonl').write_text(''.join(json.dumps(e) + '\n' for e in [
      {'id': 'a', 'name': 'Fafa Losene', 'facts': {'birth_year': 1958}},
      {'id': 'b', 'name': 'Kipa Moro', 'facts': {'birth_year': 1903}},
      {'id': 'c', 'name': 'Namar Foods', 'facts': {'founded_year': 1921}}]))
  return tmp_path


def test_ordered_years_number_names_first_then_years_earliest_first(tmp_path):
  masker = name_masking.from_world(_years_world(tmp_path), mode=name_masking.ORDERED_YEARS)
  text = ('Who was born first, Fafa Losene or Kipa Moro? Fafa Losene was born in 1958. '
          'Kipa Moro was born in 1903, before Namar Foods (1921).')
  table = masker.table(text)
  assert table == {'Fafa Losene': '@1', 'Kipa Moro': '@2', 'Namar Foods': '@3',
                   '1903': '@4', '1921': '@5', '1958': '@6'}
  masked = masker.mask(text, table)
  assert masked == ('Who was born first, @1 or @2? @1 was born in @6. '
                    '@2 was born in @4, before @3 (@5).')
  assert masker.unmask(masked, table) == text
  # Whatever order the years appear in, the earlier one gets the smaller number.
  rng = random.Random(0)
  years = ['1958', '1903', '1921']
  for _ in range(20):
    rng.shuffle(years)
    t = masker.table(' and '.join(['Kipa Moro'] + years))
    assert [t[y] for y in sorted(years)] == ['@2', '@3', '@4']
  # A training pair is masked with one table over prompt and target.
  inputs, targets = masker.mask_pair('Kipa Moro: 1958 or 1903?', 'The answer is 1903.')
  assert (inputs, targets) == ('@1: @3 or @2?', 'The answer is @2.')
  # First appearance (the default) is unchanged.
  plain = name_masking.from_world(tmp_path)
  assert plain.table(text)['1958'] == '@3'


def test_masking_modes_read_from_settings_and_flags():
  assert name_masking.as_mode(True) is True
  assert name_masking.as_mode('false') is False
  assert name_masking.as_mode("'ordered_years'") == name_masking.ORDERED_YEARS
  with pytest.raises(errors.UserError, match=r"name_masking = 'years_first'.*ordered_years"):
    name_masking.as_mode('years_first', 'name_masking')


def test_the_phases_masker_takes_the_mode(tmp_path):
  masker = phases.masker(_years_world(tmp_path), 'ordered_years')
  assert masker.table('1958 before 1921')['1921'] == '@1'
  with pytest.raises(errors.UserError, match='rest.name_masking'):
    phases.masker(tmp_path, 'yes please')


class _SteppedEcho(_Echo):
  """`_Echo` behind the stepped door: each `step` answers one queued request."""

  steppable = True

  def __init__(self, fail=False):
    super().__init__()
    self.queue, self.fail = [], fail

  def submit(self, request):
    future = concurrent.futures.Future()
    self.queue.append((request, future))
    return future

  def step(self):
    request, future = self.queue.pop(0)
    if self.fail:
      future.set_exception(RuntimeError('engine died'))
    else:
      future.set_result(self.generate([request])[0])
    return 1


def test_masked_llm_passes_the_stepped_door_through():
  masker = name_masking.NameMasker(NAMES)
  assert not name_masking.MaskedLLM(_Echo(), masker).steppable
  inner = _SteppedEcho()
  wrapped = name_masking.MaskedLLM(inner, masker)
  assert wrapped.steppable and llm_lib.can_step(wrapped)
  prompts = ['Q: Who founded Namar Foods?\nFafa Losene founded Namar Foods',
             'Q: Where?\nIn Namar Foods']
  futures = [wrapped.submit(llm_lib.SamplingRequest(prompt=p)) for p in prompts]
  assert not any(f.done() for f in futures)
  assert wrapped.step() == 1 and futures[0].done() and not futures[1].done()
  wrapped.step()
  assert [s.text for f in futures for s in f.result()] == [
      'Fafa Losene founded Namar Foods', 'In Namar Foods']
  assert [r.prompt.splitlines()[-1] for r in inner.seen] == ['@2 founded @1', 'In @1']
  # The inner future's failure reaches the caller.
  failing = name_masking.MaskedLLM(_SteppedEcho(fail=True), masker)
  future = failing.submit(llm_lib.SamplingRequest(prompt='x'))
  failing.step()
  with pytest.raises(RuntimeError, match='engine died'):
    future.result()
