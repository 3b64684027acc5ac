"""Sampling benchmark: the engine against HF generate, recompute, static batching.

  python benchmarks/sampling.py --json [--model gin/models/s.gin] [--only grammar]

One run, one machine, one set of weights: a random `LlamaForCausalLM` of the
`--model` shape is saved with `transformers` and imported with
`hf_import.load_hf_checkpoint`, so PyTorch and JAX decode the same model. Every
timed run follows an identical warm-up run (compilation excluded). EOS is
disabled so every row produces exactly its token budget. Prints one JSON object:

* `vs_hf_generate`: engine tokens/s / `transformers` `generate` tokens/s
  (PyTorch CPU, greedy, `use_cache=True`), same prompts, batch and new tokens;
* `cache_vs_recompute`: KV-cache greedy decoding of 256 tokens / recomputing
  the whole (length-bucketed) sequence for every new token;
* `continuous_vs_static`: continuous batching / static batching tokens/s on a
  mixed workload (prompts 8-96 bytes, budgets drawn from 16-256 tokens);
* `slot_occupancy`: the continuous engine's useful fraction of slot-steps;
* `grammar_vs_free`: engine tokens/s with every request under a grammar (one
  that admits almost every token, so both sides decode the same lengths) /
  without grammars, the mixed workload: the cost of masking and stepping the
  grammar state on device; `step_grammar_compile_s`: compiling the agent's five
  step grammars for the vocabulary;
* `chunk_vs_plain`: one decode chunk (`decoding.decode_loop`, whose
  `KVCache` chunk keeps the step's keys apart and reads the cache per layer)
  / the same steps written straight into the stacked cache (the loop body
  without the chunk), at `--slots` rows of a `--cache_len` cache half full,
  greedy from the same state: time per decode step, and whether the tokens
  agree;
* `prefill_last_vs_full`: one prefill of `--prefill_batch` prompts of
  `--prefill_len` tokens (lengths ragged over the last quarter) that projects
  only each row's last token to the vocabulary (`last_only`, what the engine
  runs) / the same prefill projecting every position, as it did before; and
  whether the last-token logits agree;
* the raw tokens/s of each side, and agreement checks of the greedy tokens.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import tempfile
import time

import numpy as np


def _model_config(gin_file: str):
  import gin
  from restreact_jax import gin_registry  # noqa: F401  (registers models.TransformerConfig)
  from restreact_jax import gin_utils
  gin_utils.parse([gin_file], ['VOCAB_SIZE = 2048'])
  value = gin.query_parameter('MODEL/macro.value')
  return value.scoped_configurable_fn()


def _hf_model(config, path: str):
  """A random Llama of `config`'s shape, saved to `path`."""
  import torch
  import transformers
  torch.manual_seed(0)
  hf_config = transformers.LlamaConfig(
      vocab_size=config.vocab_size, hidden_size=config.embed_dim,
      intermediate_size=config.mlp_dim, num_hidden_layers=config.num_layers,
      num_attention_heads=config.num_heads, num_key_value_heads=config.num_kv_heads,
      head_dim=config.head_dim, rms_norm_eps=config.norm_eps, rope_theta=config.rope_theta,
      tie_word_embeddings=config.tie_embeddings, max_position_embeddings=config.max_len,
      initializer_range=0.2)
  model = transformers.LlamaForCausalLM(hf_config).eval()
  model.save_pretrained(path)
  return model


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def _vs_hf(hf_model, config, params, vocab, batch: int, prompt_len: int, new: int) -> dict:
  import torch
  from restreact_jax import engine as engine_lib
  from restreact_jax import llm
  rng = np.random.default_rng(0)
  prompts = [''.join(rng.choice(list('abcdefghij klmnop'), prompt_len)) for _ in range(batch)]
  requests = [llm.SamplingRequest(p, temperature=0.0, max_tokens=new, stop=()) for p in prompts]
  eng = engine_lib.Engine(config, params, vocab, num_slots=batch, max_len=prompt_len + new,
                          decode_chunk=32, bos_id=None, eos_id=-1)
  eng.generate(requests)  # warm-up: compiles
  ours, ours_s = _timed(lambda: eng.generate(requests))
  ids = torch.tensor([vocab.encode(p) for p in prompts], dtype=torch.long)
  generate = functools.partial(hf_model.generate, ids, attention_mask=torch.ones_like(ids),
                               max_new_tokens=new, min_new_tokens=new, do_sample=False,
                               use_cache=True, eos_token_id=None, pad_token_id=0)
  with torch.no_grad():
    generate()
    theirs, theirs_s = _timed(generate)
  theirs = theirs[:, prompt_len:].tolist()
  agree = np.mean([s[0].tokens == tuple(t) for s, t in zip(ours, theirs)])
  tokens = batch * new
  return {'ours_tokens_per_s': tokens / ours_s, 'hf_tokens_per_s': tokens / theirs_s,
          'vs_hf_generate': (tokens / ours_s) / (tokens / theirs_s),
          'hf_greedy_rows_identical': float(agree),
          'hf_setting': {'batch': batch, 'prompt_len': prompt_len, 'new_tokens': new,
                         'torch_threads': torch.get_num_threads()}}


def _cache_vs_recompute(config, params, vocab, prompt_len: int, new: int) -> dict:
  import jax
  import jax.numpy as jnp
  from restreact_jax import engine as engine_lib
  from restreact_jax import llm
  from restreact_jax.models import transformer
  prompt = 'the quick brown fox jumps over the lazy dog'[:prompt_len].ljust(prompt_len, '.')
  request = llm.SamplingRequest(prompt, temperature=0.0, max_tokens=new, stop=())
  eng = engine_lib.Engine(config, params, vocab, num_slots=1, max_len=prompt_len + new,
                          decode_chunk=64, bos_id=None, eos_id=-1)
  eng.generate([request])
  ours, ours_s = _timed(lambda: eng.generate([request]))

  model = transformer.Transformer(config)

  @jax.jit
  def next_token(params, tokens_1xT, last):
    logits, _ = model.apply({'params': params}, tokens_1xT, mode=transformer.Mode.TRAIN)
    return jnp.argmax(logits[0, last]).astype(jnp.int32)

  def recompute():
    tokens = list(vocab.encode(prompt))
    for _ in range(new):
      width = -(-len(tokens) // 32) * 32  # growing, bucketed to 32: few compiled shapes
      buf = np.zeros((1, width), np.int32)
      buf[0, :len(tokens)] = tokens
      tokens.append(int(next_token(params, buf, len(tokens) - 1)))
    return tokens[prompt_len:]

  recompute()
  theirs, theirs_s = _timed(recompute)
  return {'cache_tokens_per_s': new / ours_s, 'recompute_tokens_per_s': new / theirs_s,
          'cache_vs_recompute': theirs_s / ours_s,
          'recompute_tokens_identical': list(ours[0][0].tokens) == theirs,
          'recompute_setting': {'batch': 1, 'prompt_len': prompt_len, 'new_tokens': new}}


def _continuous_vs_static(config, params, vocab, num_requests: int, slots: int) -> dict:
  from restreact_jax import decoding
  from restreact_jax import engine as engine_lib
  from restreact_jax import llm
  from restreact_jax.models import transformer
  rng = np.random.default_rng(1)
  requests = [llm.SamplingRequest(''.join(rng.choice(list('abcdefgh '), int(rng.integers(8, 97)))),
                                  temperature=0.5, max_tokens=int(rng.integers(16, 257)),
                                  stop=(), seed=i)
              for i in range(num_requests)]
  max_len = 384
  eng = engine_lib.Engine(config, params, vocab, num_slots=slots, max_len=max_len,
                          decode_chunk=8, eos_id=-1)
  static = decoding.StaticSampler(
      functools.partial(engine_lib.apply_model, config),
      lambda b, n: transformer.KVCache.init(config, b, n), vocab, max_len=max_len,
      batch_size=slots, decode_chunk=8, eos_id=-1)
  eng.generate(requests)
  eng.reset_stats()
  cont, cont_s = _timed(lambda: eng.generate(requests))
  static.generate(params, requests)
  stat, stat_s = _timed(lambda: static.generate(params, requests))
  tokens = sum(r.max_tokens for r in requests)
  assert sum(len(s[0].tokens) for s in cont) == tokens == sum(len(s[0].tokens) for s in stat)
  same = np.mean([a[0].tokens == b[0].tokens for a, b in zip(cont, stat)])
  return {'continuous_tokens_per_s': tokens / cont_s, 'static_tokens_per_s': tokens / stat_s,
          'continuous_vs_static': stat_s / cont_s,
          'slot_occupancy': eng.stats.slot_occupancy,
          'continuous_prefill_s': eng.stats.prefill_s, 'continuous_decode_s': eng.stats.decode_s,
          'static_vs_continuous_samples_identical': float(same),
          'mixed_setting': {'requests': num_requests, 'slots': slots, 'tokens': tokens,
                            'new_tokens_range': [16, 256], 'prompt_bytes_range': [8, 96]}}


def _grammar_vs_free(config, params, vocab, num_requests: int, slots: int) -> dict:
  import dataclasses
  from restreact_jax import engine as engine_lib
  from restreact_jax import grammar
  from restreact_jax import llm
  from restreact_jax.agent import step_grammars
  rng = np.random.default_rng(2)
  free = [llm.SamplingRequest(''.join(rng.choice(list('abcdefgh '), int(rng.integers(8, 97)))),
                              temperature=0.5, max_tokens=int(rng.integers(16, 257)),
                              stop=(), seed=i)
          for i in range(num_requests)]
  lines = grammar.Repeat(grammar.CharSet('\n', negate=True))
  constrained = [dataclasses.replace(r, grammar=lines) for r in free]
  max_len = 384
  engines = [engine_lib.Engine(config, params, vocab, num_slots=slots, max_len=max_len,
                               decode_chunk=8, eos_id=-1) for _ in range(2)]
  for eng, reqs in zip(engines, (free, constrained)):
    eng.generate(reqs)  # warm-up: compilation and the grammar's table
  times = {'free': [], 'grammar': []}
  for _ in range(2):  # alternate, so both sides see the same machine
    for eng, reqs, key in zip(engines, (free, constrained), ('free', 'grammar')):
      out, secs = _timed(lambda: eng.generate(reqs))  # pylint: disable=cell-var-from-loop
      times[key].append(secs)
  tokens = sum(r.max_tokens for r in free)
  free_s, grammar_s = min(times['free']), min(times['grammar'])
  tables = grammar.TokenTables(grammar.token_texts(vocab))
  start = time.perf_counter()
  for kind in ('decision', 'summarize', 'answer', 'relevance', 'grounding'):
    tables.start(step_grammars.step_grammar(kind, valid_link_ids=[1, 2, 3]))
  compile_s = time.perf_counter() - start
  return {'grammar_vs_free': free_s / grammar_s, 'grammar_tokens_per_s': tokens / grammar_s,
          'free_tokens_per_s': tokens / free_s,
          'step_grammar_compile_s': compile_s,
          'step_grammar_states': tables.num_states,
          'grammar_setting': {'requests': num_requests, 'slots': slots, 'tokens': tokens,
                              'vocab_size': vocab.vocab_size}}


def _chunk_vs_plain(config, params, slots: int, cache_len: int, chunk: int = 8,
                    rounds: int = 5) -> dict:
  import jax
  import jax.numpy as jnp
  from restreact_jax import decoding
  from restreact_jax import engine as engine_lib
  from restreact_jax.models import transformer
  apply = functools.partial(engine_lib.apply_model, config, params)
  key_k, key_v, key_l = jax.random.split(jax.random.key(0), 3)
  cache = transformer.KVCache.init(config, slots, cache_len)
  cache = cache.replace(k=jax.random.normal(key_k, cache.k.shape, cache.k.dtype),
                        v=jax.random.normal(key_v, cache.v.shape, cache.v.dtype),
                        lengths=jnp.full((slots,), cache_len // 2, jnp.int32))
  row_params = decoding.RowParams.from_lists([0.0] * slots, [0] * slots, [1.0] * slots,
                                             [cache_len] * slots, [0] * slots, range(slots))
  logits = jax.random.normal(key_l, (slots, config.vocab_size))
  body = functools.partial(decoding.body_fn, tokens_to_logits=apply,
                           sample_fn=decoding.sample_logits, eos_id=-1)
  # Donated, as the engine's decode step is: the cache is updated in place.
  sides = {
      'chunk': jax.jit(lambda state: decoding.decode_loop(apply, state, eos_id=-1),
                       donate_argnums=0),
      'plain': jax.jit(lambda state: jax.lax.while_loop(decoding.cond_fn, body, state),
                       donate_argnums=0),
  }
  seconds = {name: [] for name in sides}
  tokens = {}
  for _ in range(rounds + 1):  # the first round compiles
    for name, fn in sides.items():
      state = jax.block_until_ready(jax.tree.map(jnp.copy, decoding.init_state(
          cache, logits, row_params, jnp.zeros((slots,), bool), chunk)))
      out, dt = _timed(lambda: jax.block_until_ready(fn(state)))  # pylint: disable=cell-var-from-loop
      seconds[name].append(dt)
      tokens[name] = np.asarray(out.tokens_BxC)
  per_step = {name: float(np.median(s[1:])) / chunk for name, s in seconds.items()}
  return {'chunk_vs_plain': per_step['plain'] / per_step['chunk'],
          'chunk_step_ms': 1e3 * per_step['chunk'], 'plain_step_ms': 1e3 * per_step['plain'],
          'chunk_tokens_identical': bool((tokens['chunk'] == tokens['plain']).all()),
          'chunk_setting': {'slots': slots, 'cache_len': cache_len, 'chunk': chunk,
                            'filled': cache_len // 2}}


def _prefill_last_vs_full(config, params, batch: int, length: int, rounds: int = 5) -> dict:
  import jax
  import jax.numpy as jnp
  from restreact_jax import decoding
  from restreact_jax.models import transformer
  model = transformer.Transformer(config)

  def side(last_only):
    def run(tokens_BxL, lengths_B):
      def apply(t, c, n):
        return model.apply({'params': params}, t, mode=transformer.Mode.PREFILL, cache=c,
                           input_lengths_B=n, last_only=last_only)
      cache = transformer.KVCache.init(config, batch, length + 64)
      return decoding.prefill(apply, tokens_BxL, lengths_B, cache)
    return jax.jit(run)

  key_t, key_n = jax.random.split(jax.random.key(0))
  tokens = jax.random.randint(key_t, (batch, length), 2, config.vocab_size)
  lengths = jax.random.randint(key_n, (batch,), length * 3 // 4, length + 1)
  sides = {'last': side(True), 'full': side(False)}
  seconds = {name: [] for name in sides}
  logits = {}
  for _ in range(rounds + 1):  # the first round compiles
    for name, fn in sides.items():
      out, dt = _timed(lambda: jax.block_until_ready(fn(tokens, lengths)))  # pylint: disable=cell-var-from-loop
      seconds[name].append(dt)
      logits[name] = np.asarray(out[0])
  median = {name: float(np.median(s[1:])) for name, s in seconds.items()}
  return {'prefill_last_vs_full': median['full'] / median['last'],
          'prefill_last_ms': 1e3 * median['last'], 'prefill_full_ms': 1e3 * median['full'],
          'prefill_logits_max_abs_diff': float(np.abs(logits['last'] - logits['full']).max()),
          'prefill_setting': {'batch': batch, 'length': length,
                              'vocab_size': config.vocab_size}}


def main(argv=None) -> dict:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--model', default='gin/models/s.gin')
  parser.add_argument('--batch', type=int, default=8)
  parser.add_argument('--new_tokens', type=int, default=128)
  parser.add_argument('--requests', type=int, default=48)
  parser.add_argument('--slots', type=int, default=128, help='rows of the chunk part')
  parser.add_argument('--cache_len', type=int, default=640, help='cache length of the chunk part')
  parser.add_argument('--prefill_batch', type=int, default=32, help='rows of the prefill part')
  parser.add_argument('--prefill_len', type=int, default=512,
                      help='prompt length of the prefill part')
  parser.add_argument('--json', action='store_true', help='print only the JSON result')
  parser.add_argument('--only', default='',
                      help='comma-separated parts to run: vs_hf,cache,mixed,grammar,chunk,prefill')
  args = parser.parse_args(argv)

  import seqio
  import torch
  from restreact_jax.models import hf_import
  torch.set_num_threads(os.cpu_count() or 1)
  config = _model_config(args.model)
  vocab = seqio.ByteVocabulary()
  with tempfile.TemporaryDirectory() as tmp:
    hf_model = _hf_model(config, tmp)
    config, params = hf_import.load_hf_checkpoint(tmp)
  result = {'model': args.model, 'params_dtype': config.param_dtype}
  steps = [('vs_hf', lambda: _vs_hf(hf_model, config, params, vocab, args.batch, 64,
                                    args.new_tokens)),
           ('cache', lambda: _cache_vs_recompute(config, params, vocab, 32, 256)),
           ('mixed', lambda: _continuous_vs_static(config, params, vocab, args.requests,
                                                   args.batch)),
           ('grammar', lambda: _grammar_vs_free(config, params, vocab, args.requests,
                                                args.batch)),
           ('chunk', lambda: _chunk_vs_plain(config, params, args.slots, args.cache_len)),
           ('prefill', lambda: _prefill_last_vs_full(config, params, args.prefill_batch,
                                                      args.prefill_len))]
  only = {x for x in args.only.split(',') if x}
  for name, step in steps:
    if only and name not in only:
      continue
    if not args.json:
      print(f'running {name}...', file=sys.stderr)
    result.update(step())
  result['goals'] = {'vs_hf_generate': 3, 'cache_vs_recompute': 10, 'slot_occupancy': 0.85}
  result['cpu_count'] = os.cpu_count()
  print(json.dumps(result, indent=None if args.json else 2))
  return result


if __name__ == '__main__':
  main()
