"""`restreact search`: query the experiment's search tool, for a person to check.

  restreact search --gin_file=gin/experiments/demo_cpu.gin --gin.EXP_DIR="'runs/demo'" \
      --query "The Glass Orchard directed"

Also holds `make_search_tool`, the one place that turns a backend name into a
`SearchTool` (BM25 over `EXP_DIR/search/bm25`, or HTTP), optionally behind the
persistent query cache `EXP_DIR/search/cache.sqlite`; rollouts use it too.
"""

from __future__ import annotations

import pathlib

import gin

from restreact_jax import errors
from restreact_jax.search import bm25
from restreact_jax.search import cache as cache_lib
from restreact_jax.search import http as http_lib
from restreact_jax.search.types import SearchTool

BACKENDS = ('bm25', 'http')


def make_search_tool(exp_dir: str | pathlib.Path, backend: str = 'bm25',
                     http_config: http_lib.HttpSearchConfig | None = None,
                     use_cache: bool = True, index_dir: str | None = None,
                     max_snippet_chars: int = 200) -> SearchTool:
  """Opens the search tool an experiment uses.

  Args:
    exp_dir: the experiment directory.
    backend: 'bm25' or 'http'.
    http_config: required for 'http'.
    use_cache: wrap the tool in the persistent cache `EXP_DIR/search/cache.sqlite`.
    index_dir: BM25 index (default `EXP_DIR/search/bm25`).
    max_snippet_chars: the longest BM25 snippet (whole sentences around the
      best-matching one).

  Returns:
    A `SearchTool`.
  """
  root = pathlib.Path(exp_dir)
  if backend == 'bm25':
    tool: SearchTool = bm25.BM25Search(index_dir or root / 'search' / 'bm25',
                                       max_snippet_chars=max_snippet_chars)
  elif backend == 'http':
    if http_config is None:
      raise errors.UserError('search backend "http" needs search.http_config '
                             '(a @search.HttpSearchConfig() binding)')
    tool = http_lib.HttpSearch(http_config)
  else:
    raise errors.UserError(
        f'unknown search backend {backend!r}; choose one of {", ".join(BACKENDS)}')
  if use_cache:
    tool = cache_lib.CachedSearch(tool, root / 'search' / 'cache.sqlite')
  return tool


def _as_bool(value: bool | str) -> bool:
  return value if isinstance(value, bool) else str(value).lower() in ('1', 'true', 'yes')


@gin.configurable
def search(exp_dir: str = gin.REQUIRED,
           query: str = '',
           k: int | str = 3,
           backend: str = 'bm25',
           http_config: http_lib.HttpSearchConfig | None = None,
           use_cache: bool | str = False) -> list:
  """Prints the top-`k` results for `query`.

  Args:
    exp_dir: the experiment directory.
    query: the query (`--query "..."`); several may be separated by ' || '.
    k: hits per query.
    backend: 'bm25' or 'http'.
    http_config: the HTTP backend's description.
    use_cache: go through the experiment's query cache.

  Returns:
    The results, one list per query.
  """
  if not query.strip():
    raise errors.UserError('search needs --query "..."')
  try:
    k = int(k)
  except ValueError:
    raise errors.UserError(f'search --k must be an integer, got {k!r}') from None
  tool = make_search_tool(exp_dir, backend, http_config, _as_bool(use_cache))
  queries = [q.strip() for q in query.split(' || ') if q.strip()]
  results = tool.search(queries, k)
  for q, hits in zip(queries, results):
    print(f'query: {q}')
    if not hits:
      print('  (no results)')
    for hit in hits:
      print(f'  [{hit.link_id}] {hit.link_text}  ({hit.doc_id})')
      print(f'      {hit.snippet}')
  if isinstance(tool, cache_lib.CachedSearch):
    print(f'cache: {tool.stats.hits} hits, {tool.stats.misses} misses')
  return results
