"""Tests for the loop's SeqIO tasks (tasks/rest.py) over a small constructed EXP_DIR."""

import json

import numpy as np
import pytest
import seqio

from restreact_jax import errors
from restreact_jax.agent import parsing
from restreact_jax.agent import prompts
from restreact_jax.llm import END_MARKER
from restreact_jax.rest import mixture
from tasks import rest as rest_tasks

LENGTHS = {'inputs': 2048, 'targets': 512}


def _examples(name, split='train'):
  ds = seqio.get_mixture_or_task(name).get_dataset(
      LENGTHS, split=split, shuffle=False, num_epochs=1)
  return list(ds.as_numpy_iterator())


def _decode(ids):
  return seqio.ByteVocabulary().decode([int(i) for i in ids if i > 1])


def _ranked_exp(tmp_path, counts, generation=1):
  """EXP_DIR/gen_{g}/ranked with `counts[step_type]` distinct examples per type."""
  examples = []
  for step_type, n in counts.items():
    for i in range(n):
      examples.append(mixture.StepExample(
          inputs=f'"""{step_type}"""\nQ{i}\n', targets=f'ACTION_SELECTED = {i}  {END_MARKER}',
          step_type=step_type, question_id=f'g{generation}q{i}', rank_source='ranker'))
  out = tmp_path / f'gen_{generation}' / 'ranked'
  mixture.write_tfrecords(examples, out)
  stats = {'per_step_type': {t: counts.get(t, 0) for t in rest_tasks.STEP_TYPES},
           'examples': len(examples)}
  (out / 'stats.json').write_text(json.dumps(stats))
  return tmp_path


def test_seed_examples_are_the_fine_tuned_prompts_with_parseable_targets():
  records = rest_tasks.seed_examples('world')
  trajectories = prompts.load_exemplar_set('world')
  assert {r['step_type'] for r in records} == set(rest_tasks.STEP_TYPES)
  # Every exemplar has >= one step of each type; decisions = searches + 1.
  decisions = [r for r in records if r['step_type'] == 'decision']
  assert len(decisions) == sum(len(t.searches) + 1 for t in trajectories)
  compact = prompts.Prompter(None, 0)
  for r in records:
    assert r['inputs'].startswith(compact.preambles[r['step_type']])
    assert prompts.detect_step_type(r['inputs']) == r['step_type']
    assert r['targets'].endswith('  ' + END_MARKER)
    body = r['targets'][:-len(END_MARKER)]
    assert parsing.parse_step(r['step_type'], body).ok, r['targets']
  # The first decision prompt of the first exemplar is what the agent shows.
  first = trajectories[0]
  state = prompts.PromptState(question=first.question, remaining_searches=10)
  assert decisions[0]['inputs'] == compact.render('decision', state)[0]


def test_seed_task_reads_what_write_seed_wrote(tmp_path):
  summary = rest_tasks.write_seed(tmp_path / 'gen_0' / 'seed')
  name = rest_tasks.register_seed(tmp_path, None)
  assert name == 'restreact_gen0_seed'
  got = _examples(name)
  assert len(got) == summary['examples'] == sum(summary['per_step_type'].values())
  records = rest_tasks.seed_examples()
  assert _decode(got[0]['inputs']) == records[0]['inputs']
  assert _decode(got[0]['targets']) == records[0]['targets']
  assert got[0]['targets'][-1] == 1  # EOS after the target, none after the prompt
  assert got[0]['inputs'][-1] != 1


def test_generation_mixture_rates_follow_example_counts(tmp_path):
  exp = _ranked_exp(tmp_path, {'decision': 6, 'summarize': 3, 'answer': 1})
  name = rest_tasks.register_generation(exp, 1, None)
  assert name == 'restreact_gen1_mixture'
  mix = seqio.get_mixture_or_task(name)
  rates = {t.name: mix.get_rate(t) for t in mix.tasks}
  # Normalised to sum 1, in proportion to the example counts 6 : 3 : 1.
  assert rates == pytest.approx({'restreact_gen1_decision': 0.6,
                                 'restreact_gen1_summarize': 0.3, 'restreact_gen1_answer': 0.1})
  assert 'restreact_gen1_relevance' not in seqio.TaskRegistry.names()
  decision = _examples('restreact_gen1_decision')
  assert sorted(_decode(e['targets']) for e in decision) == sorted(
      f'ACTION_SELECTED = {i}  {END_MARKER}' for i in range(6))
  assert all(_decode(e['inputs']).startswith('"""decision"""') for e in decision)


def test_generation_mixture_explicit_rates_and_seed_share(tmp_path):
  exp = _ranked_exp(tmp_path, {'decision': 4, 'answer': 2})
  # Per-example weights: 4 x 1.0 : 2 x 3.0.
  rest_tasks.register_generation(exp, 1, None, rates={'decision': 1.0, 'answer': 3.0})
  mix = seqio.get_mixture_or_task('restreact_gen1_mixture')
  assert {t.name: mix.get_rate(t) for t in mix.tasks} == pytest.approx({
      'restreact_gen1_decision': 0.4, 'restreact_gen1_answer': 0.6})
  # Weight 0 (or a missing type) leaves a type out; equal weights follow the counts.
  rest_tasks.register_generation(exp, 1, None, rates={'decision': 1.0, 'answer': 0.0})
  mix = seqio.get_mixture_or_task('restreact_gen1_mixture')
  assert [t.name for t in mix.tasks] == ['restreact_gen1_decision']
  rest_tasks.write_seed(tmp_path / 'gen_0' / 'seed')
  rest_tasks.register_generation(exp, 1, None, seed_fraction=0.25)
  mix = seqio.get_mixture_or_task('restreact_gen1_mixture')
  rates = {t.name: mix.get_rate(t) for t in mix.tasks}
  assert rates['restreact_gen0_seed'] == pytest.approx(0.25)
  # The ranked data share the other 0.75 in proportion to 4 : 2.
  assert rates['restreact_gen1_decision'] == pytest.approx(0.5)
  assert rates['restreact_gen1_answer'] == pytest.approx(0.25)
  with pytest.raises(errors.UserError, match='unknown step types'):
    rest_tasks.register_generation(exp, 1, None, rates={'decide': 1.0})


def test_empty_generation_is_an_error_unless_seed_is_mixed_in(tmp_path):
  exp = _ranked_exp(tmp_path, {})
  with pytest.raises(errors.UserError, match='no examples to train on'):
    rest_tasks.register_generation(exp, 1, None)
  with pytest.raises(errors.UserError, match='no ranked examples'):
    rest_tasks.register_distill(exp, 1, None)
  rest_tasks.write_seed(tmp_path / 'gen_0' / 'seed')
  name = rest_tasks.register_generation(exp, 1, None, seed_fraction=0.5)
  mix = seqio.get_mixture_or_task(name)
  assert [t.name for t in mix.tasks] == ['restreact_gen0_seed']
  with pytest.raises(errors.UserError, match='no mixture stats'):
    rest_tasks.register_generation(tmp_path, 7, None)


def test_distill_task_holds_every_ranked_example(tmp_path):
  exp = _ranked_exp(tmp_path, {'decision': 3, 'relevance': 2, 'grounding': 1})
  name = rest_tasks.register_distill(exp, 1, None)
  assert name == 'restreact_gen1_distill'
  got = _examples(name)
  assert len(got) == 6
  types = sorted(_decode(e['inputs']).split('"""')[1] for e in got)
  assert types == ['decision'] * 3 + ['grounding'] + ['relevance'] * 2


def test_distill_task_weighs_step_types_like_the_policy_mixture(tmp_path):
  exp = _ranked_exp(tmp_path, {'decision': 4, 'answer': 2, 'grounding': 1})
  weights = {'decision': 1.0, 'answer': 3.0}
  rest_tasks.register_generation(exp, 1, None, rates=weights)
  policy = seqio.get_mixture_or_task('restreact_gen1_mixture')
  name = rest_tasks.register_distill(exp, 1, None, rates=weights)
  student = seqio.get_mixture_or_task(name)
  got = {t.name.rsplit('_', 1)[-1]: student.get_rate(t) for t in student.tasks}
  want = {t.name.rsplit('_', 1)[-1]: policy.get_rate(t) for t in policy.tasks}
  # Answers weighted 3x: 4 decisions : 2 x 3 answers; grounding left out.
  assert got == pytest.approx(want) == {'decision': 0.4, 'answer': 0.6}
  assert len(_examples(f'{name}_answer')) == 2
  # With the seed mixed in, the ranked types share the rest in the same ratio.
  rest_tasks.write_seed(tmp_path / 'gen_0' / 'seed')
  name = rest_tasks.register_distill(exp, 1, None, seed_fraction=0.5, rates=weights)
  rates = {t.name: seqio.get_mixture_or_task(name).get_rate(t)
           for t in seqio.get_mixture_or_task(name).tasks}
  assert rates == pytest.approx({'restreact_gen1_distill_decision': 0.2,
                                 'restreact_gen1_distill_answer': 0.3,
                                 'restreact_gen0_seed': 0.5})
  # One weighted type and no seed is that type's task itself.
  assert rest_tasks.register_distill(exp, 1, None, rates={'answer': 1.0}) == (
      'restreact_gen1_distill_answer')
  with pytest.raises(errors.UserError, match='no ranked examples'):
    rest_tasks.register_distill(exp, 1, None, rates={'summarize': 1.0})
  with pytest.raises(errors.UserError, match='extra_files'):
    rest_tasks.register_distill(exp, 1, None, extra_files=['x.tfrecord'], rates=weights)


def test_distill_task_reads_every_generation_asked_for(tmp_path):
  exp = _ranked_exp(tmp_path, {'decision': 2, 'answer': 1})
  _ranked_exp(tmp_path, {'decision': 3, 'grounding': 2}, generation=2)
  # The last generation's data only, by default.
  assert len(_examples(rest_tasks.register_distill(exp, 2, None))) == 5
  # Every generation's ranked examples, as one task ...
  name = rest_tasks.register_distill(exp, 2, None, generations=(1, 2))
  assert name == 'restreact_gen2_distill'
  assert len(_examples(name)) == 8
  # ... or weighted per step type on the summed counts: 5 decisions, 1 answer x 2.
  name = rest_tasks.register_distill(exp, 2, None, generations=(1, 2),
                                     rates={'decision': 1.0, 'answer': 2.0})
  mix = seqio.get_mixture_or_task(name)
  assert {t.name: mix.get_rate(t) for t in mix.tasks} == pytest.approx(
      {'restreact_gen2_distill_decision': 5 / 7, 'restreact_gen2_distill_answer': 2 / 7})
  assert len(_examples('restreact_gen2_distill_decision')) == 5
  with pytest.raises(errors.UserError, match='no mixture stats'):
    rest_tasks.register_distill(exp, 3, None, generations=(1, 2, 3))


def test_benchmark_tasks_and_metric():
  names = rest_tasks.register_benchmarks(None)
  assert names == ['restreact_bamboogle', 'restreact_bamtwoogle']
  bamboogle = seqio.get_mixture_or_task('restreact_bamboogle')
  assert bamboogle.splits == ('validation',)
  rows = _examples('restreact_bamboogle', 'validation')
  assert len(rows) == 125
  assert _decode(rows[0]['inputs']).startswith('Who was president of the United States')
  assert len(_examples('restreact_bamtwoogle', 'test')) == 100
  metric = rest_tasks.accuracy_metric(['James Madison', '1999'],
                                      ['It was James Madison.', 'In 2001.'])
  assert metric == {'accuracy': 50.0}
  assert np.isclose(rest_tasks.accuracy_metric([], [])['accuracy'], 0.0)


def test_seed_floor_keeps_every_step_type_at_its_seed_share(tmp_path):
  # The rater accepted many decisions and a single answer step.
  exp = _ranked_exp(tmp_path, {'decision': 9, 'answer': 1})
  rest_tasks.write_seed(tmp_path / 'gen_0' / 'seed')
  seed = rest_tasks.seed_counts(exp)
  share = {t: n / sum(seed.values()) for t, n in seed.items()}
  assert all(n > 0 for n in seed.values())
  name = rest_tasks.register_generation(exp, 1, None, seed_fraction=0.3, seed_floor=True)
  mix = seqio.get_mixture_or_task(name)
  rates = {t.name: mix.get_rate(t) for t in mix.tasks}
  total = sum(rates.values())
  own = {'decision': 0.7 * 0.9, 'answer': 0.7 * 0.1}
  for step_type, s in share.items():
    seed_rate = rates[f'restreact_gen0_seed_{step_type}']
    assert seed_rate == pytest.approx(max(0.3 * s, s - own.get(step_type, 0.0)))
    # Own and seed data together reach the type's seed share before normalising.
    assert seed_rate + own.get(step_type, 0.0) >= s - 1e-9
  # The answer step, nearly absent from the own data, is topped up past 0.3 x
  # its seed share; decisions, plentiful, keep the plain 0.3 x share.
  assert rates['restreact_gen0_seed_answer'] > 0.3 * share['answer'] + 1e-6
  assert rates['restreact_gen0_seed_decision'] == pytest.approx(0.3 * share['decision'])
  assert total > 1.0
  # Each per-type seed task holds exactly that type's seed examples.
  got = _examples('restreact_gen0_seed_answer')
  assert len(got) == seed['answer']
  assert {prompts.detect_step_type(_decode(e['inputs'])) for e in got} == {'answer'}
  # The student's distill task mixes the seed the same way.
  name = rest_tasks.register_distill(exp, 1, None, seed_fraction=0.3, seed_floor=True)
  assert 'restreact_gen0_seed_answer' in [t.name for t in seqio.get_mixture_or_task(name).tasks]
