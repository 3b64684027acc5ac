"""The continuous-batching sampler: decode slots, refills, shared prefixes.

`Engine` implements the `LLM` door (`generate`) and the DESIGN door
(`submit` / `run`). A fixed number of decode slots share one slot-indexed
`KVCache`. The host loop alternates:

1. *fill*: free slots take waiting samples. Each new request's prompt is
   prefilled once into a small cache, and copied into as many slots as it has
   samples waiting; with `SamplingRequest.prefix` the prefix's keys and values
   come from a prefix pool (prefilled once per distinct prefix) and only the
   rest of the prompt is prefilled. A fill's prompts go shortest first in
   batches of powers of two (7 prompts: 4, 2, 1), each padded to the next
   length of `decoding.ENGINE_BUCKETS` (four per octave): on the demo's test
   rollouts a third fewer prefill tokens than one batch padded to a power of two;
2. *decode*: `decoding.decode_loop` runs up to `decode_chunk` steps for all
   slots at once; the host then reads the new tokens, checks stop strings,
   finishes samples and frees their slots.

`run` (and `generate`) repeat the two until nothing is left; `step` does one
turn, for a caller that submits requests between turns (`submit`, the rollout
pool: an agent's next request joins as soon as its samples are back).

A sample's tokens depend only on its request, seed and sample index (row keys
are `fold_in(fold_in(PRNGKey(seed), sample_index), step)`), so the engine's
output equals `decoding.StaticSampler`'s for the same requests, whatever slot
or batch a sample lands in, and prefix reuse changes nothing: prompts are
always tokenized as `[BOS] + encode(prefix) + encode(rest)`.

On a mesh, slots are sharded over `data` and heads / MLP / vocab over `model`
through `partitioning` and `KVCache.logical_axes()`; without one everything
runs on the default device.

Prompts that do not fit the context are a `UserError`, or are cut from the left
when the engine is built with `truncate_prompts=True`.

A request's `grammar` is compiled once per distinct pattern into the engine's
token table (`grammar.TokenTables`); each slot carries its grammar state on
device and decodes with the tokens that would leave the pattern masked. The
table is an argument of the decode step, padded to a power of two rows, so a
new pattern recompiles the step only when the table outgrows its padding.
"""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import functools
import threading
import time
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import tqdm

from restreact_jax import decoding
from restreact_jax import grammar
from restreact_jax import llm
from restreact_jax import partitioning
from restreact_jax.models import configs
from restreact_jax.models import transformer

Array = jax.Array
KVCache = transformer.KVCache


@dataclasses.dataclass
class EngineStats:
  """Counters since the engine was built (or `reset_stats`).

  Attributes:
    samples: finished samples.
    tokens: generated tokens kept in samples.
    slot_steps: decode steps times slots (the work paid for).
    useful_slot_steps: slot-steps that produced a kept token or an EOS.
    prefill_tokens: prompt tokens prefilled (prefix pool included).
    reused_prefix_tokens: prompt tokens whose keys/values came from the pool.
    prefill_s: host seconds spent prefilling and inserting rows.
    decode_s: host seconds spent in decode chunks.
  """
  samples: int = 0
  tokens: int = 0
  slot_steps: int = 0
  useful_slot_steps: int = 0
  prefill_tokens: int = 0
  reused_prefix_tokens: int = 0
  prefill_s: float = 0.0
  decode_s: float = 0.0

  @property
  def slot_occupancy(self) -> float:
    """Fraction of slot-steps that did useful work."""
    return self.useful_slot_steps / self.slot_steps if self.slot_steps else 0.0

  @property
  def tokens_per_s(self) -> float:
    busy = self.prefill_s + self.decode_s
    return self.tokens / busy if busy else 0.0

  def as_dict(self) -> dict[str, float]:
    out = dataclasses.asdict(self)
    out.update(slot_occupancy=self.slot_occupancy, tokens_per_s=self.tokens_per_s)
    return out


@dataclasses.dataclass
class _Work:
  """A submitted request: its samples, the future, and its prefilled prompt."""
  prepared: decoding.Prepared
  future: concurrent.futures.Future
  rows: list[decoding.RowProgress]
  remaining: int
  prefilled: tuple[Any, Array, int] | None = None  # (cache, logits_BxV, row)
  placed: int = 0


def _batch_axis(names: Sequence[str | None]) -> int:
  return list(names).index('cache_batch')


def _copy_rows(dst_cache: Any, src_cache: Any, src_K: Array, dst_K: Array) -> Any:
  """Copies cache rows `src_K` of `src_cache` into rows `dst_K` of `dst_cache`.

  Destinations past the end (batch padding) are dropped.
  """

  def one(dst, src, names):
    axis = _batch_axis(names)
    rows = jnp.take(src, src_K, axis=axis)
    index = (slice(None),) * axis + (dst_K,)
    return dst.at[index].set(rows, mode='drop')

  return jax.tree.map(one, dst_cache, src_cache, KVCache.logical_axes())


def _gather_rows(cache: Any, rows_K: Array, keep_length_K: Array) -> Any:
  """A cache of rows `rows_K` of `cache`; lengths zeroed where not `keep_length_K`."""

  def one(leaf, names):
    return jnp.take(leaf, rows_K, axis=_batch_axis(names))

  out = jax.tree.map(one, cache, KVCache.logical_axes())
  return out.replace(lengths=jnp.where(keep_length_K, out.lengths, 0))


def _insert(state: decoding.DecodeState, cache: Any, logits_BxV: Array, src_K: Array,
            dst_K: Array, params: decoding.RowParams, grammar_K: Array) -> decoding.DecodeState:
  """Starts new samples: rows `src_K` of a prefilled cache go to slots `dst_K`."""
  put = lambda old, new: old.at[dst_K].set(new, mode='drop')
  k = dst_K.shape[0]
  return state.replace(
      cache=_copy_rows(state.cache, cache, src_K, dst_K),
      logits_BxV=put(state.logits_BxV, jnp.take(logits_BxV, src_K, axis=0)),
      params=jax.tree.map(put, state.params, params),
      num_generated_B=put(state.num_generated_B, jnp.zeros((k,), jnp.int32)),
      done_B=put(state.done_B, jnp.zeros((k,), bool)),
      finish_B=put(state.finish_B, jnp.zeros((k,), jnp.int32)),
      grammar_B=put(state.grammar_B, grammar_K))


def apply_model(config: configs.TransformerConfig, params: Any, tokens_BxL: Array, cache: Any,
                lengths_B: Array) -> tuple[Array, Any]:
  """`tokens_to_logits` of the Transformer with `params`: DECODE for L=1, else
  PREFILL returning only each row's last logits."""
  mode = transformer.Mode.DECODE if tokens_BxL.shape[1] == 1 else transformer.Mode.PREFILL
  return transformer.Transformer(config).apply({'params': params}, tokens_BxL, mode=mode,
                                               cache=cache, input_lengths_B=lengths_B,
                                               last_only=mode == transformer.Mode.PREFILL)


def state_shardings(state: Any, mesh: Any, rules: partitioning.Rules) -> Any:
  """Shardings of a `DecodeState`: rows over `data`, cache heads and vocab over `model`."""
  rows = ('batch',)
  names = decoding.DecodeState(
      cache=KVCache.logical_axes(), logits_BxV=('batch', 'vocab'),
      params=decoding.RowParams(*([rows] * 6)), num_generated_B=rows, done_B=rows,
      finish_B=rows, step=(), tokens_BxC=('batch', None), logprobs_BxC=('batch', None),
      grammar_B=rows)
  return partitioning.tree_shardings(state, names, mesh, rules)


def abstract_state(config: configs.TransformerConfig, num_slots: int, max_len: int,
                   chunk: int) -> Any:
  """Shapes of the engine's decode state."""
  params = decoding.RowParams(*([jax.ShapeDtypeStruct((num_slots,), jnp.int32)] * 6))
  return jax.eval_shape(lambda p: decoding.init_state(
      KVCache.init(config, num_slots, max_len),
      jnp.zeros((num_slots, config.vocab_size)), p, jnp.ones((num_slots,), bool), chunk), params)


@functools.lru_cache(maxsize=16)
def _compiled_steps(config, max_len, num_slots, chunk, pool_size, mesh, rules, sample_fn,
                    eos_id):
  """The engine's jitted steps, shared by engines of the same settings."""
  apply = functools.partial(apply_model, config)

  def prefill_fresh(params, tokens_BxL, lengths_B):
    cache = KVCache.init(config, tokens_BxL.shape[0], max_len)
    return decoding.prefill(functools.partial(apply, params), tokens_BxL, lengths_B, cache)

  def prefill_on_pool(params, pool, rows_B, use_B, tokens_BxL, lengths_B):
    cache = _gather_rows(pool, rows_B, use_B)
    return decoding.prefill(functools.partial(apply, params), tokens_BxL, lengths_B, cache)

  def decode(params, state, stop_B, table_SxV):
    state = state.replace(done_B=state.done_B | stop_B)
    return decoding.decode_loop(functools.partial(apply, params), state, sample_fn=sample_fn,
                                eos_id=eos_id, table_SxV=table_SxV)

  state_out = pool_out = None
  if mesh is not None:
    state_out = state_shardings(abstract_state(config, num_slots, max_len, chunk), mesh, rules)
    pool_out = partitioning.tree_shardings(
        jax.eval_shape(lambda: KVCache.init(config, pool_size, max_len)),
        KVCache.logical_axes(), mesh, rules)
  return (jax.jit(prefill_fresh), jax.jit(prefill_on_pool),
          jax.jit(decode, donate_argnums=1, out_shardings=state_out),
          jax.jit(_insert, donate_argnums=0, out_shardings=state_out),
          jax.jit(_copy_rows, donate_argnums=0, out_shardings=pool_out))


class Engine:
  """Continuous batching over a fixed number of decode slots.

  Args:
    config: the model's architecture.
    params: its parameters (an unboxed tree; placed on `mesh` when given).
    vocab: a `seqio.Vocabulary` (PAD=0, EOS=1).
    num_slots: concurrent samples being decoded.
    max_len: context length per slot (default `config.max_len`).
    mesh: a `('data', 'model')` mesh; None runs on the default device.
    rules: logical-axis rules (default `partitioning.logical_axis_rules()`).
    prefill_buckets: prompt (suffix) lengths are padded up to one of these.
    decode_chunk: tokens decoded per host round-trip. Larger chunks cost less
      host time; smaller ones refill finished slots sooner.
    max_prefill_batch: prompts prefilled per call.
    prefix_pool_size: distinct shared prefixes kept (least recently used out).
    reuse_prefixes: use `SamplingRequest.prefix` to skip prefilling it again.
    truncate_prompts: cut over-long prompts from the left instead of raising.
    bos_id: see `decoding.prepare`.
    eos_id: end of sequence (the vocabulary's by default).
    sample_fn: the sampling function.
    progress: show a tqdm bar of finished samples while running.
  """

  def __init__(self, config: configs.TransformerConfig, params: Any, vocab: Any, *,
               num_slots: int = 8, max_len: int | None = None, mesh: Any = None,
               rules: partitioning.Rules | None = None,
               prefill_buckets: Sequence[int] = decoding.ENGINE_BUCKETS,
               decode_chunk: int = 8, max_prefill_batch: int = 8, prefix_pool_size: int = 8,
               reuse_prefixes: bool = True, truncate_prompts: bool = False,
               bos_id: int | None = 0, eos_id: int | None = None,
               sample_fn: decoding.SampleFn = decoding.sample_logits, progress: bool = False):
    self.config = config
    self.vocab = vocab
    self.num_slots = num_slots
    self.max_len = config.max_len if max_len is None else max_len
    self.mesh = mesh
    self.rules = partitioning.logical_axis_rules() if rules is None else rules
    self.buckets = tuple(b for b in prefill_buckets if b < self.max_len) + (self.max_len,)
    self.decode_chunk = decode_chunk
    self.max_prefill_batch = max_prefill_batch
    self.prefix_pool_size = prefix_pool_size
    self.reuse_prefixes = reuse_prefixes
    self.truncate_prompts = truncate_prompts
    self.bos_id = bos_id
    self.eos_id = vocab.eos_id if eos_id is None else eos_id
    self.progress = progress
    self.stats = EngineStats()
    self._stops = decoding.StopMatcher(vocab.decode)
    self._model = transformer.Transformer(config)
    self._params = self._place_params(params)
    self._queue: collections.deque[tuple[_Work, int]] = collections.deque()
    self._lock = threading.Lock()
    self._drive_lock = threading.Lock()
    self._slots: list[tuple[_Work, decoding.RowProgress] | None] = [None] * num_slots
    self._prefix_rows: collections.OrderedDict[tuple[int, ...], int] = collections.OrderedDict()
    self._build_steps(sample_fn)
    self._state = self._empty_state()
    self._prefix_pool = self._shard_cache(KVCache.init(config, prefix_pool_size, self.max_len))
    self._tables: grammar.TokenTables | None = None
    self._table: tuple[int, Array] | None = None  # (tables version, device copy)

  # --------------------------------------------------------------------------
  # Setup: shardings and jitted steps.

  def _context(self):
    if self.mesh is None:
      return contextlib.nullcontext()
    stack = contextlib.ExitStack()
    stack.enter_context(jax.set_mesh(self.mesh))
    stack.enter_context(nn.logical_axis_rules(self.rules))
    return stack

  def _place_params(self, params: Any) -> Any:
    params = nn.unbox(params)
    if self.mesh is None:
      return params
    from restreact_jax import trainer  # the params' shardings are the trainer's
    _, shardings = trainer.param_shardings(self.config, self.mesh, self.rules)
    return jax.device_put(params, shardings)

  def _shard_cache(self, cache: Any) -> Any:
    if self.mesh is None:
      return cache
    shardings = partitioning.tree_shardings(cache, KVCache.logical_axes(), self.mesh, self.rules)
    return jax.device_put(cache, shardings)

  def _empty_state(self) -> decoding.DecodeState:
    cache = KVCache.init(self.config, self.num_slots, self.max_len)
    params = decoding.RowParams.from_lists(*([[0]] * 6))
    params = jax.tree.map(lambda x: jnp.zeros((self.num_slots,), x.dtype), params)
    logits = jnp.zeros((self.num_slots, self.config.vocab_size), jnp.float32)
    state = decoding.init_state(cache, logits, params, jnp.ones((self.num_slots,), bool),
                                self.decode_chunk)
    if self.mesh is not None:
      state = jax.device_put(state, state_shardings(state, self.mesh, self.rules))
    return state

  def _build_steps(self, sample_fn: decoding.SampleFn) -> None:
    steps = _compiled_steps(self.config, self.max_len, self.num_slots, self.decode_chunk,
                            self.prefix_pool_size, self.mesh, self.rules, sample_fn, self.eos_id)
    self._prefill_fresh, self._prefill_on_pool, self._decode, self._insert, self._to_pool = steps

  # --------------------------------------------------------------------------
  # The doors.

  def prepare(self, request: llm.SamplingRequest, where: str = 'request') -> decoding.Prepared:
    """Validates and tokenizes a request (raises `UserError` on bad input)."""
    if request.grammar is not None and self._tables is None:
      with self._lock:
        if self._tables is None:
          self._tables = grammar.TokenTables(grammar.token_texts(self.vocab))
    return decoding.prepare(self.vocab, request, max_len=self.max_len, bos_id=self.bos_id,
                            truncate=self.truncate_prompts, where=where, tables=self._tables)

  def submit(self, request: llm.SamplingRequest,
             prepared: decoding.Prepared | None = None) -> concurrent.futures.Future:
    """Queues a request; the future resolves to its `n` samples.

    Thread-safe. Bad input raises `UserError` here, before anything is queued.
    Someone must call `run()` (or `generate`) for the future to resolve.
    """
    prepared = self.prepare(request) if prepared is None else prepared
    future: concurrent.futures.Future = concurrent.futures.Future()
    rows = [decoding.RowProgress(0, j, prepared) for j in range(request.n)]
    work = _Work(prepared, future, rows, remaining=len(rows))
    with self._lock:
      for row in rows:
        if decoding.finish_zero_budget(row, self.vocab.decode):
          work.remaining -= 1
        else:
          self._queue.append((work, row.sample_index))
    if work.remaining == 0:
      future.set_result([r.result for r in rows])
    return future

  def generate(self, requests: Sequence[llm.SamplingRequest]) -> list[list[llm.Sample]]:
    """Returns, for each request, its `n` samples in order (the `LLM` door).

    Safe to call from many threads at once: one caller drives the engine while
    the others' requests ride in the same slots.
    """
    prepared = [self.prepare(r, where=f'request {i}') for i, r in enumerate(requests)]
    futures = [self.submit(r, p) for r, p in zip(requests, prepared)]
    while not all(f.done() for f in futures):
      if self._drive_lock.acquire(blocking=False):
        try:
          self.run()
        finally:
          self._drive_lock.release()
      else:
        concurrent.futures.wait(futures, timeout=0.01,
                                return_when=concurrent.futures.FIRST_EXCEPTION)
    return [f.result() for f in futures]

  # Requests can be submitted one at a time and the engine driven by `step`
  # (`llm.can_step`): the rollout pool hands each agent's next request in as
  # soon as its last one finishes, instead of waiting for a whole round.
  steppable = True

  @property
  def busy(self) -> bool:
    """Whether a request is waiting or a slot is decoding."""
    with self._lock:
      if self._queue:
        return True
    return any(s is not None for s in self._slots)

  def step(self) -> int:
    """One turn of the host loop: fill free slots, decode one chunk.

    Returns the number of samples finished (their requests' futures resolve
    once all of a request's samples are done); 0 without work. For a caller
    that drives the engine itself between submissions; not to be mixed with
    a concurrent `run` or `generate`.
    """
    if not self.busy:
      return 0
    try:
      with self._context():
        self._fill()
        return self._decode_chunk()
    except BaseException as e:  # fail every waiting future instead of hanging callers
      self._fail_all(e)
      raise

  def run(self) -> None:
    """Decodes until every queued request is finished (`step` until idle)."""
    bar = None
    if self.progress:
      bar = tqdm.tqdm(desc='sample', unit='sample', dynamic_ncols=True, leave=False)
    try:
      while self.busy:
        finished = self.step()
        if bar is not None:
          with self._lock:
            waiting = len(self._queue)
          active = sum(s is not None for s in self._slots)
          bar.total = bar.n + finished + waiting + active  # requests may keep arriving
          bar.update(finished)
    finally:
      if bar is not None:
        bar.close()

  def reset_stats(self) -> None:
    self.stats = EngineStats()

  # --------------------------------------------------------------------------
  # The loop.

  def _take_waiting(self, count: int) -> list[tuple[_Work, int]]:
    with self._lock:
      taken = []
      while self._queue and len(taken) < count:
        taken.append(self._queue.popleft())
      return taken

  def _fill(self) -> None:
    free = [i for i, s in enumerate(self._slots) if s is None]
    units = self._take_waiting(len(free))
    if not units:
      return
    start = time.perf_counter()
    new_work = []
    for work, _ in units:
      if work.prefilled is None and all(work is not w for w in new_work):
        new_work.append(work)
    # Shortest first, in batches of powers of two (7 prompts: 4, 2, 1), so a
    # batch pads neither rows nor much length.
    new_work.sort(key=self._suffix_length)
    while new_work:
      size = 1 << (min(len(new_work), self.max_prefill_batch).bit_length() - 1)
      self._prefill(new_work[:size])
      new_work = new_work[size:]
    # Group insertions by the prefill batch their rows come from.
    groups: dict[int, list[tuple[_Work, int, int]]] = {}
    for (work, sample_index), slot in zip(units, free):
      groups.setdefault(id(work.prefilled[0]), []).append((work, sample_index, slot))
    for group in groups.values():
      cache, logits, _ = group[0][0].prefilled
      k = decoding.batch_bucket(len(group))
      src = np.zeros((k,), np.int32)
      dst = np.full((k,), self.num_slots, np.int32)  # padding: dropped
      rows = []
      for j, (work, sample_index, slot) in enumerate(group):
        src[j], dst[j] = work.prefilled[2], slot
        row = work.rows[sample_index]
        rows.append(row)
        self._slots[slot] = (work, row)
        work.placed += 1
      params = decoding.row_params(rows, k)
      starts = np.full((k,), grammar.FREE, np.int32)
      starts[:len(rows)] = [r.prepared.grammar_start for r in rows]
      self._state = self._insert(self._state, cache, logits, jnp.asarray(src),
                                 jnp.asarray(dst), params, jnp.asarray(starts))
    for work, _ in units:
      if work.placed == len(work.rows):
        work.prefilled = None  # every sample has a slot; free the prompt's cache
    jax.block_until_ready(self._state.logits_BxV)
    self.stats.prefill_s += time.perf_counter() - start

  def _wants_pool(self, work: _Work) -> bool:
    """Whether `work`'s prefix is one to keep in the prefix pool."""
    return self.reuse_prefixes and len(work.prepared.prefix_tokens) >= 2

  def _suffix_length(self, work: _Work) -> int:
    """Tokens `_prefill` will feed for `work` if its prefix is in the pool."""
    cut = len(work.prepared.prefix_tokens) - 1 if self._wants_pool(work) else 0
    return len(work.prepared.tokens) - cut

  def _prefill(self, works: list[_Work]) -> None:
    """Prefills the prompts of `works` (in one batch); each keeps its row."""
    wanted = [w.prepared.prefix_tokens for w in works if self._wants_pool(w)]
    pooled = self._ensure_prefixes(wanted)
    use_pool = [w.prepared.prefix_tokens in pooled for w in works]
    suffixes, pool_rows = [], []
    for work, use in zip(works, use_pool):
      tokens = work.prepared.tokens
      if use:
        # The pool holds all prefix tokens but the last, so the suffix is never
        # empty and its last logits are computed here.
        cut = len(work.prepared.prefix_tokens) - 1
        self._prefix_rows.move_to_end(work.prepared.prefix_tokens)
        pool_rows.append(self._prefix_rows[work.prepared.prefix_tokens])
        suffixes.append(tokens[cut:])
        self.stats.reused_prefix_tokens += cut
      else:
        pool_rows.append(0)
        suffixes.append(tokens)
      self.stats.prefill_tokens += len(suffixes[-1])
    batch = decoding.batch_bucket(len(works))
    length = decoding.bucket(max(len(s) for s in suffixes), self.buckets)
    tokens_BxL = np.zeros((batch, length), np.int32)
    lengths_B = np.zeros((batch,), np.int32)
    rows_B = np.zeros((batch,), np.int32)
    use_B = np.zeros((batch,), bool)
    for b, (suffix, row, use) in enumerate(zip(suffixes, pool_rows, use_pool)):
      tokens_BxL[b, :len(suffix)] = suffix
      lengths_B[b], rows_B[b], use_B[b] = len(suffix), row, use
    if any(use_pool):
      logits, cache = self._prefill_on_pool(self._params, self._prefix_pool, jnp.asarray(rows_B),
                                            jnp.asarray(use_B), jnp.asarray(tokens_BxL),
                                            jnp.asarray(lengths_B))
    else:
      logits, cache = self._prefill_fresh(self._params, jnp.asarray(tokens_BxL),
                                          jnp.asarray(lengths_B))
    for b, work in enumerate(works):
      work.prefilled = (cache, logits, b)

  def _ensure_prefixes(self, prefixes: list[tuple[int, ...]]) -> set[tuple[int, ...]]:
    """Prefills prefixes missing from the pool into pool rows (LRU eviction).

    Returns the prefixes now in the pool; one that finds no row (every row is
    needed by this batch) is simply prefilled in full with its prompt.
    """
    needed = set(prefixes)
    missing, rows = [], []
    for prefix in dict.fromkeys(p for p in prefixes if p not in self._prefix_rows):
      if len(self._prefix_rows) < self.prefix_pool_size:
        row = len(self._prefix_rows)
      else:
        evict = next((p for p in self._prefix_rows if p not in needed), None)
        if evict is None:
          continue
        row = self._prefix_rows.pop(evict)
      self._prefix_rows[prefix] = row
      missing.append(prefix)
      rows.append(row)
    for i in range(0, len(missing), self.max_prefill_batch):
      part, part_rows = missing[i:i + self.max_prefill_batch], rows[i:i + self.max_prefill_batch]
      batch = decoding.batch_bucket(len(part))
      length = decoding.bucket(max(len(p) - 1 for p in part), self.buckets)
      tokens_BxL = np.zeros((batch, length), np.int32)
      lengths_B = np.zeros((batch,), np.int32)
      dst = np.full((batch,), self.prefix_pool_size, np.int32)
      for b, (prefix, row) in enumerate(zip(part, part_rows)):
        tokens_BxL[b, :len(prefix) - 1] = prefix[:-1]
        lengths_B[b], dst[b] = len(prefix) - 1, row
        self.stats.prefill_tokens += len(prefix) - 1
      _, cache = self._prefill_fresh(self._params, jnp.asarray(tokens_BxL), jnp.asarray(lengths_B))
      self._prefix_pool = self._to_pool(self._prefix_pool, cache,
                                        jnp.arange(batch, dtype=jnp.int32), jnp.asarray(dst))
    return needed & set(self._prefix_rows)

  def _decode_chunk(self) -> int:
    """Runs one chunk; finishes samples and frees their slots. Returns #finished."""
    start = time.perf_counter()
    stop_B = np.asarray([s is None for s in self._slots])
    before = np.asarray([0 if s is None else len(s[1].tokens) for s in self._slots])
    self._state = self._decode(self._params, self._state, jnp.asarray(stop_B),
                               self._device_table())
    after, finish, toks, lps, steps = jax.device_get(
        (self._state.num_generated_B, self._state.finish_B, self._state.tokens_BxC,
         self._state.logprobs_BxC, self._state.step))
    self.stats.decode_s += time.perf_counter() - start
    self.stats.slot_steps += int(steps) * self.num_slots
    finished = 0
    for slot, entry in enumerate(self._slots):
      if entry is None:
        continue
      work, row = entry
      n = int(after[slot] - before[slot])
      if not row.absorb(toks[slot, :n], lps[slot, :n], int(finish[slot]), self._stops,
                        self.vocab.decode):
        continue
      self._slots[slot] = None
      finished += 1
      sample = row.result
      self.stats.samples += 1
      self.stats.tokens += len(sample.tokens)
      self.stats.useful_slot_steps += len(sample.tokens) + (sample.finish_reason == 'eos')
      work.remaining -= 1
      if work.remaining == 0:
        work.future.set_result([r.result for r in work.rows])
    return finished

  def _device_table(self) -> Array | None:
    """The grammar table on device (None until a request brings a grammar)."""
    tables = self._tables
    if tables is None:
      return None
    version = tables.version  # read first: rows added meanwhile come next time
    if self._table is None or self._table[0] != version:
      table = jnp.asarray(tables.table(self.config.vocab_size))
      if self.mesh is not None:
        table = jax.device_put(table, jax.sharding.NamedSharding(
            self.mesh, jax.sharding.PartitionSpec()))
      self._table = (version, table)
    return self._table[1]

  def _fail_all(self, error: BaseException) -> None:
    with self._lock:
      works = [w for w, _ in self._queue] + [s[0] for s in self._slots if s is not None]
      self._queue.clear()
    self._slots = [None] * self.num_slots
    for work in works:
      if not work.future.done():
        work.future.set_exception(error)
    self._state = self._empty_state()
