"""Building blocks for SeqIO task registration: features, record files, helpers.

The pattern every task in this package follows:

- Training data lives in **files** (TFRecord of `tf.train.Example`), read by
  `seqio.TFExampleDataSource`, so shuffling and multi-host sharding are
  deterministic and restartable. `write_examples` writes such files
  atomically; `corpus_to_tfrecord` converts the world's `corpus.jsonl`.
- Tasks whose files live in an experiment directory are registered **at run
  time** by a function taking the paths (`register_corpus_task`,
  `register_text_to_text_task`); re-registering a name replaces the old task,
  so a long-lived process can move on to the next generation.
- Mixtures combine registered tasks (`register_mixture`).
- Text is tokenized with the vocabulary the caller names (a SentencePiece
  model path, or '' for bytes) — `inputs` without EOS (the prompt is
  continued), `targets` with EOS.

Built-in tasks that need no experiment directory register on import (see
`tasks/smoke.py`); `import tasks` registers them all.
"""

from __future__ import annotations

import functools
import os
import pathlib
import tempfile
from typing import Any, Iterable, Mapping, Sequence

import seqio
import tensorflow as tf

from restreact_jax import errors, jsonl
from restreact_jax import vocab as vocab_lib


def output_features(vocab_path: str | os.PathLike[str] | None,
                    with_inputs: bool = True) -> dict[str, seqio.Feature]:
  """The task's output features over the vocabulary at `vocab_path`.

  Args:
    vocab_path: a SentencePiece model, or None/'' for `seqio.ByteVocabulary`.
    with_inputs: include an `inputs` feature (prompt → target tasks).

  Returns:
    `{'inputs': ..., 'targets': ...}` (or `targets` only).
  """
  vocabulary = _vocabulary(str(vocab_path or ''))
  features = {'targets': seqio.Feature(vocabulary, add_eos=True, dtype=tf.int32)}
  if with_inputs:
    # The prompt is continued by the target, so no EOS between them.
    features = {'inputs': seqio.Feature(vocabulary, add_eos=False, dtype=tf.int32),
                **features}
  return features


@functools.lru_cache(maxsize=16)
def _vocabulary(vocab_path: str) -> seqio.Vocabulary:
  return vocab_lib.load_vocabulary(vocab_path or None)


def remove(name: str) -> None:
  """Drops a task or mixture so the name can be registered again."""
  if name in seqio.MixtureRegistry.names():
    seqio.MixtureRegistry.remove(name)
  if name in seqio.TaskRegistry.names():
    seqio.TaskRegistry.remove(name)


def _bytes_feature(text: str) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[text.encode('utf-8')]))


def write_examples(path: str | os.PathLike[str],
                   records: Iterable[Mapping[str, str]]) -> int:
  """Writes string records as a TFRecord of `tf.train.Example`s, atomically.

  Args:
    path: the output file; written under a temporary name and renamed.
    records: mappings of feature name to text (e.g. `inputs`, `targets`).

  Returns:
    The number of records written.
  """
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
  os.close(fd)
  count = 0
  try:
    with tf.io.TFRecordWriter(tmp) as writer:
      for record in records:
        example = tf.train.Example(features=tf.train.Features(
            feature={k: _bytes_feature(v) for k, v in record.items()}))
        writer.write(example.SerializeToString())
        count += 1
    os.replace(tmp, path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)
  return count


def _read_corpus(corpus_jsonl: pathlib.Path) -> Iterable[dict[str, str]]:
  for lineno, doc in jsonl.iter_jsonl_numbered(corpus_jsonl):
    if not isinstance(doc.get('text'), str):
      raise errors.UserError(f'{corpus_jsonl}:{lineno}: expected an object with a "text" '
                             'string (and "id", "title")')
    title = str(doc.get('title', '')).strip()
    # The title heads the page, as an encyclopedia shows it.
    yield {'targets': f'{title}\n{doc["text"]}' if title else doc['text']}


def corpus_to_tfrecord(corpus_jsonl: str | os.PathLike[str],
                       tfrecord: str | os.PathLike[str] | None = None) -> pathlib.Path:
  """Converts `{"id","title","text"}` JSONL to a TFRecord of `targets` (cached).

  The conversion is skipped when the TFRecord is newer than the JSONL.

  Args:
    corpus_jsonl: the corpus file.
    tfrecord: the output; default: beside the corpus with `.tfrecord` suffix.

  Returns:
    The TFRecord path.
  """
  src = pathlib.Path(corpus_jsonl)
  if not src.is_file():
    raise errors.UserError(f'corpus file not found: {src}')
  dst = pathlib.Path(tfrecord) if tfrecord else src.with_suffix('.tfrecord')
  if dst.is_file() and dst.stat().st_mtime >= src.stat().st_mtime:
    return dst
  if write_examples(dst, _read_corpus(src)) == 0:
    dst.unlink()
    raise errors.UserError(f'corpus file is empty: {src}')
  return dst


def split_targets(dataset: tf.data.Dataset,
                  sequence_length: Mapping[str, int]) -> tf.data.Dataset:
  """Appends EOS to tokenized `targets` and cuts them into rows that fit.

  A long corpus page would otherwise be trimmed to its first chunk. Only the
  page's last chunk ends with EOS, so the model never learns to stop mid-page.

  Args:
    dataset: examples with int `targets` (no EOS yet).
    sequence_length: the task feature lengths; `targets` is used.

  Returns:
    A dataset with one example per chunk.
  """
  size = max(1, int(sequence_length['targets']))

  def chunks(ex):
    tokens = tf.concat([ex['targets'], [vocab_lib.EOS_ID]], axis=0)
    starts = tf.range(0, tf.size(tokens), size)
    return tf.data.Dataset.from_tensor_slices(starts).map(
        lambda start: {'targets': tokens[start:start + size]})

  return dataset.flat_map(chunks)


def register_corpus_task(name: str,
                         corpus_jsonl: str | os.PathLike[str],
                         vocab_path: str | os.PathLike[str] | None,
                         tfrecord: str | os.PathLike[str] | None = None) -> seqio.Task:
  """Registers a language-modelling task over a corpus JSONL (all of it `train`).

  Args:
    name: task name (replaces an existing task of that name).
    corpus_jsonl: `{"id","title","text"}` records; converted once to TFRecord.
    vocab_path: SentencePiece model, or None for bytes.
    tfrecord: where the converted corpus goes (default beside the JSONL).

  Returns:
    The registered task.
  """
  record = corpus_to_tfrecord(corpus_jsonl, tfrecord)
  remove(name)
  return seqio.TaskRegistry.add(
      name,
      source=seqio.TFExampleDataSource(
          {'train': str(record)},
          feature_description={'targets': tf.io.FixedLenFeature([], tf.string)}),
      # EOS is added by `split_targets` (to each page, not to each chunk).
      preprocessors=[seqio.preprocessors.tokenize, split_targets],
      output_features=output_features(vocab_path, with_inputs=False),
  )


def _only_step_type(dataset: tf.data.Dataset, step_type: str) -> tf.data.Dataset:
  """The records of one step type, as `inputs` / `targets` pairs."""
  dataset = dataset.filter(lambda ex: tf.equal(ex['step_type'], step_type))
  return dataset.map(lambda ex: {'inputs': ex['inputs'], 'targets': ex['targets']},
                     num_parallel_calls=tf.data.AUTOTUNE)


def register_text_to_text_task(name: str,
                               files: Mapping[str, str | Sequence[str]] | Sequence[str],
                               vocab_path: str | os.PathLike[str] | None,
                               step_type: str | None = None) -> seqio.Task:
  """Registers an `inputs` → `targets` task over TFRecord files.

  Args:
    name: task name (replaces an existing task of that name).
    files: `{split: file or files or glob}`; a plain list means `train`.
      Records are `tf.train.Example`s with `inputs` and `targets` strings (see
      `write_examples`).
    vocab_path: SentencePiece model, or None for bytes.
    step_type: keep only the records whose `step_type` feature is this (None:
      every record).

  Returns:
    The registered task.
  """
  if not isinstance(files, Mapping):
    files = {'train': list(files)}
  split_to_files = {}
  for split, pattern in files.items():
    patterns = [pattern] if isinstance(pattern, (str, os.PathLike)) else list(pattern)
    found = [f for p in patterns for f in sorted(tf.io.gfile.glob(str(p)))]
    if not found:
      raise errors.UserError(f'task {name!r}: no files match {", ".join(map(str, patterns))} '
                             f'(split {split!r})')
    split_to_files[split] = found
  remove(name)
  features = {
      'inputs': tf.io.FixedLenFeature([], tf.string),
      'targets': tf.io.FixedLenFeature([], tf.string),
  }
  selection = []
  if step_type is not None:
    features['step_type'] = tf.io.FixedLenFeature([], tf.string, default_value='')
    selection = [functools.partial(_only_step_type, step_type=step_type)]
  return seqio.TaskRegistry.add(
      name,
      source=seqio.TFExampleDataSource(split_to_files, feature_description=features),
      preprocessors=[
          *selection,
          seqio.preprocessors.tokenize,
          seqio.preprocessors.append_eos_after_trim,
      ],
      output_features=output_features(vocab_path),
  )


def register_mixture(name: str, tasks: Sequence[str | tuple[str, float]],
                     default_rate: Any = None) -> seqio.Mixture:
  """Registers (or replaces) a mixture of registered tasks.

  Args:
    name: mixture name.
    tasks: task names, or `(name, rate)` pairs.
    default_rate: rate for bare names (a float, or a function of the task such
      as `seqio.mixing_rate_num_examples`); default 1.0.

  Returns:
    The registered mixture.
  """
  remove(name)
  return seqio.MixtureRegistry.add(name, list(tasks), default_rate=default_rate or 1.0)
