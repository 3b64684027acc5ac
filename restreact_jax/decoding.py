"""Model-agnostic sampling over `tokens_to_logits`, and the static-batch sampler.

The door to the model is one function,

  tokens_to_logits(tokens_BxL, cache, input_lengths_B) -> (logits_BxLxV, cache)

that extends `cache` with each row's first `input_lengths_B[b]` tokens (the rest
is right padding) and returns the logits at every input position. Decoding never
sees the model: tests drive it with stub logits, the engine with the
Transformer's PREFILL/DECODE modes.

Pieces, smallest first:

* sampling functions (`top_k_mask`, `top_p_mask`, `sample_logits`): temperature
  0 is greedy; masks are computed in sorted order and mapped back, so a row's
  draw does not depend on which filters other rows of the batch use;
* `RowParams`: per-row temperature, top-k, top-p, token budget, seed and sample
  index. Row keys are `fold_in(fold_in(PRNGKey(seed), sample_index), step)`, so
  a sample is the same whatever batch or slot it runs in;
* `DecodeState`, `cond_fn`, `body_fn`, `decode_loop`: a `lax.while_loop` that
  decodes up to `C` tokens per row and returns to the host, which checks stop
  strings (they span token boundaries, so they are matched on decoded text);
* `prefill`: right-padded prompts in one call, last-token logits per row;
* host helpers shared with the engine (`prepare`, `StopMatcher`,
  `make_sample`) and `StaticSampler`, the plain sampler: fixed batches, each
  decoded until its longest row ends.

Log-probs are `log_softmax` of the raw logits (unscaled by temperature, top-k or
top-p), as the LLM door requires. A request with a grammar (`grammar.py`)
decodes with the tokens that would leave it masked out; its log-probs are
those of the masked distribution.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Callable, Sequence

import flax.struct
import jax
import jax.numpy as jnp
import numpy as np

from restreact_jax import errors
from restreact_jax import grammar
from restreact_jax import llm

Array = jax.Array
TokensToLogits = Callable[[Array, Any, Array], tuple[Array, Any]]
ApplyFn = Callable[[Any, Array, Any, Array], tuple[Array, Any]]

FINISH_RUNNING = 0
FINISH_EOS = 1
FINISH_LENGTH = 2
FINISH_NAMES = {FINISH_EOS: 'eos', FINISH_LENGTH: 'length'}

DEFAULT_BUCKETS = (16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


def bucket_grid(low: int = 16, high: int = 8192, per_octave: int = 4) -> tuple[int, ...]:
  """Lengths from `low` to `high`, `per_octave` evenly spaced per doubling.

  The engine pads prompts to this grid (16, 20, 24, 28, 32, 40, ...): a
  prompt costs at most ~1/`per_octave` more than its length, where powers
  of two cost up to 2x, for `per_octave` times as many compiled shapes.
  """
  out, octave = set(), low
  while octave < high:
    out.update(octave + octave * i // per_octave for i in range(per_octave))
    octave *= 2
  return tuple(sorted(b for b in out | {high} if b <= high))


ENGINE_BUCKETS = bucket_grid()


# ----------------------------------------------------------------------------
# Sampling functions.
# ----------------------------------------------------------------------------


@flax.struct.dataclass
class RowParams:
  """Per-row sampling settings, all `[B]` arrays.

  Attributes:
    temperature: float32; 0 is greedy.
    top_k: int32; 0 keeps every token.
    top_p: float32 in (0, 1]; 1 keeps every token.
    max_new: int32 token budget (already capped by the context).
    seed: uint32 request seed.
    sample_index: int32 index of the sample within its request.
  """
  temperature: Array
  top_k: Array
  top_p: Array
  max_new: Array
  seed: Array
  sample_index: Array

  @classmethod
  def from_lists(cls, temperature, top_k, top_p, max_new, seed, sample_index) -> 'RowParams':
    """Builds the arrays from host lists (seeds wrapped to 32 bits)."""
    return cls(temperature=jnp.asarray(np.asarray(temperature, np.float32)),
               top_k=jnp.asarray(np.asarray(top_k, np.int32)),
               top_p=jnp.asarray(np.asarray(top_p, np.float32)),
               max_new=jnp.asarray(np.asarray(max_new, np.int32)),
               seed=jnp.asarray(np.asarray([s % 2**32 for s in seed], np.uint32)),
               sample_index=jnp.asarray(np.asarray(sample_index, np.int32)))


SampleFn = Callable[[Array, Array, RowParams], Array]


def row_keys(seed_B: Array, sample_index_B: Array, step_B: Array) -> Array:
  """PRNG keys `[B, 2]` from (seed, sample index, token index) alone."""

  def one(seed, index, step):
    key = jax.random.PRNGKey(seed)
    return jax.random.fold_in(jax.random.fold_in(key, index), step)

  return jax.vmap(one)(seed_B, sample_index_B, step_B)


def top_k_mask(sorted_logits_BxV: Array, top_k_B: Array) -> Array:
  """Keeps the `k` first entries of each descending-sorted row (k=0: all)."""
  rank_1xV = jnp.arange(sorted_logits_BxV.shape[-1])[None, :]
  return (top_k_B[:, None] <= 0) | (rank_1xV < top_k_B[:, None])


def top_p_mask(sorted_logits_BxV: Array, top_p_B: Array) -> Array:
  """Keeps the smallest descending prefix whose probability mass reaches `p`.

  A token is kept when the mass strictly before it is below `p`, so the most
  likely token always survives; `p >= 1` keeps everything (no rounding loss).
  """
  probs_BxV = jax.nn.softmax(sorted_logits_BxV, axis=-1)
  mass_before_BxV = jnp.cumsum(probs_BxV, axis=-1) - probs_BxV
  return (top_p_B[:, None] >= 1.0) | (mass_before_BxV < top_p_B[:, None])


def filter_logits(scaled_BxV: Array, top_k_B: Array, top_p_B: Array) -> Array:
  """Sets tokens outside top-k, then outside top-p (of what is left), to -inf.

  The order is Hugging Face's: temperature, top-k, top-p (renormalized after
  top-k). Masks are built on the sorted row and scattered back, so ties at the
  k-th value keep exactly k tokens and the original token order is preserved.
  """
  order_BxV = jnp.argsort(-scaled_BxV, axis=-1, stable=True)
  sorted_BxV = jnp.take_along_axis(scaled_BxV, order_BxV, axis=-1)
  keep_BxV = top_k_mask(sorted_BxV, top_k_B)
  sorted_BxV = jnp.where(keep_BxV, sorted_BxV, -jnp.inf)
  keep_BxV &= top_p_mask(sorted_BxV, top_p_B)
  keep_orig_BxV = jax.vmap(lambda order, keep: jnp.zeros_like(keep).at[order].set(keep))(
      order_BxV, keep_BxV)
  return jnp.where(keep_orig_BxV, scaled_BxV, -jnp.inf)


def sample_logits(logits_BxV: Array, keys_Bx2: Array, params: RowParams) -> Array:
  """Draws one token per row: greedy rows take the argmax, others sample.

  Each row's draw depends only on its logits, key and settings: filtering is
  skipped for the whole batch only when no row asks for it, and filtering with
  k=0, p=1 leaves a row's logits unchanged.
  """
  logits_BxV = logits_BxV.astype(jnp.float32)
  greedy_B = params.temperature <= 0.0
  temperature_B = jnp.where(greedy_B, 1.0, params.temperature)
  scaled_BxV = logits_BxV / temperature_B[:, None]
  needs_filter = jnp.any((params.top_k > 0) | (params.top_p < 1.0))
  scaled_BxV = jax.lax.cond(needs_filter,
                            lambda x: filter_logits(x, params.top_k, params.top_p),
                            lambda x: x, scaled_BxV)
  argmax_B = jnp.argmax(logits_BxV, axis=-1).astype(jnp.int32)
  sampled_B = jax.lax.cond(
      jnp.all(greedy_B), lambda: argmax_B,
      lambda: jax.vmap(jax.random.categorical)(keys_Bx2, scaled_BxV).astype(jnp.int32))
  return jnp.where(greedy_B, argmax_B, sampled_B)


# ----------------------------------------------------------------------------
# The decode loop.
# ----------------------------------------------------------------------------


@flax.struct.dataclass
class DecodeState:
  """What the decode loop carries.

  Attributes:
    cache: the model's cache (opaque to decoding).
    logits_BxV: each row's logits for its next token.
    params: per-row sampling settings.
    num_generated_B: tokens kept so far per row (EOS is not kept).
    done_B: the row needs no more tokens.
    finish_B: FINISH_* code once done on device (stop strings are the host's).
    step: loop steps taken in the current chunk.
    tokens_BxC: tokens kept in this chunk, row b's i-th at column i.
    logprobs_BxC: their unscaled log-probs.
    grammar_B: each row's grammar state (a row of the token table;
      `grammar.FREE` for rows without a grammar).
  """
  cache: Any
  logits_BxV: Array
  params: RowParams
  num_generated_B: Array
  done_B: Array
  finish_B: Array
  step: Array
  tokens_BxC: Array
  logprobs_BxC: Array
  grammar_B: Array


def init_state(cache: Any, logits_BxV: Array, params: RowParams, done_B: Array,
               chunk: int, grammar_B: Array | None = None) -> DecodeState:
  """A fresh state after prefill; rows with `done_B` never decode."""
  batch = logits_BxV.shape[0]
  if grammar_B is None:
    grammar_B = jnp.full((batch,), grammar.FREE, jnp.int32)
  return DecodeState(cache=cache,
                     logits_BxV=logits_BxV.astype(jnp.float32),
                     params=params,
                     num_generated_B=jnp.zeros((batch,), jnp.int32),
                     done_B=jnp.asarray(done_B, bool),
                     finish_B=jnp.where(jnp.asarray(done_B, bool), FINISH_LENGTH,
                                        FINISH_RUNNING).astype(jnp.int32),
                     step=jnp.zeros((), jnp.int32),
                     tokens_BxC=jnp.zeros((batch, chunk), jnp.int32),
                     logprobs_BxC=jnp.zeros((batch, chunk), jnp.float32),
                     grammar_B=jnp.asarray(grammar_B, jnp.int32))


def cond_fn(state: DecodeState) -> Array:
  """Continue while the chunk has room and some row is still running."""
  return (state.step < state.tokens_BxC.shape[1]) & ~jnp.all(state.done_B)


def mask_logits(logits_BxV: Array, grammar_B: Array, table_SxV: Array) -> Array:
  """Sets the tokens that would leave each row's grammar state to -inf."""
  allowed_BxV = jnp.take(table_SxV, grammar_B, axis=0) >= 0
  return jnp.where(allowed_BxV, logits_BxV, -jnp.inf)


def body_fn(state: DecodeState, *, tokens_to_logits: TokensToLogits, sample_fn: SampleFn,
            eos_id: int, table_SxV: Array | None = None) -> DecodeState:
  """Samples one token per running row and feeds it to the model."""
  running_B = ~state.done_B
  keys_Bx2 = row_keys(state.params.seed, state.params.sample_index, state.num_generated_B)
  logits_BxV = state.logits_BxV
  if table_SxV is not None:
    logits_BxV = jax.lax.cond(jnp.any(state.grammar_B != grammar.FREE),
                              lambda x: mask_logits(x, state.grammar_B, table_SxV),
                              lambda x: x, logits_BxV)
  token_B = sample_fn(logits_BxV, keys_Bx2, state.params)
  logprob_B = jnp.take_along_axis(jax.nn.log_softmax(logits_BxV, axis=-1),
                                  token_B[:, None], axis=-1)[:, 0]
  is_eos_B = running_B & (token_B == eos_id)
  keep_B = running_B & ~is_eos_B
  tokens_BxC = jax.lax.dynamic_update_slice(
      state.tokens_BxC, jnp.where(keep_B, token_B, 0)[:, None], (0, state.step))
  logprobs_BxC = jax.lax.dynamic_update_slice(
      state.logprobs_BxC, jnp.where(keep_B, logprob_B, 0.0)[:, None], (0, state.step))
  num_generated_B = state.num_generated_B + keep_B.astype(jnp.int32)
  out_of_budget_B = keep_B & (num_generated_B >= state.params.max_new)
  finish_B = jnp.where(is_eos_B, FINISH_EOS,
                       jnp.where(out_of_budget_B, FINISH_LENGTH, state.finish_B))
  done_B = state.done_B | is_eos_B | out_of_budget_B
  grammar_B = state.grammar_B
  if table_SxV is not None:
    # Sampled tokens are allowed ones; the clamp only guards the table's -1.
    grammar_B = jnp.where(keep_B, jnp.maximum(table_SxV[grammar_B, token_B], grammar.FREE),
                          grammar_B)
  # Only rows that go on need their token in the cache; the others write nothing.
  logits_Bx1xV, cache = tokens_to_logits(token_B[:, None], state.cache,
                                         (~done_B).astype(jnp.int32))
  logits_BxV = jnp.where(done_B[:, None], state.logits_BxV,
                         logits_Bx1xV[:, 0].astype(jnp.float32))
  return state.replace(cache=cache, logits_BxV=logits_BxV, num_generated_B=num_generated_B,
                       done_B=done_B, finish_B=finish_B, step=state.step + 1,
                       tokens_BxC=tokens_BxC, logprobs_BxC=logprobs_BxC, grammar_B=grammar_B)


def decode_loop(tokens_to_logits: TokensToLogits, state: DecodeState, *,
                 sample_fn: SampleFn = sample_logits, eos_id: int = 1,
                 table_SxV: Array | None = None) -> DecodeState:
  """Decodes up to `C` (the chunk buffer width) tokens per running row.

  Args:
    tokens_to_logits: the model door.
    state: the loop state; its chunk buffers are overwritten.
    sample_fn: draws tokens from logits (`sample_logits` by default).
    eos_id: the end-of-sequence token.
    table_SxV: the grammar token table (`grammar.TokenTables.table`); None
      decodes without grammars.

  Returns:
    The state after the chunk; `tokens_BxC[b, :n]` holds row b's new tokens,
    where n is the growth of `num_generated_B[b]`.

  A cache with `open_chunk` / `close_chunk` (`transformer.KVCache`) keeps the
  chunk's keys and values apart while the loop runs and takes them in once
  after it (the big cache is only read inside the loop).
  """
  body = functools.partial(body_fn, tokens_to_logits=tokens_to_logits, sample_fn=sample_fn,
                           eos_id=eos_id, table_SxV=table_SxV)
  chunked = hasattr(state.cache, 'open_chunk')
  cache = state.cache.open_chunk(state.tokens_BxC.shape[1]) if chunked else state.cache
  state = jax.lax.while_loop(cond_fn, body, state.replace(cache=cache,
                                                          step=jnp.zeros((), jnp.int32)))
  return state.replace(cache=state.cache.close_chunk()) if chunked else state


def prefill(tokens_to_logits: TokensToLogits, tokens_BxL: Array, lengths_B: Array,
            cache: Any) -> tuple[Array, Any]:
  """Feeds right-padded prompts; returns each row's last-token logits and the cache.

  `tokens_to_logits` may return every position's logits `[B, L, V]` or only
  each row's last `[B, 1, V]` (`Transformer(..., last_only=True)`). Rows of
  length 0 (batch padding) return meaningless logits and cache nothing.
  """
  logits_BxLxV, cache = tokens_to_logits(tokens_BxL, cache, lengths_B)
  if logits_BxLxV.shape[1] == 1:  # already each row's last
    return logits_BxLxV[:, 0].astype(jnp.float32), cache
  last_B = jnp.maximum(lengths_B - 1, 0)
  logits_BxV = jnp.take_along_axis(logits_BxLxV, last_B[:, None, None], axis=1)[:, 0]
  return logits_BxV.astype(jnp.float32), cache


# ----------------------------------------------------------------------------
# Host side: requests to rows, stop strings, samples.
# ----------------------------------------------------------------------------


def bucket(n: int, buckets: Sequence[int]) -> int:
  """The smallest bucket >= n (n itself past the largest)."""
  for b in sorted(buckets):
    if b >= n:
      return b
  return n


def batch_bucket(n: int) -> int:
  """Batch sizes round up to a power of two, so few shapes are compiled."""
  return 1 << max(0, math.ceil(math.log2(max(n, 1))))


@dataclasses.dataclass(frozen=True)
class Prepared:
  """A validated, tokenized request.

  Attributes:
    request: the original request.
    prefix_tokens: tokens of the shared prefix (BOS included), possibly empty.
    tokens: the whole prompt's tokens: `prefix_tokens` + the rest.
    max_new: token budget per sample, capped so prompt + new fit the context.
    grammar_start: the grammar state its samples start in (`grammar.FREE`
      without a grammar).
  """
  request: llm.SamplingRequest
  prefix_tokens: tuple[int, ...]
  tokens: tuple[int, ...]
  max_new: int
  grammar_start: int = grammar.FREE


def prepare(vocab: Any, request: llm.SamplingRequest, *, max_len: int,
            bos_id: int | None = 0, truncate: bool = False, where: str = 'request',
            tables: grammar.TokenTables | None = None) -> Prepared:
  """Validates and tokenizes one request.

  The prompt is tokenized as `[bos] + encode(prefix) + encode(rest)`, always,
  so reusing a prefix's cache can never change the tokens a model sees. BOS
  defaults to id 0, the token seqio's decoder feature converter puts before
  every training sequence; an empty prompt is just BOS. A `response_prefix`
  follows as `encode(response_prefix)`: a target is tokenized apart from its
  inputs in training, so the model sees the tokens a target starts with.

  Args:
    vocab: a `seqio.Vocabulary` (anything with `encode`).
    request: the request.
    max_len: the context length (cache positions per row).
    bos_id: token put first; None for none (an empty prompt then gets id 0).
    truncate: cut prompts that leave no room for `max_tokens` from the left
      (dropping the prefix reuse); otherwise a prompt of `max_len` tokens or
      more is a `UserError`.
    where: names the request in error messages.
    tables: compiles the request's grammar; a request with a grammar and no
      tables is a `UserError`.

  Returns:
    The prepared request.
  """
  try:
    request.validate()
  except errors.UserError as e:
    raise errors.UserError(f'{where}: {e}') from None
  start = grammar.FREE
  if request.grammar is not None:
    if tables is None:
      raise errors.UserError(f'{where}: this sampler does not decode with a grammar')
    start = tables.start(request.grammar, request.response_prefix, where)
  head = [] if bos_id is None else [bos_id]
  prefix = head + list(vocab.encode(request.prefix)) if request.prefix else head
  tokens = prefix + list(vocab.encode(request.prompt[len(request.prefix):]))
  if request.response_prefix:
    tokens += list(vocab.encode(request.response_prefix))
  if not tokens:
    tokens = [0]
  if len(prefix) <= 1:
    prefix = []  # nothing worth sharing
  if truncate and len(tokens) + request.max_tokens > max_len:
    keep = max(1, max_len - max(request.max_tokens, 1))
    if len(tokens) > keep:
      tokens, prefix = tokens[-keep:], []
  if len(tokens) >= max_len:
    raise errors.UserError(
        f'{where}: prompt is {len(tokens)} tokens, the context holds {max_len} '
        f'(leave room for new tokens, shorten the prompt, or enable left-truncation)')
  max_new = min(request.max_tokens, max_len - len(tokens))
  return Prepared(request=request, prefix_tokens=tuple(prefix), tokens=tuple(tokens),
                  max_new=max_new, grammar_start=start)


class StopMatcher:
  """Finds stop strings in a row's generated text, across token boundaries.

  Text is decoded from all generated tokens (a stop may begin inside one token
  and end in another, and SentencePiece decodes by context), and the first
  token at which the decoded text contains a stop is located by scanning only
  the tokens new since the last check.
  """

  def __init__(self, decode: Callable[[Sequence[int]], str]):
    self._decode = decode

  def find(self, tokens: Sequence[int], stops: Sequence[str],
           first_new: int) -> tuple[int, str] | None:
    """Returns `(tokens_kept, text_before_stop)` if a stop occurs, else None.

    Args:
      tokens: all tokens generated so far for the row.
      stops: the stop strings.
      first_new: how many of `tokens` were already checked without a match.
    """
    stops = [s for s in stops if s]
    if not stops or not tokens:
      return None
    if _first_stop(self._decode(tokens), stops) is None:
      return None
    for end in range(max(first_new, 1), len(tokens) + 1):
      text = self._decode(tokens[:end])
      pos = _first_stop(text, stops)
      if pos is not None:
        return end, text[:pos]
    return None  # decoding was not prefix-stable; treat as no stop yet


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
  positions = [p for p in (text.find(s) for s in stops) if p >= 0]
  return min(positions) if positions else None


def make_sample(decode: Callable[[Sequence[int]], str], tokens: Sequence[int],
                logprobs: Sequence[float], finish: str, text: str | None = None,
                response_prefix: str = '') -> llm.Sample:
  """A `Sample` from a finished row (text decoded unless already cut at a stop).

  The request's `response_prefix` was fed to the model, not generated: the
  text starts with it, the tokens and logprobs are the generated ones only.
  """
  if text is None:
    text = decode(tokens)
  return llm.Sample(text=response_prefix + text, tokens=tuple(int(t) for t in tokens),
                    logprobs=tuple(float(x) for x in logprobs), finish_reason=finish)


@dataclasses.dataclass
class RowProgress:
  """Host record of one sample being decoded."""
  request_index: int
  sample_index: int
  prepared: Prepared
  tokens: list[int] = dataclasses.field(default_factory=list)
  logprobs: list[float] = dataclasses.field(default_factory=list)
  result: llm.Sample | None = None

  def absorb(self, new_tokens: np.ndarray, new_logprobs: np.ndarray, device_finish: int,
             stops: StopMatcher, decode: Callable[[Sequence[int]], str]) -> bool:
    """Adds a chunk's tokens; returns True once the sample is finished."""
    checked = len(self.tokens)
    self.tokens.extend(int(t) for t in new_tokens)
    self.logprobs.extend(float(x) for x in new_logprobs)
    hit = stops.find(self.tokens, self.prepared.request.stop, checked)
    if hit is not None:
      end, text = hit
      self.result = make_sample(decode, self.tokens[:end], self.logprobs[:end], 'stop', text,
                                self.prepared.request.response_prefix)
    elif device_finish != FINISH_RUNNING:
      self.result = make_sample(decode, self.tokens, self.logprobs, FINISH_NAMES[device_finish],
                                response_prefix=self.prepared.request.response_prefix)
    return self.result is not None


def row_params(rows: Sequence[RowProgress], batch: int) -> RowParams:
  """Stacks rows' settings, padding to `batch` rows (padding rows never run)."""
  pad = batch - len(rows)
  reqs = [r.prepared.request for r in rows]
  return RowParams.from_lists(
      temperature=[q.temperature for q in reqs] + [0.0] * pad,
      top_k=[q.top_k for q in reqs] + [0] * pad,
      top_p=[q.top_p for q in reqs] + [1.0] * pad,
      max_new=[r.prepared.max_new for r in rows] + [0] * pad,
      seed=[q.seed for q in reqs] + [0] * pad,
      sample_index=[r.sample_index for r in rows] + [0] * pad)


def expand(prepared: Sequence[Prepared]) -> list[RowProgress]:
  """One row per sample, in request order then sample order."""
  return [RowProgress(i, j, p) for i, p in enumerate(prepared) for j in range(p.request.n)]


def finish_zero_budget(row: RowProgress, decode) -> bool:
  """Rows with no token budget finish at once with 'length'."""
  if row.prepared.max_new <= 0:
    row.result = make_sample(decode, [], [], 'length',
                             response_prefix=row.prepared.request.response_prefix)
    return True
  return False


# ----------------------------------------------------------------------------
# The plain sampler.
# ----------------------------------------------------------------------------


class StaticSampler:
  """Static batching: rows in fixed batches, each decoded until all its rows end.

  The reference the engine is tested against, and the baseline of the
  continuous-batching benchmark.

  Args:
    apply_fn: `apply_fn(params, tokens_BxL, cache, input_lengths_B) -> (logits, cache)`;
      with params bound it is `tokens_to_logits`.
    init_cache: `init_cache(batch, max_len)` makes an empty cache.
    vocab: a `seqio.Vocabulary`.
    max_len: context length.
    batch_size: rows per static batch.
    decode_chunk: tokens decoded per host round-trip (stop strings are checked
      between chunks).
    prefill_buckets: prompt lengths are padded up to one of these.
    eos_id: end-of-sequence id (the vocabulary's by default).
    bos_id: see `prepare`.
    truncate: see `prepare`.
    sample_fn: the sampling function.
  """

  def __init__(self, apply_fn: ApplyFn, init_cache: Callable[[int, int], Any], vocab: Any, *,
               max_len: int, batch_size: int = 8, decode_chunk: int = 16,
               prefill_buckets: Sequence[int] = DEFAULT_BUCKETS, eos_id: int | None = None,
               bos_id: int | None = 0, truncate: bool = False,
               sample_fn: SampleFn = sample_logits):
    self.vocab = vocab
    self.max_len = max_len
    self.batch_size = batch_size
    self.decode_chunk = decode_chunk
    self.buckets = tuple(b for b in prefill_buckets if b <= max_len) + (max_len,)
    self.eos_id = vocab.eos_id if eos_id is None else eos_id
    self.bos_id = bos_id
    self.truncate = truncate
    self._init_cache = init_cache
    self._stops = StopMatcher(vocab.decode)
    self._tables: grammar.TokenTables | None = None

    def _prefill(params, tokens_BxL, lengths_B, cache):
      return prefill(functools.partial(apply_fn, params), tokens_BxL, lengths_B, cache)

    def _decode(params, state, table_SxV):
      return decode_loop(functools.partial(apply_fn, params), state, sample_fn=sample_fn,
                          eos_id=self.eos_id, table_SxV=table_SxV)

    self._prefill = jax.jit(_prefill, donate_argnums=3)
    self._decode = jax.jit(_decode, donate_argnums=1)

  def generate(self, params: Any,
               requests: Sequence[llm.SamplingRequest]) -> list[list[llm.Sample]]:
    """Returns each request's `n` samples, in order.

    Args:
      params: passed to `apply_fn` (e.g. the model's parameters).
      requests: the requests.
    """
    if self._tables is None and any(r.grammar is not None for r in requests):
      self._tables = grammar.TokenTables(grammar.token_texts(self.vocab))
    prepared = [prepare(self.vocab, r, max_len=self.max_len, bos_id=self.bos_id,
                        truncate=self.truncate, where=f'request {i}', tables=self._tables)
                for i, r in enumerate(requests)]
    rows = [r for r in expand(prepared) if not finish_zero_budget(r, self.vocab.decode)]
    for start in range(0, len(rows), self.batch_size):
      self._run_batch(params, rows[start:start + self.batch_size])
    out: list[list[llm.Sample]] = [[None] * p.request.n for p in prepared]  # type: ignore
    for row in expand_results(prepared, rows, self.vocab.decode):
      out[row.request_index][row.sample_index] = row.result
    return out

  def _run_batch(self, params: Any, rows: list[RowProgress]) -> None:
    batch = batch_bucket(len(rows))
    length = bucket(max(len(r.prepared.tokens) for r in rows), self.buckets)
    tokens_BxL = np.zeros((batch, length), np.int32)
    lengths_B = np.zeros((batch,), np.int32)
    for b, row in enumerate(rows):
      tokens_BxL[b, :len(row.prepared.tokens)] = row.prepared.tokens
      lengths_B[b] = len(row.prepared.tokens)
    logits_BxV, cache = self._prefill(params, jnp.asarray(tokens_BxL), jnp.asarray(lengths_B),
                                      self._init_cache(batch, self.max_len))
    done = np.arange(batch) >= len(rows)
    starts = [r.prepared.grammar_start for r in rows] + [grammar.FREE] * (batch - len(rows))
    state = init_state(cache, logits_BxV, row_params(rows, batch), jnp.asarray(done),
                       self.decode_chunk, jnp.asarray(np.asarray(starts, np.int32)))
    table = None if self._tables is None else jnp.asarray(
        self._tables.table(logits_BxV.shape[-1]))
    while not done.all():
      before = np.asarray(state.num_generated_B)
      state = self._decode(params, state, table)
      after, finish, toks, lps = jax.device_get(
          (state.num_generated_B, state.finish_B, state.tokens_BxC, state.logprobs_BxC))
      for b, row in enumerate(rows):
        if done[b]:
          continue
        n = after[b] - before[b]
        done[b] = row.absorb(toks[b, :n], lps[b, :n], int(finish[b]), self._stops,
                             self.vocab.decode)
      if done.all():
        break
      # Rows ended by a stop string keep running on device otherwise.
      state = state.replace(done_B=jnp.asarray(done))


def expand_results(prepared: Sequence[Prepared], decoded: Sequence[RowProgress],
                   decode) -> list[RowProgress]:
  """All rows of `prepared`, the decoded ones and the zero-budget ones."""
  by_key = {(r.request_index, r.sample_index): r for r in decoded}
  rows = expand(prepared)
  for i, row in enumerate(rows):
    if (row.request_index, row.sample_index) in by_key:
      rows[i] = by_key[(row.request_index, row.sample_index)]
    else:
      finish_zero_budget(row, decode)
  return rows
