"""Tests for trajectories -> step-example mixture."""

import json

import pytest

from restreact_jax import errors
from restreact_jax.rest import mixture


def _cand(text, ok=True, ppl=1.0):
  return {'text': text, 'logprobs': [-0.1], 'perplexity': ppl, 'finish_reason': 'stop',
          'parse': {'ok': ok, 'action': None, 'error': None if ok else 'syntax'}}


def _traj(qid, repeat=0, prompts=('P0', 'P1')):
  steps = []
  for i, prompt in enumerate(prompts):
    steps.append({'step_type': mixture.STEP_TYPES[i % 5], 'prompt': prompt, 'prefix_len': 0,
                  'candidates': [_cand(f'{prompt}-a'), _cand(f'{prompt}-b'), _cand('bad', ok=False)],
                  'chosen': 0, 'attempts': 1, 'parse_events': [], 'tool': None, 'timings': {}})
  return {'schema_version': 1, 'question_id': qid, 'question': 'q?', 'repeat': repeat,
          'steps': steps, 'answer_generation': 'a', 'final_answer': 'a', 'status': 'ok'}


def test_ranker_top_candidate_becomes_target():
  rankings = {('q1', 0, 0): [1, 0, 2], ('q1', 0, 1): [2, 0, 1]}
  examples, stats = mixture.build_examples([_traj('q1')], rankings)
  assert [e.targets for e in examples] == ['P0-b# [END]', 'P1-a# [END]']  # unparseable top skipped
  assert [e.inputs for e in examples] == ['P0', 'P1']
  assert stats.per_step_type['decision'] == 1 and stats.per_step_type['summarize'] == 1
  assert stats.unranked_steps == 0


def test_unranked_falls_back_to_chosen_and_dedups():
  examples, stats = mixture.build_examples([_traj('q1'), _traj('q1', repeat=1)], {})
  assert [e.targets for e in examples] == ['P0-a# [END]', 'P1-a# [END]']
  assert stats.duplicates == 2 and stats.unranked_steps == 4 and stats.examples == 2
  assert all(e.rank_source == 'chosen' for e in examples)


def test_only_acceptable_targets_skip_rejected_candidates_and_steps():
  rankings = {('q1', 0, 0): [1, 0, 2], ('q1', 0, 1): [0, 1, 2]}
  acceptable = {('q1', 0, 0): [True, False, False], ('q1', 0, 1): [False, False, True]}
  examples, stats = mixture.build_examples([_traj('q1')], rankings, acceptable=acceptable)
  # Step 0: the top pick is rejected, the next accepted one is the target;
  # step 1: the only accepted candidate does not parse, so the step is left out.
  assert [e.targets for e in examples] == ['P0-a# [END]']
  assert stats.unacceptable == 1 and stats.examples == 1
  # Unranked steps have no flags and are left out as well.
  examples, stats = mixture.build_examples([_traj('q2')], {}, acceptable={})
  assert not examples and stats.unacceptable == 2


def test_length_filter_counts():
  examples, stats = mixture.build_examples(
      [_traj('q1', prompts=('short', 'a much longer prompt'))], {}, max_input_length=10)
  assert [e.inputs for e in examples] == ['short'] and stats.too_long == 1


def test_build_mixture_writes_tfrecords(tmp_path):
  shard = tmp_path / 'shard-00000-of-00001.jsonl'
  shard.write_text(json.dumps(_traj('q1')) + '\n' + json.dumps(_traj('q2', prompts=('X',)))
                   + '\n{"question_id": "torn')
  ranks = tmp_path / 'rankings.jsonl'
  ranks.write_text(json.dumps({'question_id': 'q1', 'repeat': 0, 'step_index': 0,
                               'order': [1, 0, 2]}) + '\n')
  stats = mixture.build_mixture(str(tmp_path / 'shard-*.jsonl'), str(ranks), tmp_path / 'out')
  assert stats.trajectories == 2 and stats.examples == 3
  import tensorflow as tf
  records = list(tf.data.TFRecordDataset(str(tmp_path / 'out' / 'decision.tfrecord')))
  parsed = [tf.train.Example.FromString(r.numpy()) for r in records]
  targets = sorted(p.features.feature['targets'].bytes_list.value[0].decode() for p in parsed)
  assert targets == ['P0-b# [END]', 'X-a# [END]']
  assert json.loads((tmp_path / 'out' / 'stats.json').read_text())['examples'] == 3


def test_bad_inputs(tmp_path):
  with pytest.raises(errors.UserError, match='no trajectory shards'):
    mixture.build_mixture(str(tmp_path / 'none-*.jsonl'), None, tmp_path / 'out')
  bad = tmp_path / 's.jsonl'
  bad.write_text('{"a": 1}\nnot json\n{"b": 2}\n')
  with pytest.raises(errors.UserError, match=r's.jsonl:2: not valid JSON'):
    list(mixture.read_jsonl([bad]))


def test_trajectory_filter_drops_whole_trajectories():
  right, wrong = _traj('q1'), _traj('q2', prompts=('Q0', 'Q1'))
  right['final_answer'], wrong['final_answer'] = 'Paris', 'Rome'
  examples, stats = mixture.build_examples(
      [right, wrong], {}, keep=lambda t: t['final_answer'] == 'Paris', filter_name='oracle')
  assert {e.question_id for e in examples} == {'q1'}
  assert stats.trajectories == 2 and stats.filtered_trajectories == 1
  assert stats.trajectory_filter == 'oracle'


def test_oracle_trajectory_filter_in_the_phase(tmp_path):
  from restreact_jax.rest import phases  # pylint: disable=g-import-not-at-top
  right, wrong = _traj('q1'), _traj('q2', prompts=('Q0', 'Q1'))
  right['final_answer'] = 'It was Lake Miro [link_id=1]. The answer is Lake Miro.'
  wrong['final_answer'] = 'The answer is Lake Seno.'
  traj_dir, rank_dir = tmp_path / 'trajectories', tmp_path / 'rankings'
  traj_dir.mkdir()
  rank_dir.mkdir()
  (traj_dir / 'shard-00000-of-00001.jsonl').write_text(
      json.dumps(right) + '\n' + json.dumps(wrong) + '\n')
  # The ranker preferred candidate b, and only b was acceptable: the oracle
  # filter ignores both and trains on the candidates the trajectory took.
  (rank_dir / 'rankings.jsonl').write_text(''.join(
      json.dumps({'question_id': q, 'repeat': 0, 'step_index': i, 'order': [1, 0, 2],
                  'acceptable': [False, True, False]}) + '\n'
      for q in ('q1', 'q2') for i in (0, 1)))
  questions = tmp_path / 'train.jsonl'
  questions.write_text(json.dumps({'id': 'q1', 'answers': ['Lake Miro']}) + '\n' +
                       json.dumps({'id': 'q2', 'answers': ['Lake Tavo']}) + '\n')
  out = tmp_path / 'out'
  out.mkdir()
  stats = phases.build_mixture(out, trajectories_dir=traj_dir, rankings_dir=rank_dir,
                               vocab_path=None, max_input_length=None, max_target_length=None,
                               only_acceptable=True, trajectory_filter='oracle',
                               questions_path=questions)
  assert stats['filtered_trajectories'] == 1 and stats['trajectory_filter'] == 'oracle'
  assert stats['examples'] == 2
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  targets = sorted(tf.train.Example.FromString(r.numpy()).features.feature['targets']
                   .bytes_list.value[0].decode()
                   for f in out.glob('*.tfrecord') for r in tf.data.TFRecordDataset(str(f)))
  assert targets == ['P0-a# [END]', 'P1-a# [END]']
  # Without labels for a question, one clear error.
  questions.write_text(json.dumps({'id': 'q1', 'answers': ['Lake Miro']}) + '\n')
  with pytest.raises(errors.UserError, match="no gold answers for question 'q2'"):
    phases.build_mixture(out, trajectories_dir=traj_dir, rankings_dir=rank_dir,
                         vocab_path=None, max_input_length=None, max_target_length=None,
                         trajectory_filter='oracle', questions_path=questions)
  with pytest.raises(errors.UserError, match='trajectory_filter'):
    phases.build_mixture(out, trajectories_dir=traj_dir, rankings_dir=rank_dir,
                         vocab_path=None, max_input_length=None, max_target_length=None,
                         trajectory_filter='gold', questions_path=questions)
