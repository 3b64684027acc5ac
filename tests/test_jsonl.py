"""Tests for the JSON-lines reader."""

import pytest

from restreact_jax import errors, jsonl


def test_reads_objects_and_skips_blank_lines(tmp_path):
  path = tmp_path / 'a.jsonl'
  path.write_text('{"a": 1}\n\n{"b": 2}\n')
  assert list(jsonl.iter_jsonl_numbered(path)) == [(1, {'a': 1}), (3, {'b': 2})]


def test_torn_tail_only_when_allowed_and_only_at_the_end(tmp_path):
  path = tmp_path / 'a.jsonl'
  path.write_text('{"a": 1}\n{"b": ')
  assert list(jsonl.iter_jsonl(path, torn_tail_ok=True)) == [{'a': 1}]
  with pytest.raises(errors.UserError, match=r'a.jsonl:2: not valid JSON'):
    list(jsonl.iter_jsonl(path))
  path.write_text('{"b": \n{"a": 1}\n')
  with pytest.raises(errors.UserError, match=r'a.jsonl:1: not valid JSON'):
    list(jsonl.iter_jsonl(path, torn_tail_ok=True))


def test_non_objects_and_missing_files(tmp_path):
  path = tmp_path / 'a.jsonl'
  path.write_text('[1, 2]\n')
  with pytest.raises(errors.UserError, match=r'a.jsonl:1: expected a JSON object'):
    list(jsonl.iter_jsonl(path))
  assert list(jsonl.iter_jsonl(path, objects_only=False)) == [[1, 2]]
  with pytest.raises(errors.UserError, match='nope.jsonl: file not found'):
    list(jsonl.iter_jsonl(tmp_path / 'nope.jsonl'))
