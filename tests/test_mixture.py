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
