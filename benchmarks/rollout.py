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

`--compare` instead times this build's pool against the previous one, side by
side on the same questions and weights (each warmed up first, then
`--rounds` alternating timed rollouts): ours submits each agent's request as
soon as it has one and steps the engine (`llm.can_step`), with prompts padded
to `decoding.ENGINE_BUCKETS`; the reference waits for every agent of a round
(`run_pool(stepped=False)`) with power-of-two buckets. Prints
`stepped_vs_rounds` (the reference's wall time / ours, median and range), the
slot occupancy of each, whether every candidate has as many tokens on both
sides, and the largest difference of a token's logprob between them (float
rounding of differently padded prefills; a different token would show).
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

  def _texts(self, request, samples):
    import dataclasses  # pylint: disable=import-outside-toplevel
    return [dataclasses.replace(s, text=self.script(request, i)) for i, s in enumerate(samples)]

  def generate(self, requests):
    return [self._texts(r, samples) for r, samples in zip(requests, self.engine.generate(requests))]

  # The stepped door (`llm.can_step`), as the engine's.
  steppable = True

  def submit(self, request):
    import concurrent.futures  # pylint: disable=import-outside-toplevel
    outer = concurrent.futures.Future()
    self.engine.submit(request).add_done_callback(
        lambda f: outer.set_result(self._texts(request, f.result())))
    return outer

  def step(self):
    return self.engine.step()


def compare(args, run, ours, reference, warm_qs, timed_qs, tmp) -> None:
  """Ours (stepped) and the reference (rounds) alternate on the same questions."""
  import statistics  # pylint: disable=import-outside-toplevel
  sides = {'ours': (ours, True), 'rounds': (reference, False)}
  for name, (the_llm, stepped) in sides.items():
    run(warm_qs, 1, the_llm, os.path.join(tmp, f'warm_{name}'), stepped)
  walls = {name: [] for name in sides}
  occupancy = {name: [] for name in sides}
  logprobs = {}
  for r in range(args.rounds):
    for name, (the_llm, stepped) in sides.items():
      the_llm.engine.reset_stats()
      out = os.path.join(tmp, f'{name}_{r}')
      stats = run(timed_qs, 2, the_llm, out, stepped)
      walls[name].append(stats.wall_s)
      occupancy[name].append(the_llm.engine.stats.slot_occupancy)
      with open(os.path.join(out, 'shard-00000-of-00001.jsonl'), encoding='utf-8') as f:
        trajs = sorted((json.loads(line) for line in f), key=lambda t: t['question_id'])
      logprobs[name] = [c['logprobs'] for t in trajs for s in t['steps'] for c in s['candidates']]
  ratios = [b / a for a, b in zip(walls['ours'], walls['rounds'])]
  print(json.dumps({
      'stepped_vs_rounds': statistics.median(ratios),
      'ratio_range': [min(ratios), max(ratios)],
      'wall_s': {k: statistics.median(v) for k, v in walls.items()},
      'slot_occupancy': {k: statistics.median(v) for k, v in occupancy.items()},
      # Candidate texts are scripted; a different sampled token would move its
      # logprob by far more than float rounding.
      'max_logprob_diff': max((abs(x - y) for a, b in zip(logprobs['ours'], logprobs['rounds'])
                               for x, y in zip(a, b)), default=0.0),
      'same_lengths': [len(a) for a in logprobs['ours']] == [len(b) for b in logprobs['rounds']],
      'trajectories': len(timed_qs),
  }))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--json', action='store_true', help='print only the JSON line')
  parser.add_argument('--questions', type=int, default=16)
  parser.add_argument('--samples', type=int, default=4)
  parser.add_argument('--slots', type=int, default=32)
  parser.add_argument('--max_tokens', type=int, default=32)
  parser.add_argument('--rounds', type=int, default=3,
                      help='alternating timed rollouts of each side in --compare')
  parser.add_argument('--compare', action='store_true',
                      help='this build (stepped pool, fine prefill buckets) against the '
                      'round-by-round pool with power-of-two buckets, side by side')
  args = parser.parse_args()

  import flax.linen as nn  # pylint: disable=import-outside-toplevel
  import jax  # pylint: disable=import-outside-toplevel
  import jax.numpy as jnp  # pylint: disable=import-outside-toplevel
  import seqio  # pylint: disable=import-outside-toplevel
  from restreact_jax import decoding  # pylint: disable=import-outside-toplevel
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

  def run(qs, seed, the_llm, out, stepped=None):
    config = AgentConfig(num_samples=args.samples, max_tokens=args.max_tokens, max_searches=3,
                         base_seed=seed)
    return rollout_lib.rollout(the_llm, tool, qs, out_dir=out, prompter=prompter,
                               config=config, show_progress=not args.json, stepped=stepped)

  if args.compare:
    compare(args, run, llm, PolicyTextOverEngine(backends.jax_backend(
        cfg, vocab=vocab, params=params, num_slots=args.slots, truncate_prompts=True,
        prefill_buckets=decoding.DEFAULT_BUCKETS), script), warm_qs, timed_qs, tmp)
    return

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
