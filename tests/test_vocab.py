"""Tests for SentencePiece training and the seqio vocabulary."""

import json
import pathlib

import numpy as np
import pytest

from restreact_jax import errors
from restreact_jax import vocab as vocab_lib

_WORDS = ('the', 'river', 'city', 'was', 'founded', 'by', 'queen', 'Ilvara', 'north',
          'capital', 'of', 'Brenmoor', 'in', 'year', 'library', 'tower', 'sword')


def _corpus(path: pathlib.Path, n: int = 400) -> pathlib.Path:
  rng = np.random.default_rng(0)
  with path.open('w') as f:
    for i in range(n):
      text = ' '.join(rng.choice(_WORDS, size=12)) + f' {i}.'
      f.write(json.dumps({'id': str(i), 'title': f'Page {i}', 'text': text}) + '\n')
  return path


@pytest.fixture(scope='module')
def spm_path(tmp_path_factory):
  d = tmp_path_factory.mktemp('vocab')
  return vocab_lib.train_sentencepiece([_corpus(d / 'corpus.jsonl')], d / 'spm.model',
                                       vocab_size=400)


def test_special_ids_and_roundtrip(spm_path):
  v = vocab_lib.load_vocabulary(spm_path)
  assert (v.pad_id, v.eos_id, v.unk_id) == (0, 1, 2)
  text = ("ACTION_SELECTED = ActionWrapper(thoughts=\"é ✓\", action=Search(query='x'))"
          "  # [END]\n    [link_id=17]")
  ids = v.encode(text)
  assert v.decode(ids) == text
  # The TF op seqio uses in pipelines must agree with the Python encoder.
  assert list(v.encode_tf(text).numpy()) == list(ids)


def test_code_symbols_are_single_tokens(spm_path):
  v = vocab_lib.load_vocabulary(spm_path)
  for symbol in ('ACTION_SELECTED', '# [END]', '[link_id=', 'Search(query=', '    ', '\n',
                 'PAST_ACTIONS', 'ResultItem('):
    assert len(v.encode(symbol)) == 1, symbol


def test_training_is_deterministic(tmp_path, spm_path):
  again = vocab_lib.train_sentencepiece([_corpus(tmp_path / 'c.jsonl')], tmp_path / 'b.model',
                                        vocab_size=400)
  assert again.read_bytes() == pathlib.Path(spm_path).read_bytes()


def test_bad_input(tmp_path):
  with pytest.raises(errors.UserError, match='not found'):
    vocab_lib.train_sentencepiece([tmp_path / 'missing.txt'], tmp_path / 'm.model')
  empty = tmp_path / 'empty.txt'
  empty.write_text('\n\n')
  with pytest.raises(errors.UserError, match='empty'):
    vocab_lib.train_sentencepiece([empty], tmp_path / 'm.model')
  with pytest.raises(errors.UserError, match='not found'):
    vocab_lib.load_vocabulary(tmp_path / 'nope.model')
  assert not (tmp_path / 'm.model').exists()


def test_byte_vocabulary_default():
  v = vocab_lib.load_vocabulary(None)
  assert (v.pad_id, v.eos_id) == (0, 1)
  assert v.decode(v.encode('abc\n')) == 'abc\n'
