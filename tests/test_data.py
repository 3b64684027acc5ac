"""Tests for seqio tasks and the sharded, checkpointable batch stream."""

import json

import numpy as np
import pytest
import seqio

import tasks  # noqa: F401  (registers restreact_smoke)
from restreact_jax import data as data_lib
from restreact_jax import errors
from restreact_jax import partitioning
from tasks import common
from tasks import smoke

SMOKE = data_lib.DataConfig('restreact_smoke', {'inputs': 48, 'targets': 16}, 8, seed=7)


def _equal(a, b):
  return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_deterministic_and_skip_resumes():
  first = data_lib.numpy_batches(SMOKE, 5)
  again = data_lib.numpy_batches(SMOKE, 5)
  assert all(_equal(a, b) for a, b in zip(first, again))
  other_seed = data_lib.numpy_batches(SMOKE.__class__(**{**SMOKE.__dict__, 'seed': 8}), 1)
  assert not _equal(first[0], other_seed[0])
  # Restarting at position 3 sees exactly batches 3 and 4.
  resumed = data_lib.numpy_batches(SMOKE, 2, position=3)
  assert _equal(resumed[0], first[3]) and _equal(resumed[1], first[4])


def test_loss_weights_cover_exactly_the_targets():
  batch = data_lib.numpy_batches(SMOKE, 1)[0]
  vocab = seqio.ByteVocabulary()
  records = {r['inputs']: r['targets'] for r in smoke.examples('train')}
  for row in range(batch['decoder_target_tokens'].shape[0]):
    tokens = batch['decoder_target_tokens'][row]
    weights = batch['decoder_loss_weights'][row].astype(bool)
    prompt = vocab.decode([int(t) for t in tokens[~weights] if t > 0])
    target = [int(t) for t in tokens[weights]]
    assert target[-1] == 1  # EOS is trained: the model learns to stop
    assert vocab.decode(target[:-1]) == records[prompt]
    # Inputs are the targets shifted right behind a 0 (BOS).
    assert batch['decoder_input_tokens'][row][0] == 0
    np.testing.assert_array_equal(batch['decoder_input_tokens'][row][1:], tokens[:-1])


def test_global_batches_are_sharded_over_data():
  mesh = partitioning.make_mesh((2, 4))
  it = data_lib.BatchIterator(SMOKE, mesh)
  batch = next(it)
  assert it.position == 1
  assert batch['decoder_input_tokens'].shape == (8, 64)
  assert batch['decoder_input_tokens'].sharding.spec[0] == 'data'
  expected = data_lib.numpy_batches(SMOKE, 2)
  assert _equal({k: np.asarray(v) for k, v in batch.items()}, expected[0])
  resumed = data_lib.BatchIterator(SMOKE, mesh, position=1)
  assert _equal({k: np.asarray(v) for k, v in next(resumed).items()}, expected[1])


def test_corpus_task_chunks_long_pages_and_packs(tmp_path):
  corpus = tmp_path / 'corpus.jsonl'
  docs = [{'id': 'a', 'title': 'Orlen', 'text': 'x' * 50},
          {'id': 'b', 'title': 'Vey', 'text': 'short'}]
  corpus.write_text(''.join(json.dumps(d) + '\n' for d in docs))
  common.register_corpus_task('test_corpus', corpus, None)
  config = data_lib.DataConfig('test_corpus', {'targets': 21}, 1, shuffle=False, num_epochs=1)
  rows = data_lib.numpy_batches(config)
  weights = [int(r['decoder_loss_weights'].sum()) for r in rows]
  # 'Orlen\n' + 50 x + EOS = 57 tokens -> rows of 21, 21, 15; 'Vey\nshort' + EOS = 10.
  assert weights == [21, 21, 15, 10]
  ends = [int(r['decoder_target_tokens'][0][w - 1]) for r, w in zip(rows, weights)]
  assert ends[2] == ends[3] == 1 and ends[0] != 1  # EOS ends a page, not a chunk
  text = seqio.ByteVocabulary().decode([int(t) for t in rows[0]['decoder_target_tokens'][0]])
  assert text.startswith('Orlen\nxxx')
  packed = data_lib.numpy_batches(data_lib.DataConfig(
      'test_corpus', {'targets': 40}, 2, shuffle=False, num_epochs=1, pack=True))
  assert {'decoder_segment_ids', 'decoder_positions'} <= packed[0].keys()
  assert packed[0]['decoder_segment_ids'].max() >= 2  # chunks of 40, 17 + 10 share rows


def test_text_to_text_task_from_tfrecord(tmp_path):
  n = common.write_examples(tmp_path / 'a.tfrecord',
                            [{'inputs': 'ORIGINAL_QUESTION = ', 'targets': "'x'  # [END]"}] * 3)
  assert n == 3
  common.register_text_to_text_task('test_t2t', [str(tmp_path / '*.tfrecord')], None)
  config = data_lib.DataConfig('test_t2t', {'inputs': 24, 'targets': 16}, 3, shuffle=False,
                               num_epochs=1)
  (batch,) = data_lib.numpy_batches(config)
  assert batch['decoder_loss_weights'].sum(axis=1).tolist() == [13, 13, 13]  # 12 bytes + EOS
  common.register_mixture('test_mix', ['test_t2t', 'restreact_smoke'])
  mixed = data_lib.numpy_batches(data_lib.DataConfig('test_mix', {'inputs': 48, 'targets': 16},
                                                     4), 2)
  assert mixed[0]['decoder_input_tokens'].shape == (4, 64)


def test_bad_input_is_user_error(tmp_path):
  with pytest.raises(errors.UserError, match="Did you mean: restreact_smoke"):
    data_lib.numpy_batches(data_lib.DataConfig('restreact_smok', {'targets': 8}, 1), 1)
  with pytest.raises(errors.UserError, match='needs lengths for inputs'):
    data_lib.numpy_batches(data_lib.DataConfig('restreact_smoke', {'targets': 8}, 1), 1)
  with pytest.raises(errors.UserError, match='corpus file not found'):
    common.register_corpus_task('x', tmp_path / 'none.jsonl', None)
  bad = tmp_path / 'bad.jsonl'
  bad.write_text('{"id": 1}\n')
  with pytest.raises(errors.UserError, match='bad.jsonl:1'):
    common.register_corpus_task('x', bad, None)
  with pytest.raises(errors.UserError, match='no files match'):
    common.register_text_to_text_task('x', [str(tmp_path / 'none-*.tfrecord')], None)
