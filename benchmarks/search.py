"""Search benchmark: BM25 index time and query rates on a large world.

  python benchmarks/search.py --json [--num_entities 10000] [--queries 2000]

Builds a world of `--num_entities` entities, indexes its corpus, then times in
one run: batched BM25 queries, one-at-a-time BM25 queries, and the same queries
through the persistent cache when cold (all misses) and warm (all hits). The
queries are the natural hop queries of the world's questions (entity name +
relation words). Prints one JSON object; ratios compare rates from this run.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile
import time

from restreact_jax.search import bm25
from restreact_jax.search import cache as cache_lib
from restreact_jax.world import build
from restreact_jax.world import questions


def _timed(fn):
  start = time.perf_counter()
  out = fn()
  return out, time.perf_counter() - start


def main(argv=None) -> dict[str, object]:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument('--num_entities', type=int, default=10_000)
  parser.add_argument('--queries', type=int, default=2000)
  parser.add_argument('--json', action='store_true', help='print only the JSON result')
  args = parser.parse_args(argv)

  config = build.WorldConfig(seed=0, num_entities=args.num_entities, num_train=args.queries,
                             num_dev=50, num_test=50)
  world, world_s = _timed(lambda: build.build_world(config))
  with tempfile.TemporaryDirectory() as tmp:
    root = pathlib.Path(tmp)
    build.write_world(world, root / 'world')
    _, index_s = _timed(lambda: bm25.build_index(root / 'world' / 'corpus.jsonl', root / 'bm25'))
    tool, load_s = _timed(lambda: bm25.BM25Search(root / 'bm25'))
    hops = [h for q in world.questions['train'] for h in q['hop_chain']]
    queries = list(dict.fromkeys(questions.natural_query(h) for h in hops))
    queries = queries[:args.queries]
    _, batched_s = _timed(lambda: tool.search(queries, k=3))
    single = queries[:200]
    _, single_s = _timed(lambda: [tool.search([q], k=3) for q in single])
    cached = cache_lib.CachedSearch(tool, root / 'cache.sqlite')
    _, cold_s = _timed(lambda: cached.search(queries, k=3))
    _, warm_s = _timed(lambda: cached.search(queries, k=3))
    stats = cached.stats
  n = len(queries)
  result = {
      'benchmark': 'search',
      'num_entities': len(world.entities),
      'num_passages': len(world.passages),
      'num_queries': n,
      'world_build_s': round(world_s, 3),
      'index_build_s': round(index_s, 3),
      'index_load_s': round(load_s, 3),
      'bm25_batched_qps': round(n / batched_s, 1),
      'bm25_single_qps': round(len(single) / single_s, 1),
      'cache_cold_qps': round(n / cold_s, 1),
      'cache_warm_qps': round(n / warm_s, 1),
      'cache_hits': stats.hits,
      'cache_misses': stats.misses,
      'ratio_warm_cache_vs_bm25_batched': round(batched_s / warm_s, 2),
      'ratio_warm_cache_vs_bm25_single': round((single_s / len(single)) / (warm_s / n), 2),
  }
  if not args.json:
    print(f'world of {result["num_entities"]} entities, {result["num_passages"]} passages',
          file=sys.stderr)
  print(json.dumps(result))
  return result


if __name__ == '__main__':
  main()
