"""Tests for the persistent query cache: hits/misses, keys, concurrent writers."""

import json
import sqlite3
import subprocess
import sys
import textwrap
import threading

from restreact_jax.search import cache as cache_lib
from restreact_jax.search.types import ResultItem


class CountingTool:
  """A fake backend whose answers depend on its `tag`; counts searched queries."""

  name = 'fake'

  def __init__(self, tag='v1'):
    self.config_hash = tag
    self.searched = []
    self._lock = threading.Lock()

  def search(self, queries, k=3):
    with self._lock:
      self.searched.extend(queries)
    return [[ResultItem(i + 1, f'{q} title {i}', f'{self.config_hash}: {q} {i}', f'{q}/{i}')
             for i in range(k)] for q in queries]


def test_second_search_is_a_hit_and_costs_nothing(tmp_path):
  tool = CountingTool()
  cached = cache_lib.CachedSearch(tool, tmp_path / 'cache.sqlite')
  first = cached.search(['a', 'b'], k=2)
  assert (cached.stats.hits, cached.stats.misses) == (0, 2)
  again = cached.search(['b', 'a', 'c'], k=2)
  assert (cached.stats.hits, cached.stats.misses) == (2, 3)
  assert tool.searched == ['a', 'b', 'c']
  assert again[0] == first[1] and again[1] == first[0]
  assert cached.stats.hit_rate == 2 / 5


def test_cache_persists_across_instances(tmp_path):
  path = tmp_path / 'cache.sqlite'
  expected = cache_lib.CachedSearch(CountingTool(), path).search(['q1', 'q2'], k=3)
  tool = CountingTool()
  reopened = cache_lib.CachedSearch(tool, path)
  assert reopened.search(['q1', 'q2'], k=3) == expected
  assert tool.searched == [] and reopened.stats.hits == 2


def test_key_includes_k_backend_config_and_query(tmp_path):
  path = tmp_path / 'cache.sqlite'
  cache_lib.CachedSearch(CountingTool('v1'), path).search(['q'], k=3)
  other_k = CountingTool('v1')
  cache_lib.CachedSearch(other_k, path).search(['q'], k=2)
  other_config = CountingTool('v2')
  (hits,) = cache_lib.CachedSearch(other_config, path).search(['q'], k=3)
  other_name = CountingTool('v1')
  cache_lib.CachedSearch(other_name, path, backend='another').search(['q'], k=3)
  assert other_k.searched == other_config.searched == other_name.searched == ['q']
  assert hits[0].snippet.startswith('v2:')


def test_concurrent_threads_share_one_cache(tmp_path):
  tool = CountingTool()
  cached = cache_lib.CachedSearch(tool, tmp_path / 'cache.sqlite')
  queries = [f'q{i}' for i in range(40)]
  results = {}

  def worker(n):
    results[n] = cached.search(queries, k=2)

  threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
  for t in threads:
    t.start()
  for t in threads:
    t.join()
  assert all(results[n] == results[0] for n in results)
  assert cached.stats.hits + cached.stats.misses == 4 * len(queries)
  assert set(tool.searched) == set(queries)


_WRITER = textwrap.dedent('''
    import json
    import sys
    from restreact_jax.search import cache as cache_lib
    from restreact_jax.search.types import ResultItem

    class Tool:
      name, config_hash = 'fake', 'v1'
      def search(self, queries, k=3):
        return [[ResultItem(1, q, sys.argv[2] + ' ' + q, q)] for q in queries]

    cached = cache_lib.CachedSearch(Tool(), sys.argv[1])
    seen = {}
    for i in range(60):
      # Both processes write overlapping keys, one transaction per batch.
      shared, _ = cached.search([f'shared{i}', f'{sys.argv[2]}-own{i}'], k=1)
      seen[f'shared{i}'] = shared[0].snippet
    print(json.dumps(seen))
''')


def test_two_processes_write_one_cache(tmp_path):
  path = tmp_path / 'cache.sqlite'
  procs = [subprocess.Popen([sys.executable, '-c', _WRITER, str(path), name],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for name in ('p1', 'p2')]
  outputs = [p.communicate(timeout=120) for p in procs]
  assert [p.returncode for p in procs] == [0, 0], outputs
  with sqlite3.connect(path) as db:
    rows = dict(db.execute('SELECT query, hits FROM results').fetchall())
  assert len(rows) == 60 + 2 * 60
  assert all(f'p1-own{i}' in rows and f'p2-own{i}' in rows for i in range(60))
  # Each shared key holds one answer that both processes were given.
  tool = CountingTool()
  reader = cache_lib.CachedSearch(tool, path, backend='fake', config_hash='v1')
  shared = reader.search([f'shared{i}' for i in range(60)], k=1)
  assert tool.searched == []
  stored = {f'shared{i}': r[0].snippet for i, r in enumerate(shared)}
  assert all(v.split()[0] in ('p1', 'p2') for v in stored.values())
  # Whoever stored first, both processes were handed that same stored answer.
  for out, _ in outputs:
    assert json.loads(out) == stored
