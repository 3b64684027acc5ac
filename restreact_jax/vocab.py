"""SentencePiece training on the corpus and the seqio vocabulary over it.

The vocabulary is T5-style: PAD=0, EOS=1, UNK=2, no BOS, no extra ids. Prompts
are Python code, so the model is trained without text normalization (spaces,
indentation and newlines survive a round trip), with byte fallback (any
character encodes), and with the code-as-prompt keywords and punctuation as
user-defined symbols so each of them costs one token. Training is
deterministic: one thread, all sentences, no sampling.
"""

from __future__ import annotations

import io
import json
import os
import pathlib
import tempfile
from typing import Iterable, Iterator, Sequence

import seqio
import sentencepiece as spm

from restreact_jax import errors

PAD_ID = 0
EOS_ID = 1
UNK_ID = 2

# Written as they appear in text; spaces become SentencePiece's U+2581 marker
# when handed to the trainer (a literal space would never match).
CODE_SYMBOLS: tuple[str, ...] = (
    '\n',
    '    ',
    '# [END]',
    'ACTION_SELECTED',
    'ORIGINAL_QUESTION',
    'PAST_ACTIONS',
    'REMAINING_SEARCHES',
    'CURRENT_SEARCH_RESULTS',
    'ANSWER',
    'ActionWrapper(',
    'Search(query=',
    'Terminate(',
    'SelectLink(',
    'LinkSelection(',
    'Answer(',
    'Check_Answer(passed=',
    'Revise_Answer(revised_answer=',
    'ResultItem(',
    'link_id=',
    'link_text=',
    'snippet=',
    '[link_id=',
    'thoughts=',
    'grounded_summarization=',
    'selected_link_ids=',
    'selected_links=',
    'answer=',
    'action=',
    'List[Action]',
    '# Example',
)

_SPACE_MARKER = '\u2581'
# Lines longer than this are cut for training only (SentencePiece's own limit
# would silently drop them).
_MAX_SENTENCE_BYTES = 16384


def _iter_text(path: pathlib.Path) -> Iterator[str]:
  """Yields training lines from a text file or a `{"title","text"}` JSONL file."""
  is_jsonl = path.suffix in ('.jsonl', '.json')
  with path.open('r', encoding='utf-8') as f:
    for lineno, line in enumerate(f, 1):
      line = line.rstrip('\n')
      if not line.strip():
        continue
      if not is_jsonl:
        yield line
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise errors.UserError(f'{path}:{lineno}: not valid JSON ({e.msg})') from None
      if not isinstance(record, dict):
        raise errors.UserError(f'{path}:{lineno}: expected a JSON object')
      for key in ('title', 'text', 'inputs', 'targets'):
        value = record.get(key)
        if isinstance(value, str) and value.strip():
          yield from (l for l in value.splitlines() if l.strip())


def train_sentencepiece(input_files: Sequence[str | os.PathLike[str]],
                        model_path: str | os.PathLike[str],
                        vocab_size: int = 2048,
                        model_type: str = 'unigram',
                        user_symbols: Iterable[str] = CODE_SYMBOLS,
                        hard_vocab_limit: bool = False) -> pathlib.Path:
  """Trains a SentencePiece model and writes it atomically to `model_path`.

  Args:
    input_files: plain text files (one sentence a line) or JSONL files whose
      records carry `title`/`text` (corpus) or `inputs`/`targets` fields.
    model_path: where the `.model` file goes (written via a temporary name).
    vocab_size: the target number of pieces.
    model_type: 'unigram' or 'bpe'.
    user_symbols: strings that always become single pieces.
    hard_vocab_limit: if False, a small corpus may give fewer pieces than
      `vocab_size` instead of failing.

  Returns:
    The path of the written model.
  """
  if not input_files:
    raise errors.UserError('vocabulary training needs at least one input file')
  paths = [pathlib.Path(p) for p in input_files]
  for p in paths:
    if not p.is_file():
      raise errors.UserError(f'vocabulary input file not found: {p}')
  sentences = []
  for p in paths:
    sentences.extend(line.encode('utf-8')[:_MAX_SENTENCE_BYTES].decode('utf-8', 'ignore')
                     for line in _iter_text(p))
  if not sentences:
    raise errors.UserError(
        f'vocabulary input is empty (no text in {", ".join(str(p) for p in paths)})')
  symbols = [s.replace(' ', _SPACE_MARKER) for s in user_symbols]
  model = io.BytesIO()
  try:
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_writer=model,
        vocab_size=vocab_size,
        model_type=model_type,
        pad_id=PAD_ID, eos_id=EOS_ID, unk_id=UNK_ID, bos_id=-1,
        byte_fallback=True,
        user_defined_symbols=symbols,
        # Code: keep every space, indentation and newline as written.
        normalization_rule_name='identity',
        remove_extra_whitespaces=False,
        add_dummy_prefix=False,
        allow_whitespace_only_pieces=True,
        split_digits=True,
        hard_vocab_limit=hard_vocab_limit,
        max_sentence_length=_MAX_SENTENCE_BYTES,
        # Determinism: every sentence, one thread.
        input_sentence_size=0,
        shuffle_input_sentence=False,
        num_threads=1,
        minloglevel=2,
    )
  except RuntimeError as e:
    raise errors.UserError(f'SentencePiece training on {paths[0]} failed: '
                           f'{str(e).strip().splitlines()[-1]}') from None
  model_path = pathlib.Path(model_path)
  model_path.parent.mkdir(parents=True, exist_ok=True)
  with tempfile.NamedTemporaryFile(dir=model_path.parent, delete=False,
                                   prefix=model_path.name + '.', suffix='.tmp') as f:
    f.write(model.getvalue())
  os.replace(f.name, model_path)
  return model_path


def load_vocabulary(model_path: str | os.PathLike[str] | None) -> seqio.Vocabulary:
  """Returns the seqio vocabulary for a trained model, or bytes when `None`.

  Args:
    model_path: a SentencePiece `.model` file; `None` or '' selects
      `seqio.ByteVocabulary` (PAD=0, EOS=1, UNK=2 too), handy for tests.

  Returns:
    A `seqio.Vocabulary` with PAD=0 and EOS=1.
  """
  if not model_path:
    return seqio.ByteVocabulary()
  path = pathlib.Path(model_path)
  if not path.is_file():
    raise errors.UserError(f'vocabulary model not found: {path}')
  vocab = seqio.SentencePieceVocabulary(str(path), extra_ids=0)
  processor = vocab.tokenizer
  if processor.pad_id() != PAD_ID or processor.eos_id() != EOS_ID:
    raise errors.UserError(f'{path}: expected PAD={PAD_ID} and EOS={EOS_ID}, got '
                           f'PAD={processor.pad_id()} EOS={processor.eos_id()}')
  return vocab
