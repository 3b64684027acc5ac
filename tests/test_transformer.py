"""Tests for the decoder-only Transformer: cache decoding, packing, sharding."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import PartitionSpec as P

from restreact_jax import errors, partitioning
from restreact_jax.models import configs
from restreact_jax.models.transformer import KVCache, Mode, Transformer

CFG = configs.TransformerConfig(vocab_size=128, embed_dim=32, num_layers=2, num_heads=4,
                                num_kv_heads=2, head_dim=8, mlp_dim=64, max_len=32)


def _init(cfg, seed=0):
  model = Transformer(cfg)
  tokens = jnp.zeros((1, 4), jnp.int32)
  params = nn.meta.unbox(model.init(jax.random.key(seed), tokens)['params'])
  return model, params


@functools.lru_cache(maxsize=None)
def _jitted(cfg):
  model = Transformer(cfg)

  @functools.partial(jax.jit, static_argnames='mode')
  def run(params, tokens, mode=Mode.TRAIN, positions=None, segments=None, cache=None,
          lengths=None):
    return model.apply({'params': params}, tokens, mode=mode, positions_BxL=positions,
                       segment_ids_BxL=segments, cache=cache, input_lengths_B=lengths)

  return run


@pytest.fixture(scope='module')
def model_and_params():
  return _init(CFG)


def test_param_count_matches_init():
  for cfg in (CFG,
              CFG.replace(tie_embeddings=False, qkv_bias=True, num_kv_heads=1),
              CFG.replace(activation='gelu', norm_offset=True, scale_embeddings=True,
                          num_kv_heads=4)):
    boxed = jax.eval_shape(Transformer(cfg).init, jax.random.key(0),
                           jnp.zeros((1, 4), jnp.int32))
    real = sum(int(np.prod(x.shape)) for x in jax.tree.leaves(nn.meta.unbox(boxed)))
    assert configs.param_count(cfg) == real, cfg


def test_flops_per_token_formula():
  cfg = CFG
  n_matmul = cfg.num_layers * (cfg.embed_dim * cfg.head_dim * 2 * (4 + 2)
                               + 3 * cfg.embed_dim * cfg.mlp_dim) + 128 * 32
  expected = 6 * n_matmul + 12 * 2 * 4 * 8 * 16
  assert configs.flops_per_token(cfg, 16) == expected
  # Longer sequences cost more attention FLOPs per token.
  assert configs.flops_per_token(cfg, 32) > configs.flops_per_token(cfg, 16)


def test_bad_config_is_user_error():
  with pytest.raises(errors.UserError, match='num_kv_heads'):
    CFG.replace(num_kv_heads=3)
  with pytest.raises(errors.UserError, match='activation'):
    CFG.replace(activation='relu')
  with pytest.raises(errors.UserError, match='embed_dim'):
    CFG.replace(embed_dim=0)


def test_prefill_then_decode_equals_full_forward(model_and_params):
  _, params = model_and_params
  run = _jitted(CFG)
  batch, total = 3, 14
  tokens = jax.random.randint(jax.random.key(1), (batch, total), 0, CFG.vocab_size)
  full, none = run(params, tokens)
  assert none is None
  prompt_lengths = jnp.array([5, 9, 2], jnp.int32)
  padded = jnp.where(jnp.arange(9)[None] < prompt_lengths[:, None], tokens[:, :9], 0)
  cache = KVCache.init(CFG, batch, 20)
  logits, cache = run(params, padded, mode=Mode.PREFILL, cache=cache, lengths=prompt_lengths)
  np.testing.assert_array_equal(cache.lengths, prompt_lengths)
  for b in range(batch):
    n = int(prompt_lengths[b])
    np.testing.assert_allclose(logits[b, :n], full[b, :n], atol=2e-5)
  rows = jnp.arange(batch)
  for _ in range(5):
    pos = cache.lengths
    step_logits, cache = run(params, tokens[rows, pos][:, None], mode=Mode.DECODE, cache=cache)
    np.testing.assert_allclose(step_logits[:, 0], full[rows, pos], atol=2e-5)
  np.testing.assert_array_equal(cache.lengths, prompt_lengths + 5)


def test_prefill_in_chunks_with_ragged_rows_equals_full(model_and_params):
  """A second PREFILL extends each row from its own length."""
  _, params = model_and_params
  run = _jitted(CFG)
  tokens = jax.random.randint(jax.random.key(2), (2, 10), 0, CFG.vocab_size)
  full, _ = run(params, tokens)
  cache = KVCache.init(CFG, 2, 16)
  first = jnp.array([3, 6], jnp.int32)
  _, cache = run(params, jnp.where(jnp.arange(6)[None] < first[:, None], tokens[:, :6], 7),
                 mode=Mode.PREFILL, cache=cache, lengths=first)
  second = jnp.array([4, 2], jnp.int32)
  chunk = jnp.stack([tokens[0, 3:7], jnp.concatenate([tokens[1, 6:8], jnp.array([5, 5])])])
  logits, cache = run(params, chunk, mode=Mode.PREFILL, cache=cache, lengths=second)
  np.testing.assert_allclose(logits[0, :4], full[0, 3:7], atol=2e-5)
  np.testing.assert_allclose(logits[1, :2], full[1, 6:8], atol=2e-5)
  np.testing.assert_array_equal(cache.lengths, [7, 8])
  # Padding is never written: row 1 positions 8.. stay empty.
  assert float(jnp.abs(cache.k[:, 1, :, 8:]).max()) == 0.0


def test_prefill_last_only_gives_each_rows_last_logits_and_the_same_cache(model_and_params):
  model, params = model_and_params
  tokens = jax.random.randint(jax.random.key(4), (3, 9), 0, CFG.vocab_size)
  lengths = jnp.array([5, 9, 0], jnp.int32)  # the last row is batch padding
  run = jax.jit(lambda p, t, c, n, last: model.apply({'params': p}, t, mode=Mode.PREFILL, cache=c,
                                                   input_lengths_B=n, last_only=last),
                static_argnums=4)
  full, full_cache = run(params, tokens, KVCache.init(CFG, 3, 16), lengths, False)
  last, last_cache = run(params, tokens, KVCache.init(CFG, 3, 16), lengths, True)
  assert last.shape == (3, 1, CFG.vocab_size)
  for b in range(2):
    np.testing.assert_allclose(last[b, 0], full[b, int(lengths[b]) - 1], atol=2e-5)
  jax.tree.map(np.testing.assert_array_equal, last_cache, full_cache)
  with pytest.raises(ValueError, match='last_only'):
    model.apply({'params': params}, tokens, last_only=True)


def test_write_near_max_len_does_not_shift_rows(model_and_params):
  """A chunk that overflows one row's cache drops the overflow only."""
  _, params = model_and_params
  run = _jitted(CFG)
  tokens = jax.random.randint(jax.random.key(3), (2, 8), 0, CFG.vocab_size)
  full, _ = run(params, tokens)
  cache = KVCache.init(CFG, 2, 8)
  _, cache = run(params, tokens[:, :6], mode=Mode.PREFILL, cache=cache,
                 lengths=jnp.array([6, 2], jnp.int32))
  before = cache.k
  logits, cache = run(params, jnp.stack([jnp.concatenate([tokens[0, 6:8], jnp.array([3, 4, 0, 0])]),
                                 tokens[1, 2:8]]),
                      mode=Mode.PREFILL, cache=cache, lengths=jnp.array([4, 6], jnp.int32))
  # Row 0 keeps its first 6 positions untouched and fills 6, 7; row 1 fills 2..7.
  np.testing.assert_array_equal(cache.k[:, 0, :, :6], before[:, 0, :, :6])
  np.testing.assert_allclose(logits[0, :2], full[0, 6:8], atol=2e-5)
  np.testing.assert_allclose(logits[1, :6], full[1, 2:8], atol=2e-5)
  np.testing.assert_array_equal(cache.lengths, [8, 8])


def test_decode_chunk_equals_plain_decode(model_and_params):
  """Steps in an open chunk give the plain DECODE logits and, closed, its cache.

  Row 0 decodes every step, row 1 sits out steps 1 and 3 (a finished slot),
  row 2 runs past the end of its cache (its writes are dropped, as plain
  DECODE drops them).
  """
  _, params = model_and_params
  run = _jitted(CFG)
  max_len, chunk = 16, 6
  tokens = jax.random.randint(jax.random.key(4), (3, max_len + chunk), 0, CFG.vocab_size)
  prompt = jnp.array([5, 9, 13], jnp.int32)
  padded = jnp.where(jnp.arange(13)[None] < prompt[:, None], tokens[:, :13], 0)
  _, start = run(params, padded, mode=Mode.PREFILL, cache=KVCache.init(CFG, 3, max_len),
                 lengths=prompt)
  plain, chunked = start, start.open_chunk(chunk)
  for step in range(chunk):
    live = jnp.array([1, int(step not in (1, 3)), 1], jnp.int32)
    step_tokens = tokens[jnp.arange(3), jnp.minimum(plain.lengths, max_len + chunk - 1)][:, None]
    want, plain = run(params, step_tokens, mode=Mode.DECODE, cache=plain, lengths=live)
    got, chunked = run(params, step_tokens, mode=Mode.DECODE, cache=chunked, lengths=live)
    np.testing.assert_array_equal(chunked.lengths, plain.lengths)
    for b in range(3):
      if live[b]:
        np.testing.assert_allclose(got[b], want[b], atol=2e-5)
  closed = chunked.close_chunk()
  assert closed.recent is None
  np.testing.assert_array_equal(closed.lengths, [11, 13, 16])
  # Layer 1's keys and values come from layer 0's attention, which the chunk
  # computes over the cache and the chunk separately: float32 rounding of the
  # two paths differs by an ulp or so (1.04e-6 on a key of 0.349 on one CPU).
  np.testing.assert_allclose(closed.k, plain.k, rtol=1e-5, atol=1e-5)
  np.testing.assert_allclose(closed.v, plain.v, rtol=1e-5, atol=1e-5)
  # Nothing was written where no token went: row 1 past position 13.
  assert float(jnp.abs(closed.k[:, 1, :, 13:]).max()) == 0.0


def test_open_chunk_takes_decode_steps_only(model_and_params):
  _, params = model_and_params
  cache = KVCache.init(CFG, 2, 8).open_chunk(4)
  with pytest.raises(ValueError, match='open decode chunk'):
    _jitted(CFG)(params, jnp.zeros((2, 3), jnp.int32), mode=Mode.PREFILL, cache=cache)
  with pytest.raises(ValueError, match='already open'):
    cache.open_chunk(4)


def test_packed_segments_do_not_attend_across(model_and_params):
  _, params = model_and_params
  run = _jitted(CFG)
  a = jax.random.randint(jax.random.key(4), (1, 5), 0, CFG.vocab_size)
  b = jax.random.randint(jax.random.key(5), (1, 7), 0, CFG.vocab_size)
  packed = jnp.concatenate([a, b], axis=1)
  segments = jnp.array([[1] * 5 + [2] * 7])
  positions = jnp.array([list(range(5)) + list(range(7))])
  logits, _ = run(params, packed, positions=positions, segments=segments)
  alone_a, _ = run(params, a)
  alone_b, _ = run(params, b)
  np.testing.assert_allclose(logits[0, :5], alone_a[0], atol=2e-5)
  np.testing.assert_allclose(logits[0, 5:], alone_b[0], atol=2e-5)
  # Without segment ids the second sequence does see the first.
  unpacked, _ = run(params, packed, positions=positions)
  assert float(jnp.abs(unpacked[0, 5:] - alone_b[0]).max()) > 1e-3


def test_param_shardings_follow_rules():
  mesh = partitioning.make_mesh((2, 4))
  boxed = jax.eval_shape(Transformer(CFG).init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  shard = partitioning.boxed_shardings(boxed['params'], mesh, partitioning.logical_axis_rules())
  attn = shard['layers_0']['attn']
  assert attn['q_proj'].spec == P(None, 'model')
  assert attn['o_proj'].spec == P('model')
  assert attn['k_proj'].spec == P()  # 2 KV heads do not divide the 4-way model axis
  assert shard['layers_0']['mlp']['gate_proj'].spec == P(None, 'model')
  assert shard['layers_0']['mlp']['down_proj'].spec == P('model')
  assert shard['embedding'].spec == P('model')
  fsdp = partitioning.boxed_shardings(boxed['params'], mesh, partitioning.logical_axis_rules(True))
  assert fsdp['layers_0']['attn']['q_proj'].spec == P('data', 'model')
  names = KVCache.logical_axes()
  cache = jax.eval_shape(lambda: KVCache.init(CFG.replace(num_kv_heads=4), 4, 16))
  cache_shard = partitioning.tree_shardings(cache, names, mesh, partitioning.logical_axis_rules())
  assert cache_shard.k.spec == P(None, 'data', 'model')
  assert cache_shard.lengths.spec == P('data')


def test_sharded_forward_and_prefill_equal_unsharded(model_and_params):
  model, params = model_and_params
  mesh = partitioning.make_mesh((2, 4))
  rules = partitioning.logical_axis_rules()
  tokens = jax.random.randint(jax.random.key(6), (4, 8), 0, CFG.vocab_size)
  expected, _ = _jitted(CFG)(params, tokens)
  cache0 = KVCache.init(CFG, 4, 16)
  lengths = jnp.array([8, 3, 5, 1], jnp.int32)
  expected_pf, expected_cache = _jitted(CFG)(params, tokens, mode=Mode.PREFILL, cache=cache0,
                                             lengths=lengths)

  boxed = jax.eval_shape(model.init, jax.random.key(0), jnp.zeros((1, 4), jnp.int32))
  param_sh = partitioning.boxed_shardings(boxed['params'], mesh, rules)
  cache_sh = partitioning.tree_shardings(cache0, KVCache.logical_axes(), mesh, rules)
  batch_sh = partitioning.batch_sharding(mesh)

  def forward(p, t):
    return model.apply({'params': p}, t)[0]

  def prefill(p, t, c, n):
    return model.apply({'params': p}, t, mode=Mode.PREFILL, cache=c, input_lengths_B=n)

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    sharded_params = jax.device_put(params, param_sh)
    assert sharded_params['layers_0']['attn']['q_proj'].sharding.spec == P(None, 'model')
    got = jax.jit(forward, in_shardings=(param_sh, batch_sh))(sharded_params, tokens)
    got_pf, got_cache = jax.jit(
        prefill, in_shardings=(param_sh, batch_sh, cache_sh, partitioning.batch_sharding(mesh, 1)),
        out_shardings=(None, cache_sh))(sharded_params, tokens, jax.device_put(cache0, cache_sh),
                                        lengths)
  np.testing.assert_allclose(got, expected, atol=2e-5)
  np.testing.assert_allclose(got_pf, expected_pf, atol=2e-5)
  np.testing.assert_allclose(got_cache.k, expected_cache.k, atol=2e-5)
  assert got_cache.k.sharding.spec == cache_sh.k.spec


def test_bfloat16_compute_close_to_float32(model_and_params):
  _, params = model_and_params
  cfg16 = CFG.replace(dtype='bfloat16')
  tokens = jax.random.randint(jax.random.key(7), (2, 6), 0, CFG.vocab_size)
  ref, _ = _jitted(CFG)(params, tokens)
  got, _ = _jitted(cfg16)(params, tokens)
  assert got.dtype == jnp.float32
  np.testing.assert_allclose(got, ref, atol=0.15)
  cache = KVCache.init(cfg16, 2, 8)
  assert cache.k.dtype == jnp.bfloat16


def test_train_mode_rejects_cache_and_decode_needs_one_token(model_and_params):
  model, params = model_and_params
  tokens = jnp.zeros((1, 3), jnp.int32)
  with pytest.raises(ValueError, match='cache'):
    model.apply({'params': params}, tokens, cache=KVCache.init(CFG, 1, 8))
  with pytest.raises(ValueError, match='one token'):
    model.apply({'params': params}, tokens, mode=Mode.DECODE, cache=KVCache.init(CFG, 1, 8))
