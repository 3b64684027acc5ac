"""Tests for the loop's configuration, its phase runner and its pure phase helpers."""

import dataclasses
import json

import pytest

from restreact_jax import errors
from restreact_jax.models import configs
from restreact_jax.rest import experiment
from restreact_jax.rest import config as config_lib
from restreact_jax.rest import loop
from restreact_jax.rest import phases
from restreact_jax.world import build


def _config(**kw):
  model = configs.TransformerConfig(vocab_size=512, embed_dim=16, num_layers=1, num_heads=2,
                                    num_kv_heads=1, head_dim=8, mlp_dim=32, max_len=64)
  base = dict(world=build.WorldConfig(num_entities=20), models={'s': model, 'xs': model},
              policy_size='s', student_sizes=('xs',), vocab_size=256)
  base.update(kw)
  return config_lib.RestConfig(**base)


def test_config_validation_names_the_bad_setting():
  _config().validate()
  cases = [({'policy_size': 'l'}, 'policy_size'),
           ({'student_sizes': ('s',)}, 'student_sizes must not contain'),
           ({'student_sizes': ('m',)}, "'m' is not in rest.models"),
           ({'ranker': 'best'}, 'rest.ranker'),
           ({'init_from': 'scratch'}, 'rest.init_from'),
           ({'repeats': (1, 0)}, 'rest.repeats'),
           ({'gen0': 'prompted'}, 'gen0_openai_base_url'),
           ({'vocab_size': 4096}, 'vocab_size 512 < rest.vocab_size 4096'),
           ({'finetune': phases.TrainSettings(steps=0)}, 'rest.finetune'),
           ({'finetune': phases.TrainSettings(steps=5, distill_weight=0.5)},
            'only the students'),
           ({'distill': phases.TrainSettings(steps=5, distill_weight=1.5)},
            'rest.distill needs 0 <= distill_weight <= 1'),
           ({'finetune': phases.TrainSettings(steps=5, soup=0)}, 'rest.finetune needs soup >= 1'),
           ({'pilot_questions': -1}, 'rest.pilot_questions'),
           ({'snippet_chars': 5}, 'rest.snippet_chars'),
           ({'rollout_num_samples': 0}, 'rest.rollout_num_samples'),
           ({'vocab_model_type': 'word'}, 'rest.vocab_model_type'),
           ({'trajectory_filter': 'gold'}, 'rest.trajectory_filter'),
           ({'dev_eval_runs': 0}, 'rest.dev_eval_runs'),
           ({'revise_summaries': True}, 'revise_summaries needs rest.guided_rollouts'),
           ({'revise_answers': True}, 'revise_answers needs rest.guided_rollouts'),
           ({'revise_decisions': True}, 'revise_decisions needs rest.guided_rollouts'),
           ({'student_seed': phases.TrainSettings(steps=0)}, 'rest.student_seed'),
           ({'student_init': 'distilbert'}, 'rest.student_init'),
           ({'heldout_eval': True}, 'rest.heldout_eval needs rest.train_limit'),
           ({'fresh_questions': True}, 'rest.fresh_questions needs rest.train_limit'),
           ({'init_from': 'gen_0', 'gen0': 'prompted', 'gen0_openai_base_url': 'http://x'},
            "init_from = 'gen_0' needs a fine-tuned gen 0"),
           ({'student_init': 'pruned', 'models': {
               's': _config().models['s'],
               'xs': _config().models['s'].replace(embed_dim=8, head_dim=4)}},
            "student 'xs': cannot prune to the student: its embed_dim 8")]
  for kw, message in cases:
    with pytest.raises(errors.UserError, match=message):
      _config(**kw).validate()


def test_repeats_and_samples_per_generation_and_size():
  cfg = _config(repeats=(1, 4), num_samples_by_size={'xs': 16})
  assert [cfg.repeats_for(g) for g in (1, 2, 3, 7)] == [1, 4, 4, 4]
  assert cfg.agent_for('xs').num_samples == 16
  assert cfg.agent_for('s').num_samples == cfg.agent.num_samples == 4


def _write(text):
  def fn(out):
    (out / 'x.txt').write_text(text)
    return {'text': text}
  return fn


def test_runner_only_runs_the_named_phases_after_done_ones(tmp_path):
  logs = []
  exp = experiment.Experiment(tmp_path, log=logs.append)
  runner = loop.Runner(exp, log=logs.append)
  runner('a', _write('a'), output='a', config={'k': 1})
  # Only 'b': 'a' is done so its result is reused; stop once 'b' ran.
  only = loop.Runner(exp, only=['b'], log=logs.append)
  assert only('a', _write('changed'), output='a', config={'k': 1}) == {'text': 'a'}
  with pytest.raises(loop._Stop):  # pylint: disable=protected-access
    only('b', _write('b'), output='b', config={}, deps=['a'])
  assert (tmp_path / 'b' / 'x.txt').read_text() == 'b'
  assert (tmp_path / 'a' / 'x.txt').read_text() == 'a'
  # A phase before the asked one that is stale (config changed) is an error.
  stale = loop.Runner(exp, only=['b'], log=logs.append)
  with pytest.raises(errors.UserError, match="phase 'a' is stale"):
    stale('a', _write('a'), output='a', config={'k': 2})
  fresh = loop.Runner(experiment.Experiment(tmp_path / 'new', log=logs.append), only=['b'])
  with pytest.raises(errors.UserError, match="phase 'a' has not run.*restreact rest"):
    fresh('a', _write('a'), output='a')


def test_trajectories_are_read_in_key_order_whatever_the_finishing_order(tmp_path):
  rows = [{'question_id': q, 'repeat': r, 'steps': []} for q, r in
          [('q2', 0), ('q1', 1), ('q10', 0), ('q1', 0)]]
  (tmp_path / 'shard-00001-of-00002.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in rows[2:]))
  (tmp_path / 'shard-00000-of-00002.jsonl').write_text(
      ''.join(json.dumps(r) + '\n' for r in rows[:2]) + '{"question_id": "torn')
  got = [(t['question_id'], t['repeat']) for t in phases.read_trajectories(tmp_path)]
  assert got == [('q1', 0), ('q1', 1), ('q10', 0), ('q2', 0)]


def test_params_digest_sees_every_value():
  import numpy as np
  params = {'a': np.zeros((2, 3), np.float32), 'b': {'c': np.ones(4, np.float32)}}
  d = phases.params_digest(params)
  assert d == phases.params_digest({'a': np.zeros((2, 3), np.float32),
                                    'b': {'c': np.ones(4, np.float32)}})
  params['b']['c'][3] = np.nextafter(np.float32(1), np.float32(2))
  assert phases.params_digest(params) != d


def test_select_keeps_only_a_better_policy(tmp_path):
  exp = experiment.Experiment(tmp_path, log=lambda _: None)
  for name in ('gen_0/eval/s', 'gen_1/eval/s', 'gen_1/mixture', 'gen_2/eval/s',
               'gen_2/mixture'):
    exp.run(name, _write(name), output=name)
  cfg = _config(min_improvement=1.0)
  steps = loop._Steps(cfg, exp, loop.Runner(exp, log=lambda _: None), '',  # pylint: disable=protected-access
                      lambda _: None)
  old = phases.Policy('gen_0/s', 0, 's', 'gen_0/models/s')
  new = phases.Policy('gen_1/s', 1, 's', 'gen_1/models/s')
  stat = lambda m: {'mean': m, 'std': 0.0, 'n_runs': 3}  # noqa: E731
  d = steps.select(1, new, stat(50.5), old, stat(50.0))
  assert d['kept'] is False and d['policy_after'] == 'gen_0/s'  # +0.5 < margin 1.0
  d = steps.select(2, phases.Policy('gen_2/s', 2, 's', 'gen_2/models/s'), stat(52.0), old,
                   stat(50.0))
  assert d['kept'] is True and d['policy_after'] == 'gen_2/s'
  saved = json.loads((tmp_path / 'gen_2' / 'selection' / 'decision.json').read_text())
  assert saved == d
  assert exp.record('gen_2/select').result['kept'] is True
  assert dataclasses.asdict(old)['label'] == 'gen_0/s'


def test_without_dev_selection_every_generation_is_kept(tmp_path):
  exp = experiment.Experiment(tmp_path, log=lambda _: None)
  for name in ('gen_1/mixture', 'gen_1/models/s'):
    exp.run(name, _write(name), output=name)
  steps = loop._Steps(_config(select_on_dev=False), exp, loop.Runner(exp, log=lambda _: None),  # pylint: disable=protected-access
                      '', lambda _: None)
  old = phases.Policy('gen_0/s', 0, 's', 'gen_0/models/s')
  d = steps.select(1, phases.Policy('gen_1/s', 1, 's', 'gen_1/models/s'), None, old, None)
  assert d['kept'] is True and d['policy_after'] == 'gen_1/s'
  assert d['candidate_dev'] is None and 'every generation is kept' in d['reason']
  assert exp.record('gen_1/select').result['kept'] is True


def test_models_take_the_trained_vocabulary_size(tmp_path):
  logs = []
  exp = experiment.Experiment(tmp_path, log=lambda _: None)
  steps = loop._Steps(_config(), exp, loop.Runner(exp, log=lambda _: None), '',  # pylint: disable=protected-access
                      logs.append)
  steps.align_vocab(300)  # SentencePiece learned fewer pieces than the models' 512
  assert {m.vocab_size for m in steps.cfg.models.values()} == {300}
  assert steps.cfg.models['s'].embed_dim == 16  # nothing else changes
  assert any("'s': vocab_size 512 -> 300" in line for line in logs)
  logs.clear()
  steps.align_vocab(300)
  assert not logs  # already aligned: silent


def _with_gen_0(root):
  """An experiment whose world, search, seed data, vocabulary and gen 0 are done."""
  exp = experiment.Experiment(root, log=lambda _: None)
  for name in ('world', 'search', 'gen_0/seed', 'vocab', 'gen_0/models/s'):
    exp.run(name, _write(name), output=name)
  return exp


def test_training_rollouts_may_sample_differently_from_evaluation(tmp_path, monkeypatch):
  seen = {}

  def fake_rollout(out, *, agent, questions_path, guided, revise, revise_answers,
                   revise_decisions, **kwargs):
    del out, kwargs
    seen[questions_path.name] = (agent.num_samples, agent.temperature, guided, revise,
                                 revise_answers, revise_decisions)
    return {}
  monkeypatch.setattr(phases, 'rollout', fake_rollout)
  exp = _with_gen_0(tmp_path)
  cfg = _config(rollout_num_samples=16, rollout_temperature=0.9, guided_rollouts=True,
                revise_summaries=True, revise_answers=True, revise_decisions=True)
  steps = loop._Steps(cfg, exp, loop.Runner(exp, log=lambda _: None), '',  # pylint: disable=protected-access
                      lambda _: None)
  policy = phases.Policy('gen_0/s', 0, 's', 'gen_0/models/s')
  steps.rollout(1, policy)
  steps._rollout_phase('gen_0/eval_rollout/s', 'gen_0/eval_rollouts/s', policy, 'dev', 2, 0,  # pylint: disable=protected-access
                       None)
  # Evaluation rolls the policy out alone, with the agent's own settings.
  assert seen == {'train_unlabeled.jsonl': (16, 0.9, True, True, True, True),
                  'dev.jsonl': (4, 0.5, False, False, False, False)}
  # The rater's stops are part of the rollout's fingerprint.
  other = _with_gen_0(tmp_path / 'other')
  loop._Steps(dataclasses.replace(cfg, revise_decisions=False), other,  # pylint: disable=protected-access
              loop.Runner(other, log=lambda _: None), '', lambda _: None).rollout(1, policy)
  assert other.fingerprint_of('gen_1/rollout') != exp.fingerprint_of('gen_1/rollout')


def test_a_typing_rater_reaches_the_rollouts_and_the_ranking_and_their_fingerprints(
    tmp_path, monkeypatch):
  seen = []
  monkeypatch.setattr(phases, 'rollout', lambda out, *, typed, **kw: seen.append(
      ('rollout', typed)) or {})
  monkeypatch.setattr(phases, 'rank', lambda out, *, typed, **kw: seen.append(
      ('rank', typed)) or {})
  policy = phases.Policy('gen_0/s', 0, 's', 'gen_0/models/s')
  fingerprints = {}
  for typed in (False, True):
    exp = _with_gen_0(tmp_path / str(typed))
    cfg = _config(guided_rollouts=True, typed_answers=typed)
    steps = loop._Steps(cfg, exp, loop.Runner(exp, log=lambda _: None), '',  # pylint: disable=protected-access
                        lambda _: None)
    steps.rollout(1, policy)
    steps.rank(1)
    fingerprints[typed] = [exp.fingerprint_of(p) for p in ('gen_1/rollout', 'gen_1/rank')]
  assert seen == [('rollout', False), ('rank', False), ('rollout', True), ('rank', True)]
  assert all(a != b for a, b in zip(*fingerprints.values()))


class _RecordingSteps:
  """Stands in for the loop's phases: records which models are trained from what."""
  calls: list = []

  def __init__(self, cfg, *args):
    del args
    self.cfg = cfg

  def __getattr__(self, name):
    return lambda *a, **k: None

  def pretrain(self, size):
    self.calls.append(('pretrain', size))

  def prune(self, g, size, teacher):
    self.calls.append(('prune', g, size, teacher.phase))
    return phases.Policy(f'gen_{g}/pruned/{size}', g, size, f'gen_{g}/pruned/{size}')

  def seed_student(self, size):
    self.calls.append(('seed', size))
    return phases.Policy(f'gen_0/{size}', 0, size, f'gen_0/models/{size}')

  def generation_zero(self):
    return phases.Policy('gen_0/s', 0, 's', 'gen_0/models/s')

  def evaluate(self, policy, split):
    return {'mean': float(policy.generation), 'std': 0.0, 'n_runs': 1}

  def mixture(self, g):
    return {'examples': 1}

  def finetune(self, g, size, previous):
    self.calls.append((g, size, previous.phase))
    return phases.Policy(f'gen_{g}/{size}', g, size, f'gen_{g}/models/{size}')

  def select(self, g, candidate, score, policy, best):
    return {'kept': True}

  def final_test(self, policy):
    return {}


def test_without_dev_selection_nothing_is_evaluated_on_dev(tmp_path, monkeypatch):
  _RecordingSteps.calls = []
  evaluated = []
  monkeypatch.setattr(loop, '_Steps', _RecordingSteps)
  monkeypatch.setattr(_RecordingSteps, 'evaluate',
                      lambda self, policy, split: evaluated.append(split), raising=False)
  cfg = _config(generations=2, select_on_dev=False, dev_eval_students=False)
  out = loop.self_improve(cfg, experiment.Experiment(tmp_path, log=lambda _: None),
                          log=lambda _: None)
  assert evaluated == [] and out['policy'] == 'gen_2/s'


@pytest.mark.parametrize('last_only', [False, True])
def test_students_start_from_their_seed_fine_tune(tmp_path, monkeypatch, last_only):
  _RecordingSteps.calls = []
  monkeypatch.setattr(loop, '_Steps', _RecordingSteps)
  cfg = _config(generations=2, distill_last_only=last_only)
  loop.self_improve(cfg, experiment.Experiment(tmp_path, log=lambda _: None), log=lambda _: None)
  students = [c for c in _RecordingSteps.calls if c[1] == 'xs']
  if last_only:
    assert students == [('pretrain', 'xs'), ('seed', 'xs'), (2, 'xs', 'gen_0/models/xs')]
  else:
    assert students == [('pretrain', 'xs'), ('seed', 'xs'), (1, 'xs', 'gen_0/models/xs'),
                        (2, 'xs', 'gen_1/models/xs')]
  assert [c for c in _RecordingSteps.calls if c[1] == 's'] == [
      ('pretrain', 's'), (1, 's', 'gen_0/models/s'), (2, 's', 'gen_1/models/s')]


@pytest.mark.parametrize('last_only', [False, True])
def test_pruned_students_start_from_their_generations_policy(tmp_path, monkeypatch, last_only):
  _RecordingSteps.calls = []
  monkeypatch.setattr(loop, '_Steps', _RecordingSteps)
  cfg = _config(generations=2, distill_last_only=last_only, student_init='pruned')
  loop.self_improve(cfg, experiment.Experiment(tmp_path, log=lambda _: None), log=lambda _: None)
  students = [c for c in _RecordingSteps.calls if 'xs' in c]
  # No base, no seed fine-tune: each distillation starts from the policy it
  # distils, cut to the student's shape.
  want = [('prune', 2, 'xs', 'gen_2/models/s'), (2, 'xs', 'gen_2/pruned/xs')]
  if not last_only:
    want = [('prune', 1, 'xs', 'gen_1/models/s'), (1, 'xs', 'gen_1/pruned/xs')] + want
  assert students == want


@pytest.mark.slow
def test_dev_may_use_fewer_runs_than_test(tmp_path, monkeypatch):
  seen = {}

  def fake_rollout(out, *, repeats, questions_path, **kwargs):
    del out, kwargs
    seen[questions_path.name] = repeats
    return {}

  def fake_judge(out, *, runs, **kwargs):
    del out, kwargs
    seen[f'judge_{len(seen)}'] = runs
    return {'final': {'mean': 0.0, 'std': 0.0, 'n_runs': runs},
            'answer_generation': {'mean': 0.0, 'std': 0.0, 'n_runs': runs}}
  monkeypatch.setattr(phases, 'rollout', fake_rollout)
  monkeypatch.setattr(phases, 'judge_rollouts', fake_judge)
  exp = experiment.Experiment(tmp_path, log=lambda _: None)
  for name in ('world', 'search', 'vocab', 'gen_0/models/s'):
    exp.run(name, _write(name), output=name)
  cfg = _config(eval_runs=3, dev_eval_runs=1)
  steps = loop._Steps(cfg, exp, loop.Runner(exp, log=lambda _: None), '',  # pylint: disable=protected-access
                      lambda _: None)
  policy = phases.Policy('gen_0/s', 0, 's', 'gen_0/models/s')
  assert steps.evaluate(policy, 'dev')['n_runs'] == 1
  assert steps.evaluate(policy, 'test')['n_runs'] == 3
  assert seen['dev.jsonl'] == 1 and seen['test.jsonl'] == 3


def test_each_generation_starts_from_what_init_from_says():
  prev = phases.Policy('gen_1/s', 1, 's', 'gen_1/models/s')
  pruned = phases.Policy('gen_2/pruned/xs', 2, 'xs', 'gen_2/pruned/xs')
  for init_from, want in (('base', 'base/s'), ('previous', 'gen_1/models/s'),
                          ('gen_0', 'gen_0/models/s')):
    assert loop.init_phase_for(_config(init_from=init_from), 2, 's', prev) == want
  # Generation 1's previous model is gen 0 itself under 'previous'.
  gen0 = phases.Policy('gen_0/s', 0, 's', 'gen_0/models/s')
  assert loop.init_phase_for(_config(init_from='previous'), 1, 's', gen0) == 'gen_0/models/s'
  # A student cut from its generation's policy starts there whatever init_from says.
  for init_from in config_lib.INIT_FROM:
    assert loop.init_phase_for(_config(init_from=init_from), 2, 'xs', pruned) == 'gen_2/pruned/xs'
  assert loop.init_phase_for(_config(init_from='base'), 2, 'xs', None) == 'base/xs'


def test_fresh_questions_give_each_generation_its_own_window():
  same = _config(train_limit=10, generations=3)
  assert [same.questions_window(g) for g in (1, 2, 3)] == [(0, 10)] * 3
  assert same.heldout_start() == 10
  fresh = _config(train_limit=10, generations=3, fresh_questions=True)
  assert [fresh.questions_window(g) for g in (1, 2, 3)] == [(0, 10), (10, 10), (20, 10)]
  assert fresh.heldout_start() == 30
  assert _config().questions_window(2) == (0, None)


def test_a_generation_can_roll_out_more_questions_than_the_others():
  fresh = _config(train_limit=10, generations=3, fresh_questions=True,
                  train_limit_by_generation={2: 15})
  assert [fresh.questions_window(g) for g in (1, 2, 3)] == [(0, 10), (10, 15), (25, 10)]
  assert fresh.heldout_start() == 35
  same = _config(train_limit=10, generations=3, train_limit_by_generation={2: 15})
  assert [same.questions_window(g) for g in (1, 2, 3)] == [(0, 10), (0, 15), (0, 10)]
  assert same.heldout_start() == 15
  with pytest.raises(errors.UserError, match='train_limit_by_generation needs rest.train_limit'):
    _config(train_limit_by_generation={2: 15}).validate()
  with pytest.raises(errors.UserError, match='limits must be >= 1'):
    _config(train_limit=10, train_limit_by_generation={2: 0}).validate()


def test_a_generation_can_fine_tune_with_its_own_settings(tmp_path, monkeypatch):
  from tasks import rest as rest_tasks  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(rest_tasks, 'register_generation', lambda *a, **k: 'policy_task')
  monkeypatch.setattr(rest_tasks, 'register_distill', lambda *a, **k: 'student_task')
  longer = phases.TrainSettings(steps=9, learning_rate=3e-4)
  cfg = _config(generations=2, finetune=phases.TrainSettings(steps=5),
                distill=phases.TrainSettings(steps=7), finetune_by_generation={2: longer})
  cfg.validate()
  calls = {}
  steps = loop._Steps(cfg, experiment.Experiment(tmp_path, log=lambda _: None),
                      run=lambda name, fn, **kw: calls.update({name: (fn, kw)}),
                      config_text='', log=lambda _: None)
  steps.vocab_path = None
  gen1 = steps.finetune(1, 's', None)
  gen2 = steps.finetune(2, 's', gen1)
  steps.finetune(2, 'xs', gen2)
  trained = {}
  monkeypatch.setattr(phases, 'train', lambda out, **kw: trained.update({out.name: kw['settings']}))
  for name in ('gen_1/models/s', 'gen_2/models/s', 'gen_2/models/xs'):
    fn, kw = calls[name]
    fn(tmp_path / name.replace('/', '_'))
  # Gen 2's policy trains with its own settings, gen 1's with `finetune`, the
  # student with `distill`; the settings are in each phase's fingerprint.
  assert [trained[n].steps for n in ('gen_1_models_s', 'gen_2_models_s', 'gen_2_models_xs')] \
      == [5, 9, 7]
  assert trained['gen_2_models_s'] == longer
  assert calls['gen_2/models/s'][1]['config']['settings'] == longer.fingerprint_key()
  assert calls['gen_1/models/s'][1]['config']['settings'] != longer.fingerprint_key()
  with pytest.raises(errors.UserError, match=r'generations must be in 1\.\.2, got \[3\]'):
    _config(generations=2, finetune_by_generation={3: longer}).validate()
  with pytest.raises(errors.UserError, match=r'finetune_by_generation\[2\] needs steps >= 1'):
    _config(generations=2,
            finetune_by_generation={2: phases.TrainSettings(steps=0)}).validate()


def test_generations_that_need_more_questions_than_the_world_has_fail_up_front():
  # 4 generations x 150 fresh questions fit 800 - 200 pilot; x 240 do not.
  world = build.WorldConfig(num_entities=20, num_train=800)
  _config(world=world, pilot_questions=200, generations=4, train_limit=150,
          fresh_questions=True).validate()
  with pytest.raises(errors.UserError, match=r'4 generations need 960 unlabeled training '
                     r'questions, the world has 600 \(num_train 800 - pilot_questions 200\)'):
    _config(world=world, pilot_questions=200, generations=4, train_limit=240,
            fresh_questions=True).validate()
  # Every generation on the same questions needs only train_limit of them.
  _config(world=world, pilot_questions=200, generations=4, train_limit=240).validate()


def test_a_generation_window_past_the_questions_is_one_clear_error(tmp_path):
  questions = tmp_path / 'train_unlabeled.jsonl'
  questions.write_text(''.join(json.dumps({'id': f'q{i}', 'question': '?', 'answers': ['a']})
                               + '\n' for i in range(6)))
  with pytest.raises(errors.UserError, match=r'6 questions, too few for 4 from question 4 on'):
    phases.rollout(tmp_path / 'out', exp_dir=tmp_path, policy=None, models={}, vocab_path=None,
                   questions_path=questions, repeats=1, seed=0, agent=phases.AgentSettings(),
                   limit=4, first=4, progress=False)
  assert not (tmp_path / 'out').exists()


def test_heldout_questions_are_the_unlabeled_ones_after_train_limit(tmp_path):
  unlabeled = tmp_path / 'train_unlabeled.jsonl'
  unlabeled.write_text(''.join(json.dumps({'id': f'q{i}', 'question': '?'}) + '\n'
                               for i in range(5)))
  result = phases.write_heldout(tmp_path, unlabeled, 3)
  rows = [json.loads(l) for l in (tmp_path / 'questions.jsonl').read_text().splitlines()]
  assert [r['id'] for r in rows] == ['q3', 'q4'] and result['questions'] == 2
  with pytest.raises(errors.UserError, match='no unlabeled training questions after'):
    phases.write_heldout(tmp_path, unlabeled, 5)


def _finetune_gen2(tmp_path, monkeypatch, **kw):
  """Generation 2's policy ('s') and student ('xs') fine-tunes over two ranked generations.

  gen_1/ranked holds 2 decisions and 2 answers, gen_2/ranked 3 of each; the
  training itself is left out. Returns `{size: (task, deps, extra)}`.
  """
  from restreact_jax.rest import mixture  # pylint: disable=g-import-not-at-top
  for g, n in ((1, 2), (2, 3)):
    examples = [mixture.StepExample(inputs=f'"""{t}"""\nQ{g}.{i}\n', targets='x', step_type=t,
                                    question_id=f'{g}.{i}', rank_source='ranker')
                for t in ('decision', 'answer') for i in range(n)]
    mixture.write_tfrecords(examples, tmp_path / f'gen_{g}' / 'ranked')
    (tmp_path / f'gen_{g}' / 'ranked' / 'stats.json').write_text(json.dumps(
        {'per_step_type': {'decision': n, 'answer': n}, 'examples': 2 * n}))
  cfg = _config(generations=2, mixture_rates={'decision': 1.0, 'answer': 3.0}, **kw)
  steps = loop._Steps(cfg, experiment.Experiment(tmp_path, log=lambda _: None),
                      run=None, config_text='', log=lambda _: None)
  steps.vocab_path = None
  trained = {}
  monkeypatch.setattr(steps, '_train',
                      lambda name, size, task_fn, settings, init, deps, extra, teacher=None:
                      trained.update({size: (task_fn(), deps, extra)}))
  steps.finetune(2, 'xs', steps.finetune(2, 's', None))
  return trained


def _answers_in(mixture_name):
  """The question ids of the examples of a step-type mixture's answer task."""
  import seqio  # pylint: disable=g-import-not-at-top
  mix = seqio.get_mixture_or_task(mixture_name)
  # Answers weighted 3x, as `mixture_rates` asks.
  rates = {t.name.rsplit('_', 1)[-1]: mix.get_rate(t) for t in mix.tasks}
  assert rates == pytest.approx({'decision': 0.25, 'answer': 0.75})
  answer_task, = [t for t in mix.tasks if t.name.endswith('_answer')]
  return sorted(ex['inputs_pretokenized'].decode().rsplit('Q', 1)[-1].strip()
                for ex in answer_task.get_dataset(None, split='train', shuffle=False)
                .as_numpy_iterator())


@pytest.mark.parametrize('all_generations', [False, True])
@pytest.mark.parametrize('size,flag', [('s', 'policy_all_generations'),
                                       ('xs', 'distill_all_generations')])
def test_generation_reads_every_generations_ranked_data(tmp_path, monkeypatch, size, flag,
                                                         all_generations):
  """The policy ('s') or the student ('xs', weighted as its teacher) reads gen 1's data too."""
  trained = _finetune_gen2(tmp_path, monkeypatch, **{flag: all_generations})
  task, deps, extra = trained[size]
  # gen 1's answers join gen 2's only with the flag.
  assert _answers_in(task) == (
      ['1.0', '1.1', '2.0', '2.1', '2.2'] if all_generations else ['2.0', '2.1', '2.2'])
  assert ('gen_1/mixture' in deps) == all_generations and 'gen_2/mixture' in deps
  assert extra.get('all_generations', False) == all_generations
  # Each flag is its own model's: the other one reads gen 2's data only.
  other = trained['xs' if size == 's' else 's'][2]
  assert 'all_generations' not in other
  assert ('weighted_like_policy' in extra) == (size == 'xs')


@pytest.mark.parametrize('weight', [0.0, 0.5])
def test_students_distil_their_generations_policy(tmp_path, monkeypatch, weight):
  from tasks import rest as rest_tasks  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(rest_tasks, 'register_generation', lambda *a, **k: 'policy_task')
  monkeypatch.setattr(rest_tasks, 'register_distill', lambda *a, **k: 'student_task')
  cfg = _config(generations=2, distill=phases.TrainSettings(steps=5, distill_weight=weight))
  calls = {}
  steps = loop._Steps(cfg, experiment.Experiment(tmp_path, log=lambda _: None),
                      run=lambda name, fn, **kw: calls.update({name: (fn, kw)}),
                      config_text='', log=lambda _: None)
  steps.vocab_path = None
  policy = steps.finetune(2, 's', None)
  steps.finetune(2, 'xs', policy)
  _, policy_run = calls['gen_2/models/s']
  fn, student_run = calls['gen_2/models/xs']
  assert 'teacher' not in policy_run['config']
  # The KL makes the student depend on its teacher's weights, and say so.
  assert ('gen_2/models/s' in student_run['deps']) == bool(weight)
  assert student_run['config'].get('teacher') == ('gen_2/models/s' if weight else None)
  assert ('distill_weight' in student_run['config']['settings']) == bool(weight)
  trained = {}
  monkeypatch.setattr(phases, 'train', lambda out, **kw: trained.update(kw))
  fn(tmp_path / 'out')
  assert trained['task'] == 'student_task'
  teacher_model, teacher_dir = trained['teacher']
  assert teacher_model == cfg.models['s']
  assert teacher_dir == str(tmp_path / 'gen_2' / 'models' / 's' / 'checkpoints')
