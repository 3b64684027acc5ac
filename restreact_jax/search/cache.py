"""A persistent query cache around any `SearchTool`.

Results are stored in SQLite (WAL journal, so many processes may read and
write one cache file at once) under the key (backend name, backend config
hash, query, k). A rollout that is run again therefore sees exactly the same
search results and costs no searches. `stats` counts hits and misses of this
object's lifetime.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import sqlite3
import threading
import time
from typing import Sequence

from restreact_jax.search.types import ResultItem, SearchTool

_SCHEMA = """
CREATE TABLE IF NOT EXISTS results (
  backend TEXT NOT NULL,
  config_hash TEXT NOT NULL,
  query TEXT NOT NULL,
  k INTEGER NOT NULL,
  hits TEXT NOT NULL,
  PRIMARY KEY (backend, config_hash, query, k)
)
"""


@dataclasses.dataclass
class CacheStats:
  hits: int = 0
  misses: int = 0

  @property
  def hit_rate(self) -> float:
    total = self.hits + self.misses
    return self.hits / total if total else 0.0


_BUSY_TIMEOUT_S = 60.0


def _enable_wal(db: sqlite3.Connection) -> None:
  """Switches to the WAL journal, waiting while another process does the same.

  SQLite answers this pragma with "database is locked" at once, without its
  busy timeout, while a second process is creating the same new file.
  """
  deadline = time.monotonic() + _BUSY_TIMEOUT_S
  while True:
    try:
      db.execute('PRAGMA journal_mode=WAL')
      return
    except sqlite3.OperationalError as e:
      if 'locked' not in str(e) or time.monotonic() > deadline:
        raise
      time.sleep(0.05)


class CachedSearch:
  """Answers from the cache when it can, from `tool` otherwise (and stores it).

  Args:
    tool: the backend; its `name` and `config_hash` attributes, when present,
      become part of the key (so two corpora never share entries).
    path: the SQLite file (created if missing).
    backend: overrides the backend name in the key.
    config_hash: overrides the backend config hash in the key.
  """

  def __init__(self, tool: SearchTool, path: str | os.PathLike[str],
               backend: str | None = None, config_hash: str | None = None):
    self.tool = tool
    self.path = pathlib.Path(path)
    self.path.parent.mkdir(parents=True, exist_ok=True)
    self.backend = backend or getattr(tool, 'name', type(tool).__name__)
    self.config_hash = config_hash or str(getattr(tool, 'config_hash', ''))
    self.stats = CacheStats()
    self._local = threading.local()
    self._lock = threading.Lock()
    with self._connection() as db:
      db.execute(_SCHEMA)

  @property
  def name(self) -> str:
    return self.backend

  def _connection(self) -> sqlite3.Connection:
    """One connection per thread; WAL lets readers and a writer overlap."""
    db = getattr(self._local, 'db', None)
    if db is None:
      db = sqlite3.connect(self.path, timeout=_BUSY_TIMEOUT_S)
      _enable_wal(db)
      db.execute('PRAGMA synchronous=NORMAL')
      self._local.db = db
    return db

  def _lookup(self, queries: Sequence[str], k: int) -> dict[str, list[ResultItem]]:
    db = self._connection()
    found: dict[str, list[ResultItem]] = {}
    for query in dict.fromkeys(queries):
      row = db.execute(
          'SELECT hits FROM results WHERE backend=? AND config_hash=? AND query=? AND k=?',
          (self.backend, self.config_hash, query, k)).fetchone()
      if row is not None:
        found[query] = [ResultItem(**hit) for hit in json.loads(row[0])]
    return found

  def _store(self, results: dict[str, list[ResultItem]], k: int) -> None:
    rows = [(self.backend, self.config_hash, q, k,
             json.dumps([dataclasses.asdict(h) for h in hits], ensure_ascii=False))
            for q, hits in results.items()]
    with self._connection() as db:  # one transaction
      # First writer wins: a concurrent process that searched the same query
      # keeps the stored answer, so every reader sees one answer per key.
      db.executemany('INSERT OR IGNORE INTO results VALUES (?, ?, ?, ?, ?)', rows)

  def search(self, queries: Sequence[str], k: int = 3) -> list[list[ResultItem]]:
    """Returns the top-`k` hits for every query, searching only cache misses.

    Args:
      queries: the query strings.
      k: hits per query.

    Returns:
      One list of `ResultItem`s per query, as the backend first returned them.
    """
    found = self._lookup(queries, k)
    missing = [q for q in dict.fromkeys(queries) if q not in found]
    if missing:
      fresh = dict(zip(missing, self.tool.search(missing, k)))
      self._store(fresh, k)
      # Re-read so that a result another process stored first wins here too.
      found.update(self._lookup(missing, k))
    with self._lock:
      self.stats.misses += len(missing)
      self.stats.hits += len(queries) - len(missing)
    return [list(found[q]) for q in queries]

  def close(self) -> None:
    db = getattr(self._local, 'db', None)
    if db is not None:
      db.close()
      self._local.db = None
