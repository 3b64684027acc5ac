"""Tests for the shipped datasets, their TFDS builders, and question files."""

import io
import json

import pytest

from restreact_jax import errors
from restreact_jax.datasets import benchmarks
from restreact_jax.datasets import question_file


@pytest.mark.parametrize('name, size', [('bamboogle', 125), ('bamtwoogle', 100)])
def test_plain_loaders(name, size):
  rows = benchmarks.load(name)
  assert len(rows) == size == benchmarks.SIZES[name]
  assert len({r['id'] for r in rows}) == size
  for row in rows:
    assert row['question'].strip() and row['answers'][0] == row['answer']
  assert (benchmarks.DATA_DIR / name / 'SOURCE.md').exists()


def test_licence_files_ship_with_the_data():
  assert 'Attribution 4.0' in (benchmarks.DATA_DIR / 'bamtwoogle' / 'LICENSE').read_text()
  assert 'MIT' in (benchmarks.DATA_DIR / 'bamboogle' / 'SOURCE.md').read_text()


def test_known_rows():
  bamboogle = benchmarks.load_bamboogle()
  assert bamboogle[0]['question'].startswith('Who was president of the United States')
  assert bamboogle[47]['answers'] == [bamboogle[47]['answer'], 'Mildred Gale']
  assert benchmarks.load_bamtwoogle()[0]['answer'] == 'Queen Victoria'
  with pytest.raises(errors.UserError, match='unknown dataset'):
    benchmarks.load('hotpot')


def test_bamtwoogle_csv_and_jsonl_agree():
  loaded = question_file.load_question_file(benchmarks.DATA_DIR / 'bamtwoogle' / 'bamtwoogle.csv')
  assert not loaded.problems
  assert [q['question'] for q in loaded.questions] == [
      r['question'] for r in benchmarks.load_bamtwoogle()]


@pytest.mark.slow
def test_tfds_builders_build_offline(tmp_path):
  from restreact_jax.datasets import tfds_builders
  for name, size in (('bamboogle', 125), ('bamtwoogle', 100)):
    builder = tfds_builders.build(name, tmp_path)
    assert builder.info.splits['test'].num_examples == size
    examples = list(builder.as_dataset(split='test').as_numpy_iterator())
    assert len(examples) == size
    by_id = {e['id'].decode(): e for e in examples}
    first = benchmarks.load(name)[0]
    assert by_id[first['id']]['question'].decode() == first['question']
    assert [a.decode() for a in by_id[first['id']]['answers']] == first['answers']


def _jsonl(tmp_path, lines):
  path = tmp_path / 'qs.jsonl'
  path.write_text('\n'.join(lines) + '\n')
  return path


def test_jsonl_bad_rows_are_reported_by_line_and_good_rows_kept(tmp_path):
  path = _jsonl(tmp_path, [
      json.dumps({'question': 'Who founded X?', 'answer': 'Ann'}),
      '{broken',
      json.dumps({'answer': 'no question'}),
      '',
      json.dumps({'question': 'Q with aliases', 'answers': ['A', 'a.'], 'id': 'mine'}),
      json.dumps({'question': 'bad answers', 'answers': 'A'}),
      json.dumps(['not', 'an', 'object']),
      json.dumps({'question': 'dup id', 'id': 'mine'}),
      json.dumps({'question': 'Unlabelled question?'}),
  ])
  warnings = io.StringIO()
  loaded = question_file.load_question_file(path, warn=warnings)
  assert [q['question'] for q in loaded.questions] == [
      'Who founded X?', 'Q with aliases', 'Unlabelled question?']
  assert loaded.questions[0] == {'id': 'qs-1', 'question': 'Who founded X?',
                                 'answer': 'Ann', 'answers': ['Ann']}
  assert loaded.questions[1]['answers'] == ['A', 'a.']
  assert loaded.questions[2]['answers'] == []
  assert [n for n, _ in loaded.problems] == [2, 3, 6, 7, 8]
  lines = warnings.getvalue().splitlines()
  assert len(lines) == 5
  assert lines[0].startswith(f'{path}:2: skipped: not valid JSON')
  assert 'duplicate id' in lines[4] and lines[4].startswith(f'{path}:8:')


def test_strict_mode_collects_every_problem(tmp_path):
  path = _jsonl(tmp_path, [json.dumps({'question': 'ok'}), '{', json.dumps({'question': ''})])
  with pytest.raises(errors.UserError, match=r'2 bad row\(s\): line 2: .*; line 3: '):
    question_file.load_question_file(path, strict=True)


def test_csv_with_answers_column(tmp_path):
  path = tmp_path / 'qs.csv'
  path.write_text('question,answer,answers\n'
                  '"Who wrote ""B""?",Ann,Ann Lee|Lee\n'
                  ',X,\n'
                  'Where?,,"[""P"", ""Q""]"\n'
                  'Extra,a,b,c\n')
  loaded = question_file.load_question_file(path, warn=None)
  assert [q['question'] for q in loaded.questions] == ['Who wrote "B"?', 'Where?']
  assert loaded.questions[0]['answers'] == ['Ann', 'Ann Lee', 'Lee']
  assert loaded.questions[1]['answers'] == ['P', 'Q']
  assert loaded.problems == [(3, '"question" is missing or empty'),
                             (5, 'more fields than the header has')]


@pytest.mark.parametrize('name, content, message', [
    ('qs.csv', 'query,answer\nx,y\n', ':1: CSV header must have a "question" column'),
    ('qs.txt', 'hello\n', 'must be .jsonl or .csv'),
    ('qs.jsonl', '{\n', r'no valid questions \(1 bad row'),
])
def test_unusable_files_raise_one_user_error(tmp_path, name, content, message):
  path = tmp_path / name
  path.write_text(content)
  with pytest.raises(errors.UserError, match=message):
    question_file.load_question_file(path, warn=None)


def test_missing_file(tmp_path):
  with pytest.raises(errors.UserError, match='not found'):
    question_file.load_question_file(tmp_path / 'nope.jsonl')
