"""Rollout benchmark: how much of a pooled rollout's wall time is outside the engine.

  python benchmarks/rollout.py --json [--questions 16 --samples 4 --slots 32]

One run, one machine: a small generated world with its BM25 index, a tiny
random JAX model in the continuous-batching engine, and the real agent,
parser, search and shard writer. A random model writes no valid actions, so
its trajectories would end at the first step; to exercise whole trajectories
the engine still samples every candidate (real prompts, real prefill and
decode work, real logprobs) but the candidate *text* is replaced by
`backends.synthetic_policy` for the same request and sample. A warm-up rollout
(another seed) compiles first. Prints one JSON object:

* `trajectories_per_s`: finished trajectories / wall seconds;
* `slot_occupancy`: the engine's useful fraction of decode slot-steps;
* `outside_engine_fraction`: wall time outside `LLM.generate` (agent Python,
  parsing, search, writing) / wall time; the goal is <= 0.10;
* `agent_overhead_ms_per_request`: the same rollout with a scripted LLM and
  no engine, per LLM request (the pure agent + search + writing cost);
* counts (trajectories, ok, failed, LLM requests, searches, tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


class PolicyTextOverEngine:
  """Real engine work and logprobs; scripted action text (see module docstring)."""

  def __init__(self, engine, script):
    self.engine = engine
    self.script = script

  def generate(self, requests):
    import dataclasses  # pylint: disable=import-outside-toplevel
    out = self.engine.generate(requests)
    return [[dataclasses.replace(s, text=self.script(r, i)) for i, s in enumerate(samples)]
            for r, samples in zip(requests, out)]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--json', action='store_true', help='print only the JSON line')
  parser.add_argument('--questions', type=int, default=16)
  parser.add_argument('--samples', type=int, default=4)
  parser.add_argument('--slots', type=int, default=32)
  parser.add_argument('--max_tokens', type=int, default=32)
  args = parser.parse_args()

  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import seqio  # pylint: disable=import-outside-toplevel
  from restreact_jax.agent import backends, prompts  # pylint: disable=import-outside-toplevel
  from restreact_jax.agent import rollout as rollout_lib  # pylint: disable=import-outside-toplevel
  from restreact_jax.agent.agent import AgentConfig  # pylint: disable=import-outside-toplevel
  from restreact_jax.models import configs, transformer  # pylint: disable=import-outside-toplevel
  from restreact_jax.search import bm25  # pylint: disable=import-outside-toplevel
  from restreact_jax.world import build  # pylint: disable=import-outside-toplevel

  tmp = tempfile.mkdtemp(prefix='rollout-bench-')
  world = build.build_world(build.WorldConfig(seed=0, num_entities=200,
                                              num_train=args.questions * 2, num_dev=0,
                                              num_test=0))
  build.write_world(world, os.path.join(tmp, 'world'))
  bm25.build_index(os.path.join(tmp, 'world', 'corpus.jsonl'), os.path.join(tmp, 'bm25'))
  tool = bm25.BM25Search(os.path.join(tmp, 'bm25'))
  questions = build.load_questions(os.path.join(tmp, 'world'), 'train')
  warm_qs, timed_qs = questions[:args.questions], questions[args.questions:2 * args.questions]

  vocab = seqio.ByteVocabulary()
  cfg = configs.TransformerConfig(vocab_size=vocab.vocab_size, embed_dim=64, num_layers=2,
                                  num_heads=4, num_kv_heads=2, head_dim=16, mlp_dim=256,
                                  max_len=2048)
  params = nn.unbox(transformer.Transformer(cfg).init(
      jax.random.PRNGKey(0), jnp.zeros((1, 8), jnp.int32))['params'])
  engine = backends.jax_backend(cfg, vocab=vocab, params=params, num_slots=args.slots,
                                truncate_prompts=True)
  script = backends.synthetic_policy(search_prob=0.6, garbage_prob=0.1)
  llm = PolicyTextOverEngine(engine, script)
  prompter = prompts.Prompter(None, 0)

  def run(qs, seed, the_llm, out):
    config = AgentConfig(num_samples=args.samples, max_tokens=args.max_tokens, max_searches=3,
                         base_seed=seed)
    return rollout_lib.rollout(the_llm, tool, qs, out_dir=out, prompter=prompter,
                               config=config, show_progress=not args.json)

  run(warm_qs, 1, llm, os.path.join(tmp, 'warm'))
  engine.reset_stats()
  stats = run(timed_qs, 2, llm, os.path.join(tmp, 'timed'))
  occupancy = engine.stats.slot_occupancy

  # The same rollout without an engine: the agent's own cost per request.
  t0 = time.perf_counter()
  scripted = run(timed_qs, 2, backends.ScriptedLLM(script), os.path.join(tmp, 'scripted'))
  scripted_wall = time.perf_counter() - t0

  result = {
      'trajectories_per_s': stats.trajectories / stats.wall_s,
      'slot_occupancy': occupancy,
      'outside_engine_fraction': stats.outside_engine_fraction,
      'agent_overhead_ms_per_request': 1000 * scripted_wall / max(1, scripted.llm_requests),
      'engine_ms_per_request': 1000 * stats.llm_s / max(1, stats.llm_requests),
      'trajectories': stats.trajectories,
      'ok': stats.ok,
      'failed': stats.failed,
      'llm_requests': stats.llm_requests,
      'searches': stats.searches,
      'generated_tokens': stats.generated_tokens,
      'wall_s': stats.wall_s,
      'search_s': stats.search_s,
  }
  print(json.dumps(result))


if __name__ == '__main__':
  main()
