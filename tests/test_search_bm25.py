"""Tests for the BM25 backend: ranking, snippets, persistence, bad corpora."""

import json

import pytest

from restreact_jax import errors
from restreact_jax.search import bm25
from restreact_jax.search.types import ResultItem

CORPUS = [
    {'id': 'a/0', 'title': 'Kelmar Works',
     'text': 'Kelmar Works is a company. Kelmar Works was founded by Dora Senlin in 1950. '
             'The logo of Kelmar Works is a blue circle.'},
    {'id': 'a/1', 'title': 'Kelmar Works',
     'text': 'Kelmar Works has its headquarters in Fenvale.'},
    {'id': 'b/0', 'title': 'Dora Senlin',
     'text': 'Dora Senlin was born in Ostmere in 1921. Dora Senlin founded the company Kelmar Works.'},
    {'id': 'c/0', 'title': 'Fenvale',
     'text': 'Fenvale is a city. The city of Fenvale lies in the country of Ravia.'},
    {'id': 'd/0', 'title': 'Long Story',
     'text': ' '.join(f'Sentence number {i} talks about rivers and hills.' for i in range(30))},
]


def _write(path, rows):
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  return path


@pytest.fixture
def tool(tmp_path):
  corpus = _write(tmp_path / 'corpus.jsonl', CORPUS)
  bm25.build_index(corpus, tmp_path / 'index')
  return bm25.BM25Search(tmp_path / 'index')


def test_top_hit_is_the_passage_stating_the_fact(tool):
  (hits,) = tool.search(['Kelmar Works founded'], k=3)
  assert hits[0].doc_id == 'a/0'
  assert [h.link_id for h in hits] == list(range(1, len(hits) + 1))
  assert hits[0].link_text == 'Kelmar Works'
  assert 'founded by Dora Senlin' in hits[0].snippet
  (hits,) = tool.search(['Kelmar Works headquarters'], k=3)
  assert hits[0].doc_id == 'a/1'


def test_stemming_matches_word_forms(tool):
  (hits,) = tool.search(['who was the founder of kelmar works'], k=1)
  assert hits[0].doc_id in ('a/0', 'b/0')
  (hits,) = tool.search(['Fenvale countries'], k=1)
  assert hits[0].doc_id == 'c/0'


def test_batched_search_keeps_query_order(tool):
  results = tool.search(['Fenvale country', 'Dora Senlin born', 'Kelmar Works headquarters'], k=2)
  assert [r[0].doc_id for r in results] == ['c/0', 'b/0', 'a/1']


def test_nothing_matches_gives_no_hits(tool):
  assert tool.search(['zzzqqq', 'the of and'], k=3) == [[], []]
  assert tool.search([], k=3) == []


def test_k_larger_than_corpus_is_clamped(tool):
  (hits,) = tool.search(['Kelmar Works'], k=50)
  assert 0 < len(hits) <= len(CORPUS)
  with pytest.raises(errors.UserError, match='k must be'):
    tool.search(['x'], k=0)


def test_snippets_are_bounded_sentence_windows(tool):
  (hits,) = tool.search(['sentence number 17 rivers'], k=1)
  snippet = hits[0].snippet
  assert len(snippet) <= 200
  assert 'number 17 ' in snippet
  assert snippet.startswith('Sentence number') and snippet.endswith('hills.')
  for hit in tool.search(['Kelmar Works founded'], k=3)[0]:
    assert len(hit.snippet) <= 200


def test_best_window_cuts_one_long_sentence_at_a_word():
  tok = bm25._tokenizer()  # pylint: disable=protected-access
  text = 'word ' * 100 + 'end.'
  window = bm25.best_window(text, {'word'}, tok, 50)
  assert len(window) <= 50 and window.endswith('...')


def test_index_reloads_to_identical_results(tool, tmp_path):
  queries = ['Kelmar Works founded', 'Fenvale country', 'Dora Senlin']
  again = bm25.BM25Search(tmp_path / 'index')
  assert again.search(queries, 3) == tool.search(queries, 3)
  assert again.config_hash == tool.config_hash
  assert all(isinstance(h, ResultItem) for r in again.search(queries, 3) for h in r)


def test_config_hash_follows_the_corpus(tool, tmp_path):
  other = _write(tmp_path / 'other.jsonl', CORPUS[:3])
  bm25.build_index(other, tmp_path / 'other_index')
  assert bm25.BM25Search(tmp_path / 'other_index').config_hash != tool.config_hash


@pytest.mark.parametrize('line, message', [
    ('{"id": "x", "title": "t"}', ':2: a corpus row needs'),
    ('not json', ':2: not valid JSON'),
    ('{"id": "a/0", "title": "t", "text": "dup"}', ":2: duplicate passage id 'a/0'"),
])
def test_bad_corpus_rows_are_named_by_line(tmp_path, line, message):
  corpus = tmp_path / 'bad.jsonl'
  corpus.write_text(json.dumps(CORPUS[0]) + '\n' + line + '\n')
  with pytest.raises(errors.UserError, match=message):
    bm25.build_index(corpus, tmp_path / 'index')
  assert not (tmp_path / 'index').exists()


def test_missing_index_is_a_user_error(tmp_path):
  with pytest.raises(errors.UserError, match='no BM25 index'):
    bm25.BM25Search(tmp_path / 'nowhere')
