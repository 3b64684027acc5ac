"""The decoder-only Transformer (flax linen), its decode modes and KV cache.

One module covers Llama, Qwen2 and Gemma v1 checkpoints and the from-scratch
sizes: pre-RMSNorm blocks, RoPE (Hugging Face's rotate-half layout, so imported
q/k kernels need no permutation), MHA/GQA/MQA, a gated MLP (SwiGLU or GeGLU).

Call:

  logits_BxLxV, cache = model.apply({'params': p}, tokens_BxL, mode=Mode.X, ...)

* `Mode.TRAIN`: optional `positions_BxL` and `segment_ids_BxL` (packing:
  tokens attend only within their segment, causally by index). Returns
  `(logits, None)`.
* `Mode.PREFILL` / `Mode.DECODE`: `tokens_BxL` right-padded to
  `input_lengths_B` real tokens, extending `cache`. Row b's token i goes to
  cache position `cache.lengths[b] + i`, attends to everything cached before it
  and causally to the new tokens. Returns `(logits, new_cache)` with
  `new_cache.lengths = cache.lengths + input_lengths_B`. DECODE is L == 1.
* A decode *chunk* (`KVCache.open_chunk(C)` ... `close_chunk()`, what
  `decoding.decode_loop` does around its loop): DECODE steps write their
  keys and values into a small `RecentKV` buffer and attend to the cache as
  the chunk opened (split into one array per layer) plus that buffer, in one
  softmax; `close_chunk` writes the buffer into the cache once. Inside the
  loop the cache is only read, and never as a slice: on CPU, XLA copied the
  stacked cache (or a layer of it) out before each step's reads.

Parameters and activations carry the logical axis names of
`restreact_jax.partitioning`; layers are a Python loop (`layers_{i}`), which
keeps parameter paths plain for checkpoint import.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Sequence

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp

from restreact_jax.models.configs import TransformerConfig

Array = jax.Array

# Heads before positions: a decode step reads each head's keys as one
# contiguous [positions, head_dim] block (on CPU its attention ran 1.9x faster
# than positions-major as products and sums, 7x as a dot).
CACHE_AXES = ('layers', 'cache_batch', 'cache_heads', 'cache_sequence', 'cache_kv')
CACHE_LENGTH_AXES = ('cache_batch',)

_NEG_INF = -1e30  # finite, so a fully masked row never yields NaN


class Mode(enum.Enum):
  """What a call does: train on whole sequences, or fill / extend a KV cache."""
  TRAIN = 'train'
  PREFILL = 'prefill'
  DECODE = 'decode'


@flax.struct.dataclass
class RecentKV:
  """An open decode chunk: the cache as it opened, and the tokens decoded since.

  Attributes:
    k: `[layers, batch, kv_heads, C, head_dim]` keys of the chunk's tokens.
    v: `[layers, batch, kv_heads, C, head_dim]` their values.
    positions: `[batch, C]` int32, the cache position each slot holds
      (`max_len`: empty, or a write the cache would drop).
    start: `[batch]` int32, `lengths` when the chunk opened: positions below
      it are read from the frozen layers.
    frozen_k: per layer, `[batch, kv_heads, max_len, head_dim]` keys as the
      chunk opened. A layer of the stacked cache is a slice, which XLA on
      CPU copies out before every read; split once per chunk, each step
      reads them in place.
    frozen_v: the same for the values.
  """
  k: Array
  v: Array
  positions: Array
  start: Array
  frozen_k: tuple[Array, ...]
  frozen_v: tuple[Array, ...]


@flax.struct.dataclass
class KVCache:
  """Keys and values of every layer for `batch` rows of up to `max_len` tokens.

  Attributes:
    k: `[layers, batch, kv_heads, max_len, head_dim]` keys (after RoPE).
    v: `[layers, batch, kv_heads, max_len, head_dim]` values.
    lengths: `[batch]` int32, tokens cached per row (the open chunk's
      included).
    recent: the open decode chunk's tokens (None outside a chunk).
  """
  k: Array
  v: Array
  lengths: Array
  recent: RecentKV | None = None

  @classmethod
  def init(cls, config: TransformerConfig, batch: int, max_len: int | None = None,
           dtype: Any = None) -> 'KVCache':
    """An empty cache.

    Args:
      config: the model's architecture.
      batch: number of rows (decode slots).
      max_len: positions per row; defaults to `config.max_len`.
      dtype: cache dtype; defaults to the compute dtype.

    Returns:
      A zero-filled `KVCache` with all lengths 0.
    """
    max_len = config.max_len if max_len is None else max_len
    dtype = config.compute_dtype if dtype is None else dtype
    shape = (config.num_layers, batch, config.num_kv_heads, max_len, config.head_dim)
    return cls(k=jnp.zeros(shape, dtype), v=jnp.zeros(shape, dtype),
               lengths=jnp.zeros((batch,), jnp.int32))

  @staticmethod
  def logical_axes() -> 'KVCache':
    """The logical axis names of each field, as a `KVCache` of name tuples.

    Usable as the names tree of `partitioning.tree_shardings(cache, names, ...)`.
    """
    return KVCache(k=CACHE_AXES, v=CACHE_AXES, lengths=CACHE_LENGTH_AXES)

  @property
  def max_len(self) -> int:
    return self.k.shape[3]

  def open_chunk(self, chunk: int) -> 'KVCache':
    """Starts a decode chunk of up to `chunk` DECODE steps (see the module doc)."""
    if self.recent is not None:
      raise ValueError('a decode chunk is already open')
    layers, batch, heads, _, head_dim = self.k.shape
    shape = (layers, batch, heads, chunk, head_dim)
    recent = RecentKV(
        k=constrain(jnp.zeros(shape, self.k.dtype), CACHE_AXES),
        v=constrain(jnp.zeros(shape, self.v.dtype), CACHE_AXES),
        positions=jnp.full((batch, chunk), self.max_len, jnp.int32),
        start=self.lengths,
        frozen_k=tuple(constrain(self.k[i], CACHE_AXES[1:]) for i in range(layers)),
        frozen_v=tuple(constrain(self.v[i], CACHE_AXES[1:]) for i in range(layers)))
    return self.replace(recent=recent)

  def close_chunk(self) -> 'KVCache':
    """Writes the chunk's keys and values into the cache; the chunk is closed."""
    r = self.recent
    if r is None:
      return self
    rows_Bx1 = jnp.arange(self.k.shape[1])[:, None]
    # The indexed view is [batch, C, layers, kv_heads, head_dim].
    k = self.k.at[:, rows_Bx1, :, r.positions].set(
        r.k.transpose(1, 3, 0, 2, 4).astype(self.k.dtype), mode='drop')
    v = self.v.at[:, rows_Bx1, :, r.positions].set(
        r.v.transpose(1, 3, 0, 2, 4).astype(self.v.dtype), mode='drop')
    return self.replace(k=constrain(k, CACHE_AXES), v=constrain(v, CACHE_AXES), recent=None)


def constrain(x: Array, names: Sequence[str | None]) -> Array:
  """`nn.with_logical_constraint`, dropping names whose mesh axis does not divide.

  Outside a mesh or without logical rules this is the identity (flax's own
  behaviour); the divisibility check lets e.g. 1 KV head run on a 4-way model
  axis, matching `partitioning.logical_to_spec`.
  """
  mesh = jax.sharding.get_abstract_mesh()
  rules = nn.get_logical_axis_rules()
  if mesh.empty or not rules:
    return x
  table = dict(rules)
  kept = []
  for size, name in zip(x.shape, names):
    axis = table.get(name) if name is not None else None
    if axis is not None and size % mesh.shape[axis]:
      name = None
    kept.append(name)
  return nn.with_logical_constraint(x, tuple(kept))


def _dense_init(in_axis: int | Sequence[int], out_axis: int | Sequence[int]):
  return nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal',
                                          in_axis=in_axis, out_axis=out_axis)


class RMSNorm(nn.Module):
  """RMSNorm computed in float32; Gemma's variant scales by `1 + scale`."""
  eps: float
  offset: bool
  dtype: Any
  param_dtype: Any

  @nn.compact
  def __call__(self, x: Array) -> Array:
    init = nn.initializers.zeros if self.offset else nn.initializers.ones
    scale = self.param('scale', nn.with_logical_partitioning(init, ('norm',)),
                       (x.shape[-1],), self.param_dtype)
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
    if self.offset:
      # Gemma multiplies in float32 before the cast.
      return (normed * (1.0 + scale.astype(jnp.float32))).astype(self.dtype)
    # Llama/Qwen2 cast first, then scale.
    return scale.astype(self.dtype) * normed.astype(self.dtype)


def rope(x_BxLxNxH: Array, positions_BxL: Array, theta: float) -> Array:
  """Rotary embedding in the rotate-half layout (pairs `i` and `i + H/2`)."""
  head_dim = x_BxLxNxH.shape[-1]
  inv_freq = 1.0 / (theta ** (jnp.arange(0, head_dim, 2, dtype=jnp.float32) / head_dim))
  angles_BxLxH2 = positions_BxL.astype(jnp.float32)[..., None] * inv_freq
  angles_BxLxH = jnp.concatenate([angles_BxLxH2, angles_BxLxH2], axis=-1)[:, :, None, :]
  cos, sin = jnp.cos(angles_BxLxH), jnp.sin(angles_BxLxH)
  x = x_BxLxNxH.astype(jnp.float32)
  x1, x2 = jnp.split(x, 2, axis=-1)
  rotated = jnp.concatenate([-x2, x1], axis=-1)
  return (x * cos + rotated * sin).astype(x_BxLxNxH.dtype)


def attend(q_BxLxNxH: Array, k_BxKxSxH: Array, v_BxKxSxH: Array, mask_BxLxS: Array,
           extra: tuple[Array, Array, Array] | None = None) -> Array:
  """Grouped-query softmax attention in float32; returns `[B, L, N, H]`.

  Keys and values are heads-major, as the cache holds them. `extra` =
  `(k_BxKxCxH, v_BxKxCxH, mask_BxLxC)`: more keys (a decode chunk's recent
  tokens), in the same softmax as the first ones.
  """
  b, l, n, h = q_BxLxNxH.shape
  kv_heads = k_BxKxSxH.shape[1]
  q_BxLxKxGxH = q_BxLxNxH.reshape(b, l, kv_heads, n // kv_heads, h)
  blocks = [(k_BxKxSxH, v_BxKxSxH, mask_BxLxS)] + ([extra] if extra is not None else [])
  if l == 1:
    # One query per row (decode): products and sums, one fused pass over the
    # keys (on CPU 1.5x faster per decode step than batched [G, H] x [H, S] dots).
    q_BxKxGx1xH = q_BxLxKxGxH[:, 0, :, :, None, :].astype(jnp.float32)
    scores = [jnp.sum(q_BxKxGx1xH * k[:, :, None].astype(jnp.float32), axis=-1)[:, :, :, None]
              for k, _, _ in blocks]
  else:
    scores = [jnp.einsum('blkgh,bksh->bkgls', q_BxLxKxGxH, k, preferred_element_type=jnp.float32)
              for k, _, _ in blocks]
  scores = [jnp.where(mask[:, None, None, :, :], sc / math.sqrt(h), _NEG_INF)
            for sc, (_, _, mask) in zip(scores, blocks)]
  probs = jax.nn.softmax(jnp.concatenate(scores, axis=-1), axis=-1)
  out, offset = 0, 0
  for k, v, _ in blocks:
    part = jax.lax.slice_in_dim(probs, offset, offset + k.shape[2], axis=-1).astype(v.dtype)
    if l == 1:
      out = out + jnp.sum(part[:, :, :, 0, :, None] * v[:, :, None], axis=3)[:, None]
    else:
      out = out + jnp.einsum('bkgls,bksh->blkgh', part, v)
    offset += k.shape[2]
  return out.reshape(b, l, n, h)


class Attention(nn.Module):
  """Multi-head / grouped-query self-attention with RoPE."""
  config: TransformerConfig

  def _kernel(self, name: str, shape, names, in_axis, out_axis):
    return self.param(name, nn.with_logical_partitioning(_dense_init(in_axis, out_axis), names),
                      shape, self.config.params_dtype)

  def _bias(self, name: str, shape, names):
    return self.param(name, nn.with_logical_partitioning(nn.initializers.zeros, names),
                      shape, self.config.params_dtype)

  @nn.compact
  def __call__(self, x_BxLxD: Array, positions_BxL: Array, mask_BxLxS: Array,
               layer: int, cache: KVCache | None, write_pos_BxL: Array | None
               ) -> tuple[Array, KVCache | None]:
    cfg = self.config
    d, n, kv, h = cfg.embed_dim, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    dt = cfg.compute_dtype

    def project(name: str, heads: int, head_axis: str) -> Array:
      kernel = self._kernel(f'{name}_proj', (d, heads, h), ('embed', head_axis, 'kv'), 0, (1, 2))
      y = jnp.einsum('bld,dnh->blnh', x_BxLxD, kernel.astype(dt))
      if cfg.qkv_bias:
        y = y + self._bias(f'{name}_bias', (heads, h), (head_axis, 'kv')).astype(dt)
      return constrain(y, ('batch', 'length', head_axis, 'kv'))

    q = rope(project('q', n, 'heads'), positions_BxL, cfg.rope_theta)
    k = rope(project('k', kv, 'kv_heads'), positions_BxL, cfg.rope_theta)
    v = project('v', kv, 'kv_heads')

    extra = None
    if cache is not None and cache.recent is not None:
      # An open decode chunk: the new token goes to its row's next recent
      # slot; the frozen cache is only read (positions below `start`).
      r = cache.recent
      rows_B = jnp.arange(k.shape[0])
      slot_B = cache.lengths - r.start
      recent_k = r.k.at[layer, rows_B, :, slot_B].set(k[:, 0].astype(r.k.dtype), mode='drop')
      recent_v = r.v.at[layer, rows_B, :, slot_B].set(v[:, 0].astype(r.v.dtype), mode='drop')
      cache = cache.replace(recent=r.replace(k=constrain(recent_k, CACHE_AXES),
                                             v=constrain(recent_v, CACHE_AXES)))
      extra = (recent_k[layer].astype(dt), recent_v[layer].astype(dt),
               (r.positions < cache.max_len)[:, None, :])
      k, v = r.frozen_k[layer].astype(dt), r.frozen_v[layer].astype(dt)
    elif cache is not None:
      # Scatter each row's new keys to its own positions; out-of-range targets
      # (padding, or a full row) are dropped instead of shifting the write.
      # The indexed view is [batch, length, kv_heads, head_dim], as k and v are.
      rows_Bx1 = jnp.arange(k.shape[0])[:, None]
      cache_k = cache.k.at[layer, rows_Bx1, :, write_pos_BxL].set(k.astype(cache.k.dtype),
                                                                  mode='drop')
      cache_v = cache.v.at[layer, rows_Bx1, :, write_pos_BxL].set(v.astype(cache.v.dtype),
                                                                  mode='drop')
      cache = cache.replace(k=constrain(cache_k, CACHE_AXES), v=constrain(cache_v, CACHE_AXES))
      k, v = cache_k[layer].astype(dt), cache_v[layer].astype(dt)
    else:
      k, v = k.swapaxes(1, 2), v.swapaxes(1, 2)

    out = attend(q, k, v, mask_BxLxS, extra).astype(dt)
    out = constrain(out, ('batch', 'length', 'heads', 'kv'))
    o_kernel = self._kernel('o_proj', (n, h, d), ('heads', 'kv', 'embed'), (0, 1), 2)
    y = jnp.einsum('blnh,nhd->bld', out, o_kernel.astype(dt))
    return constrain(y, ('batch', 'length', 'embed')), cache


class MLP(nn.Module):
  """Gated MLP: `down(act(gate(x)) * up(x))`, SwiGLU or GeGLU (tanh)."""
  config: TransformerConfig

  @nn.compact
  def __call__(self, x_BxLxD: Array) -> Array:
    cfg = self.config
    dt = cfg.compute_dtype

    def kernel(name, shape, names):
      return self.param(name, nn.with_logical_partitioning(_dense_init(0, 1), names),
                        shape, cfg.params_dtype).astype(dt)

    gate = jnp.einsum('bld,df->blf', x_BxLxD,
                      kernel('gate_proj', (cfg.embed_dim, cfg.mlp_dim), ('embed', 'mlp')))
    up = jnp.einsum('bld,df->blf', x_BxLxD,
                    kernel('up_proj', (cfg.embed_dim, cfg.mlp_dim), ('embed', 'mlp')))
    if cfg.activation == 'silu':
      act = jax.nn.silu(gate)
    else:
      act = jax.nn.gelu(gate, approximate=True)
    hidden = constrain(act * up, ('batch', 'length', 'mlp'))
    y = jnp.einsum('blf,fd->bld', hidden,
                   kernel('down_proj', (cfg.mlp_dim, cfg.embed_dim), ('mlp', 'embed')))
    return constrain(y, ('batch', 'length', 'embed'))


class Block(nn.Module):
  """Pre-norm decoder block: x + attn(norm(x)), then x + mlp(norm(x))."""
  config: TransformerConfig
  layer: int

  @nn.compact
  def __call__(self, x_BxLxD, positions_BxL, mask_BxLxS, cache, write_pos_BxL):
    cfg = self.config
    norm = lambda name: RMSNorm(cfg.norm_eps, cfg.norm_offset, cfg.compute_dtype,
                                cfg.params_dtype, name=name)
    attn_out, cache = Attention(cfg, name='attn')(norm('attn_norm')(x_BxLxD), positions_BxL,
                                                  mask_BxLxS, self.layer, cache, write_pos_BxL)
    x_BxLxD = x_BxLxD + attn_out
    x_BxLxD = x_BxLxD + MLP(cfg, name='mlp')(norm('mlp_norm')(x_BxLxD))
    return x_BxLxD, cache


def _train_mask(positions_BxL: Array | None, segment_ids_BxL: Array | None,
                length: int, batch: int) -> Array:
  """Causal by index, and within a segment when `segment_ids_BxL` is given."""
  del positions_BxL  # causality follows token order; positions only feed RoPE
  idx = jnp.arange(length)
  mask_LxL = idx[:, None] >= idx[None, :]
  mask_BxLxL = jnp.broadcast_to(mask_LxL, (batch, length, length))
  if segment_ids_BxL is not None:
    same = segment_ids_BxL[:, :, None] == segment_ids_BxL[:, None, :]
    mask_BxLxL = mask_BxLxL & same
  return mask_BxLxL


class Transformer(nn.Module):
  """Decoder-only Transformer; see the module docstring for the call contract."""
  config: TransformerConfig

  @nn.compact
  def __call__(self,
               tokens_BxL: Array,
               *,
               mode: Mode = Mode.TRAIN,
               positions_BxL: Array | None = None,
               segment_ids_BxL: Array | None = None,
               cache: KVCache | None = None,
               input_lengths_B: Array | None = None,
               last_only: bool = False) -> tuple[Array, KVCache | None]:
    """Runs the model.

    Args:
      tokens_BxL: int token ids.
      mode: `Mode.TRAIN`, `Mode.PREFILL` or `Mode.DECODE`.
      positions_BxL: TRAIN only; RoPE positions (default `0..L-1`; restart them
        per segment when packing).
      segment_ids_BxL: TRAIN only; tokens attend only to equal segment ids.
      cache: PREFILL/DECODE; the `KVCache` to extend.
      input_lengths_B: PREFILL/DECODE; real (non-padding) tokens per row,
        default L for every row.
      last_only: PREFILL only; project only each row's last real token to
        the vocabulary (logits `[B, 1, V]`): what sampling reads, without
        the `[B, L, V]` product of every other position.

    Returns:
      `(logits_BxLxV float32, new_cache)`; `new_cache` is None in TRAIN.
    """
    cfg = self.config
    batch, length = tokens_BxL.shape
    dt = cfg.compute_dtype
    if last_only and mode != Mode.PREFILL:
      raise ValueError(f'last_only is for Mode.PREFILL, got {mode}')

    if mode == Mode.TRAIN:
      if cache is not None:
        raise ValueError('Mode.TRAIN takes no cache')
      if positions_BxL is None:
        positions_BxL = jnp.broadcast_to(jnp.arange(length, dtype=jnp.int32), (batch, length))
      mask_BxLxS = _train_mask(positions_BxL, segment_ids_BxL, length, batch)
      write_pos_BxL = None
    else:
      if cache is None:
        raise ValueError(f'{mode} needs a cache (KVCache.init)')
      if mode == Mode.DECODE and length != 1:
        raise ValueError(f'Mode.DECODE takes one token per row, got L={length}')
      if input_lengths_B is None:
        input_lengths_B = jnp.full((batch,), length, jnp.int32)
      input_lengths_B = input_lengths_B.astype(jnp.int32)
      idx_L = jnp.arange(length, dtype=jnp.int32)
      positions_BxL = cache.lengths[:, None] + idx_L[None, :]
      real_BxL = idx_L[None, :] < input_lengths_B[:, None]
      # Padding writes go to max_len, an index `mode='drop'` discards.
      write_pos_BxL = jnp.where(real_BxL, positions_BxL, cache.max_len)
      key_pos_S = jnp.arange(cache.max_len, dtype=jnp.int32)
      if cache.recent is None:
        mask_BxLxS = key_pos_S[None, None, :] <= positions_BxL[:, :, None]
      else:
        if mode != Mode.DECODE:
          raise ValueError(f'{mode} with an open decode chunk (close_chunk first)')
        r = cache.recent
        # This step's slot records its position (max_len: padding or past the end).
        rows_B = jnp.arange(batch)
        positions_BxC = r.positions.at[rows_B, cache.lengths - r.start].set(
            write_pos_BxL[:, 0], mode='drop')
        cache = cache.replace(recent=r.replace(positions=positions_BxC))
        # The frozen layers hold what was cached before the chunk opened.
        mask_BxLxS = key_pos_S[None, None, :] < r.start[:, None, None]

    embedding = self.param(
        'embedding',
        nn.with_logical_partitioning(
            # Unit-variance rows after Gemma's scaling; ~unit tied logits without it.
            nn.initializers.normal(stddev=1.0 if cfg.scale_embeddings else cfg.embed_dim**-0.5),
            ('vocab', 'embed')),
        (cfg.vocab_size, cfg.embed_dim), cfg.params_dtype)
    x_BxLxD = jnp.take(embedding, tokens_BxL, axis=0).astype(dt)
    if cfg.scale_embeddings:
      # Hugging Face rounds the normalizer to the compute dtype first.
      x_BxLxD = x_BxLxD * jnp.asarray(math.sqrt(cfg.embed_dim), dt)
    x_BxLxD = constrain(x_BxLxD, ('batch', 'length', 'embed'))

    for i in range(cfg.num_layers):
      x_BxLxD, cache = Block(cfg, i, name=f'layers_{i}')(x_BxLxD, positions_BxL, mask_BxLxS,
                                                         cache, write_pos_BxL)

    if last_only:
      last_B = jnp.maximum(input_lengths_B - 1, 0)
      x_BxLxD = jnp.take_along_axis(x_BxLxD, last_B[:, None, None], axis=1)
    x_BxLxD = RMSNorm(cfg.norm_eps, cfg.norm_offset, dt, cfg.params_dtype,
                      name='final_norm')(x_BxLxD)
    if cfg.tie_embeddings:
      logits = jnp.einsum('bld,vd->blv', x_BxLxD, embedding.astype(dt))
    else:
      lm_head = self.param(
          'lm_head',
          nn.with_logical_partitioning(_dense_init(0, 1), ('embed', 'vocab')),
          (cfg.embed_dim, cfg.vocab_size), cfg.params_dtype)
      logits = jnp.einsum('bld,dv->blv', x_BxLxD, lm_head.astype(dt))
    logits = constrain(logits.astype(jnp.float32), ('batch', 'length', 'vocab'))

    if mode == Mode.TRAIN:
      return logits, None
    # Capped at max_len: writes past the end were dropped, not wrapped.
    cache = cache.replace(lengths=jnp.minimum(cache.lengths + input_lengths_B, cache.max_len))
    return logits, cache
