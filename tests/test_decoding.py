"""Tests of the model-agnostic sampler with stub logits (no model)."""

import functools

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import seqio

from restreact_jax import decoding
from restreact_jax import errors
from restreact_jax import llm

VOCAB = seqio.ByteVocabulary()
V = VOCAB.vocab_size
MAX_LEN = 64


@flax.struct.dataclass
class StubCache:
  lengths: jax.Array


def stub_apply(logits_PxV, tokens_BxL, cache, input_lengths_B):
  """Logits depend only on the absolute position of each input token."""
  pos_BxL = cache.lengths[:, None] + jnp.arange(tokens_BxL.shape[1])[None, :]
  logits_BxLxV = logits_PxV[jnp.minimum(pos_BxL, logits_PxV.shape[0] - 1)]
  return logits_BxLxV, cache.replace(lengths=cache.lengths + input_lengths_B)


def stub_cache(batch, max_len):
  del max_len
  return StubCache(lengths=jnp.zeros((batch,), jnp.int32))


def sampler(**kw):
  """A sampler per distinct setting, shared by tests so its jits compile once."""
  kw.setdefault('max_len', MAX_LEN)
  kw.setdefault('decode_chunk', 4)
  return _sampler(tuple(sorted(kw.items())))


@functools.lru_cache(maxsize=None)
def _sampler(kw):
  return decoding.StaticSampler(stub_apply, stub_cache, VOCAB, **dict(kw))


def random_table(seed=0, scale=3.0):
  return jnp.asarray(np.random.default_rng(seed).normal(size=(MAX_LEN, V)) * scale, jnp.float32)


def script_table(prompt_len, text, noise_seed=0):
  """Greedy decoding from a prompt of `prompt_len` tokens spells `text`."""
  table = np.random.default_rng(noise_seed).normal(size=(MAX_LEN, V)).astype(np.float32)
  for i, tok in enumerate(VOCAB.encode(text)):
    table[prompt_len - 1 + i, tok] = 50.0
  return jnp.asarray(table)


def params(batch, **kw):
  values = dict(temperature=[1.0] * batch, top_k=[0] * batch, top_p=[1.0] * batch,
                max_new=[8] * batch, seed=[0] * batch, sample_index=list(range(batch)))
  values.update(kw)
  return decoding.RowParams.from_lists(**values)


# ----------------------------------------------------------------------------
# Sampling functions.


def test_top_k_keeps_exactly_k_even_with_ties():
  logits = jnp.asarray([[1.0, 3.0, 3.0, 2.0, 3.0, 0.0]])
  kept = decoding.filter_logits(logits, jnp.asarray([2]), jnp.asarray([1.0]))
  assert np.isfinite(np.asarray(kept)).sum() == 2
  # The stable sort keeps the first two of the three tied maxima.
  np.testing.assert_array_equal(np.isfinite(np.asarray(kept))[0], [0, 1, 1, 0, 0, 0])
  kept = decoding.filter_logits(logits, jnp.asarray([0]), jnp.asarray([1.0]))
  np.testing.assert_array_equal(np.asarray(kept), np.asarray(logits))


def test_top_p_keeps_smallest_prefix_reaching_p():
  probs = np.asarray([0.05, 0.5, 0.2, 0.25])
  logits = jnp.asarray(np.log(probs)[None, :], jnp.float32)
  kept = lambda p, k=0: np.isfinite(np.asarray(
      decoding.filter_logits(logits, jnp.asarray([k]), jnp.asarray([p]))))[0]
  np.testing.assert_array_equal(kept(0.5), [0, 1, 0, 0])  # 0.5 alone reaches 0.5
  np.testing.assert_array_equal(kept(0.6), [0, 1, 0, 1])
  np.testing.assert_array_equal(kept(0.76), [0, 1, 1, 1])
  np.testing.assert_array_equal(kept(1.0), [1, 1, 1, 1])
  # After top-k=2 the mass renormalizes over {0.5, 0.25}: 0.5/0.75 < 0.7.
  np.testing.assert_array_equal(kept(0.7, k=2), [0, 1, 0, 1])
  np.testing.assert_array_equal(kept(0.6, k=2), [0, 1, 0, 0])


def test_sampling_draws_only_kept_tokens_and_greedy_is_argmax():
  rng = np.random.default_rng(1)
  logits = jnp.asarray(rng.normal(size=(1, 20)), jnp.float32)
  logits = jnp.tile(logits, (256, 1))
  keys = decoding.row_keys(jnp.zeros(256, jnp.uint32), jnp.arange(256), jnp.zeros(256, jnp.int32))
  top3 = set(np.argsort(-np.asarray(logits[0]))[:3].tolist())
  sample = jax.jit(decoding.sample_logits)
  drawn = sample(logits, keys, params(256, top_k=[3] * 256))
  assert set(np.asarray(drawn).tolist()) == top3  # all of them, and nothing else
  greedy = sample(logits, keys, params(256, temperature=[0.0] * 256))
  assert set(np.asarray(greedy).tolist()) == {int(np.argmax(logits[0]))}


def test_a_rows_draw_does_not_depend_on_other_rows_settings():
  rng = np.random.default_rng(2)
  logits = jnp.asarray(np.tile(rng.normal(size=(1, 50)), (40, 1)), jnp.float32)
  seeds = jnp.arange(40, dtype=jnp.uint32) % 20
  keys = decoding.row_keys(seeds, jnp.zeros(40, jnp.int32), jnp.full((40,), 3))
  sample = jax.jit(decoding.sample_logits)
  # Rows 20..39 switch on top-k (and with it the batch's filtering path).
  plain = sample(logits, keys, params(40, top_k=[0] * 40))
  mixed = sample(logits, keys, params(40, top_k=[0] * 20 + [5] * 20))
  np.testing.assert_array_equal(plain[:20], mixed[:20])
  assert len(set(np.asarray(plain[:20]).tolist())) > 3  # the draws do vary with the seed


# ----------------------------------------------------------------------------
# The sampler end to end with stub logits.


def test_greedy_follows_argmax_and_logprobs_are_unscaled():
  table = random_table(3)
  req = llm.SamplingRequest('abc', n=1, temperature=0.0, max_tokens=10, stop=())
  (sample,), = sampler().generate(table, [req])
  prompt_len = 1 + 3  # BOS + 3 bytes
  expected = [int(np.argmax(table[prompt_len - 1 + i])) for i in range(10)]
  assert list(sample.tokens) == expected
  logp = jax.nn.log_softmax(table, axis=-1)
  want = [float(logp[prompt_len - 1 + i, t]) for i, t in enumerate(expected)]
  np.testing.assert_allclose(sample.logprobs, want, rtol=1e-5)
  assert sample.finish_reason == 'length'
  assert sample.text == VOCAB.decode(expected)


def test_logprobs_ignore_temperature_top_k_and_top_p():
  table = random_table(4)
  req = llm.SamplingRequest('xy', n=3, temperature=0.3, top_k=5, top_p=0.8, max_tokens=12,
                            stop=(), seed=11)
  samples, = sampler().generate(table, [req])
  logp = np.asarray(jax.nn.log_softmax(table, axis=-1))
  prompt_len = 3
  for s in samples:
    want = [logp[prompt_len - 1 + i, t] for i, t in enumerate(s.tokens)]
    np.testing.assert_allclose(s.logprobs, want, rtol=1e-5)
    for i, t in enumerate(s.tokens):  # and every token came from the top 5
      assert t in np.argsort(-logp[prompt_len - 1 + i])[:5]


def test_n_samples_differ_and_seed_is_deterministic():
  table = random_table(5, scale=1.0)
  req = llm.SamplingRequest('q', n=4, temperature=1.0, max_tokens=12, stop=(), seed=3)
  first, = sampler().generate(table, [req])
  assert len({s.tokens for s in first}) == 4
  again, = sampler(batch_size=2, decode_chunk=5).generate(table, [req])
  assert [s.tokens for s in again] == [s.tokens for s in first]
  other_seed, = sampler().generate(table, [dataclasses_replace(req, seed=4)])
  assert [s.tokens for s in other_seed] != [s.tokens for s in first]


def dataclasses_replace(obj, **kw):
  import dataclasses
  return dataclasses.replace(obj, **kw)


def test_results_do_not_depend_on_batch_composition():
  table = random_table(6, scale=1.0)
  a = llm.SamplingRequest('a', n=2, temperature=0.7, max_tokens=9, stop=(), seed=1)
  b = llm.SamplingRequest('bbbb', n=3, temperature=1.0, top_k=4, max_tokens=5, stop=(), seed=2)
  alone, = sampler().generate(table, [a])
  both = sampler(batch_size=4).generate(table, [b, a])
  assert both[1] == alone


def test_stop_sequence_split_across_tokens_is_cut():
  prompt = 'Q:'
  table = script_table(1 + len(prompt), 'x = 1  # [END] trailing')
  req = llm.SamplingRequest(prompt, temperature=0.0, max_tokens=30, stop=('# [END]',))
  # A chunk of 4 tokens ends in the middle of the stop string.
  (s,), = sampler(decode_chunk=4).generate(table, [req])
  assert s.finish_reason == 'stop'
  assert s.text == 'x = 1  '
  assert VOCAB.decode(s.tokens) == 'x = 1  # [END]'  # the stop's tokens are kept
  assert len(s.logprobs) == len(s.tokens)


def test_earliest_of_several_stops_wins():
  prompt = 'P'
  table = script_table(1 + len(prompt), 'abc\nSTOP more # [END]')
  req = llm.SamplingRequest(prompt, temperature=0.0, max_tokens=40, stop=('# [END]', 'STOP'))
  (s,), = sampler(decode_chunk=3).generate(table, [req])
  assert (s.text, s.finish_reason) == ('abc\n', 'stop')


def test_eos_finishes_without_the_eos_token():
  prompt = 'hi'
  table = np.array(script_table(1 + len(prompt), 'ok'))
  table[1 + len(prompt) - 1 + 2, VOCAB.eos_id] = 60.0
  req = llm.SamplingRequest(prompt, temperature=0.0, max_tokens=20, stop=())
  (s,), = sampler().generate(jnp.asarray(table), [req])
  assert (s.text, s.finish_reason, len(s.tokens)) == ('ok', 'eos', 2)


def test_per_row_max_tokens_and_context_cap():
  table = random_table(7)
  reqs = [llm.SamplingRequest('a', temperature=0.0, max_tokens=m, stop=()) for m in (0, 3, 7)]
  out = sampler().generate(table, reqs)
  assert [len(o[0].tokens) for o in out] == [0, 3, 7]
  assert all(o[0].finish_reason == 'length' for o in out)
  # The context caps the budget: 64 - 2 prompt tokens.
  (s,), = sampler().generate(table, [llm.SamplingRequest('a', temperature=0.0,
                                                         max_tokens=500, stop=())])
  assert len(s.tokens) == MAX_LEN - 2 and s.finish_reason == 'length'


def test_empty_prompt_starts_from_bos():
  table = random_table(8)
  (s,), = sampler().generate(table, [llm.SamplingRequest('', temperature=0.0, max_tokens=4,
                                                         stop=())])
  assert list(s.tokens) == [int(np.argmax(table[i])) for i in range(4)]


def test_bad_requests_are_rejected_with_a_clear_message():
  table = random_table(9)
  with pytest.raises(errors.UserError, match=r'request 1: .*n must be'):
    sampler().generate(table, [llm.SamplingRequest('a'), llm.SamplingRequest('a', n=0)])
  with pytest.raises(errors.UserError, match='temperature'):
    sampler().generate(table, [llm.SamplingRequest('a', temperature=-1.0)])
  with pytest.raises(errors.UserError, match='top_p'):
    sampler().generate(table, [llm.SamplingRequest('a', top_p=0.0)])
  with pytest.raises(errors.UserError, match=r'request 0: prompt is 71 tokens.*64'):
    sampler().generate(table, [llm.SamplingRequest('z' * 70)])


def test_left_truncation_when_asked():
  table = random_table(10)
  req = llm.SamplingRequest('z' * 70 + 'END', temperature=0.0, max_tokens=4, stop=())
  (s,), = sampler(truncate=True).generate(table, [req])
  # 60 prompt tokens are kept, so generation starts at position 60.
  assert list(s.tokens) == [int(np.argmax(table[59 + i])) for i in range(4)]
  prepared = decoding.prepare(VOCAB, req, max_len=MAX_LEN, truncate=True)
  assert VOCAB.decode(prepared.tokens).endswith('zzEND') and len(prepared.tokens) == 60


def test_prefix_tokenization_is_prefix_plus_rest():
  req = llm.SamplingRequest('shared part|own', prefix='shared part|')
  p = decoding.prepare(VOCAB, req, max_len=MAX_LEN)
  assert p.tokens[:len(p.prefix_tokens)] == p.prefix_tokens
  assert VOCAB.decode(p.tokens[1:]) == 'shared part|own'


def test_bucket_grid_pads_by_at_most_a_quarter():
  grid = decoding.bucket_grid(16, 1024)
  assert grid[:9] == (16, 20, 24, 28, 32, 40, 48, 56, 64) and grid[-1] == 1024
  assert decoding.ENGINE_BUCKETS == decoding.bucket_grid()
  for n in range(16, 1025):
    b = decoding.bucket(n, grid)
    assert n <= b <= 1.25 * n
  # Past the grid a length is its own bucket; a grid may end off an octave.
  assert decoding.bucket(2000, grid) == 2000
  assert decoding.bucket_grid(16, 40) == (16, 20, 24, 28, 32, 40)
