"""BM25 search over any JSON-lines corpus of `{"id", "title", "text"}` passages.

Built on bm25s (sparse BM25, Lucene scoring) with an English Snowball stemmer
and bm25s's English stopword list, both offline. Title and text are indexed
together. `build_index` tokenizes and indexes once and saves the index beside
the passages; `BM25Search(index_dir)` loads it in a fraction of a second.
Each hit is a `ResultItem` whose snippet is the passage's best-matching window
of whole sentences, at most `max_snippet_chars` long.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pathlib
import re
import shutil
import time
from typing import Sequence

from restreact_jax import errors, jsonl
from restreact_jax.search.types import ResultItem

INDEX_VERSION = 1
_META = 'meta.json'
_PASSAGES = 'passages.jsonl'
logging.getLogger("bm25s").setLevel(logging.WARNING)
_SENTENCE_END = re.compile(r'(?<=[.!?])\s+')


def _tokenizer():
  import bm25s  # pylint: disable=import-outside-toplevel
  import Stemmer  # pylint: disable=import-outside-toplevel
  return bm25s.tokenization.Tokenizer(stopwords='en', stemmer=Stemmer.Stemmer('english'))


def _read_corpus(path: pathlib.Path) -> list[dict[str, str]]:
  """Reads and validates a corpus, naming the file and line of any bad row."""
  if not path.exists():
    raise errors.UserError(f'{path}: corpus file not found')
  rows, seen = [], set()
  for lineno, row in jsonl.iter_jsonl_numbered(path):
    if not all(isinstance(row.get(key), str) for key in ('id', 'title', 'text')):
      raise errors.UserError(
          f'{path}:{lineno}: a corpus row needs string fields "id", "title" and "text"')
    if row['id'] in seen:
      raise errors.UserError(f'{path}:{lineno}: duplicate passage id {row["id"]!r}')
    seen.add(row['id'])
    rows.append({'id': row['id'], 'title': row['title'], 'text': row['text']})
  if not rows:
    raise errors.UserError(f'{path}: corpus is empty')
  return rows


def file_sha256(path: str | os.PathLike[str]) -> str:
  """The sha256 hex digest of a file's bytes."""
  digest = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      digest.update(block)
  return digest.hexdigest()


def build_index(corpus_path: str | os.PathLike[str], index_dir: str | os.PathLike[str],
                show_progress: bool = False) -> pathlib.Path:
  """Indexes a corpus and saves the index atomically.

  Args:
    corpus_path: JSON lines of `{"id", "title", "text"}`.
    index_dir: where the index goes (replaced if present).
    show_progress: show bm25s's tqdm bars.

  Returns:
    `index_dir`.
  """
  import bm25s  # pylint: disable=import-outside-toplevel
  corpus_path = pathlib.Path(corpus_path)
  rows = _read_corpus(corpus_path)
  tokenizer = _tokenizer()
  tokens = tokenizer.tokenize([f'{r["title"]}\n{r["text"]}' for r in rows],
                              return_as='tuple', show_progress=show_progress)
  retriever = bm25s.BM25()
  retriever.index(tokens, show_progress=show_progress)
  target = pathlib.Path(index_dir)
  target.parent.mkdir(parents=True, exist_ok=True)
  tmp = target.with_name(f'.{target.name}.tmp-{os.getpid()}-{time.monotonic_ns()}')
  try:
    retriever.save(str(tmp), show_progress=False)
    tokenizer.save_vocab(str(tmp))
    with open(tmp / _PASSAGES, 'w', encoding='utf-8') as f:
      for row in rows:
        f.write(json.dumps(row, ensure_ascii=False) + '\n')
    meta = {'version': INDEX_VERSION, 'corpus_sha256': file_sha256(corpus_path),
            'num_passages': len(rows), 'stemmer': 'snowball-english', 'stopwords': 'en'}
    (tmp / _META).write_text(json.dumps(meta, indent=2) + '\n')
    if target.exists():
      shutil.rmtree(target)
    os.replace(tmp, target)
  finally:
    if tmp.exists():
      shutil.rmtree(tmp, ignore_errors=True)
  return target


def index_meta(index_dir: str | os.PathLike[str]) -> dict[str, object] | None:
  """The index's meta.json, or None if `index_dir` holds no complete index."""
  path = pathlib.Path(index_dir) / _META
  if not path.exists():
    return None
  return json.loads(path.read_text())


def _stems(tokenizer, text: str) -> set[str]:
  """Lower-cased, stopword-free, stemmed words (the index's own analysis)."""
  words = tokenizer.splitter(text.lower())
  return {tokenizer.stemmer(w) for w in words if w not in tokenizer.stopwords}


def best_window(text: str, query_stems: set[str], tokenizer, max_chars: int) -> str:
  """The run of whole sentences around the best-matching one, within `max_chars`.

  The sentence sharing the most query stems wins (earliest on ties); following,
  then preceding, sentences are added while they fit. A single sentence longer
  than `max_chars` is cut at a word boundary with '...'.
  """
  sentences = [s for s in _SENTENCE_END.split(text.strip()) if s]
  if not sentences:
    return ''
  scores = [len(_stems(tokenizer, s) & query_stems) for s in sentences]
  best = max(range(len(sentences)), key=lambda i: (scores[i], -i))
  lo = hi = best
  length = len(sentences[best])
  while True:
    if hi + 1 < len(sentences) and length + 1 + len(sentences[hi + 1]) <= max_chars:
      hi += 1
      length += 1 + len(sentences[hi])
    elif lo > 0 and length + 1 + len(sentences[lo - 1]) <= max_chars:
      lo -= 1
      length += 1 + len(sentences[lo])
    else:
      break
  window = ' '.join(sentences[lo:hi + 1])
  if len(window) > max_chars:
    window = window[:max_chars - 3].rsplit(' ', 1)[0] + '...'
  return window


class BM25Search:
  """A `SearchTool` over a saved BM25 index.

  Args:
    index_dir: a directory written by `build_index`.
    max_snippet_chars: the longest snippet returned.
  """

  name = 'bm25'

  def __init__(self, index_dir: str | os.PathLike[str], max_snippet_chars: int = 200):
    import bm25s  # pylint: disable=import-outside-toplevel
    self.index_dir = pathlib.Path(index_dir)
    meta = index_meta(self.index_dir)
    if meta is None:
      raise errors.UserError(
          f'{self.index_dir}: no BM25 index here (build it with `restreact world` '
          'or search.bm25.build_index)')
    if meta.get('version') != INDEX_VERSION:
      raise errors.UserError(
          f'{self.index_dir}: index version {meta.get("version")} != {INDEX_VERSION}; rebuild it')
    self.meta = meta
    self.max_snippet_chars = max_snippet_chars
    self._retriever = bm25s.BM25.load(str(self.index_dir), show_progress=False)
    self._tokenizer = _tokenizer()
    self._tokenizer.load_vocab(str(self.index_dir))
    with open(self.index_dir / _PASSAGES, encoding='utf-8') as f:
      self.passages = [json.loads(line) for line in f]

  @property
  def config_hash(self) -> str:
    """Identifies what this backend answers from (the corpus and snippet size)."""
    payload = f'{self.meta["corpus_sha256"]}:{self.meta["version"]}:{self.max_snippet_chars}'
    return hashlib.sha256(payload.encode()).hexdigest()[:16]

  def search(self, queries: Sequence[str], k: int = 3) -> list[list[ResultItem]]:
    """Returns the top-`k` passages for every query (fewer if fewer match).

    Args:
      queries: the query strings.
      k: hits per query.

    Returns:
      One list per query of `ResultItem`s ranked 1..k.
    """
    if not queries:
      return []
    if k < 1:
      raise errors.UserError(f'search k must be >= 1, got {k}')
    k = min(k, len(self.passages))
    query_ids = self._tokenizer.tokenize(list(queries), update_vocab=False,
                                         return_as='ids', show_progress=False)
    docs, scores = self._retriever.retrieve(query_ids, k=k, show_progress=False)
    out = []
    for query, doc_row, score_row in zip(queries, docs, scores):
      stems = _stems(self._tokenizer, query)
      hits = []
      for doc, score in zip(doc_row, score_row):
        if score <= 0:
          continue
        passage = self.passages[int(doc)]
        hits.append(ResultItem(
            link_id=len(hits) + 1, link_text=passage['title'],
            snippet=best_window(passage['text'], stems, self._tokenizer,
                                self.max_snippet_chars),
            doc_id=passage['id']))
      out.append(hits)
    return out
