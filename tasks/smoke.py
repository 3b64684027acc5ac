"""`restreact_smoke`: a tiny built-in inputs → targets task over bytes.

It needs no files and no trained vocabulary, so `gin/experiments/smoke.gin` and
the tests can train end to end anywhere. The examples are generated from a
fixed seed: short fact look-ups in the agent's code-as-prompt style
(`QUESTION = 'capital of Vey?'\nANSWER = '` → `Ilvara'  # [END]`) and string
copies, at most 48 bytes of prompt and 15 of target (the lengths
`gin/experiments/smoke.gin` uses), which a tiny model learns in ~100 steps.
"""

from __future__ import annotations

import random

import seqio
import tensorflow as tf

from tasks import common

TASK_NAME = 'restreact_smoke'
NUM_TRAIN = 256
NUM_VALIDATION = 32

_PLACES = ('Brenmoor', 'Ilvara', 'Cassel', 'Dunmarrow', 'Orlen', 'Vey', 'Tarsk',
           'Quillon', 'Maeris', 'Hollow Fen', 'Sorrowmere', 'Kethra')
_RELATIONS = ('capital of', 'founder of', 'river of', 'language of')
_NAMES = ('Ada', 'Bron', 'Cyra', 'Dov', 'Elin', 'Fen', 'Gala', 'Hask', 'Iro', 'Juna')


def _facts(seed: int = 0) -> list[tuple[str, str]]:
  """A fixed fictional fact table: (relation place) → name."""
  rng = random.Random(seed)
  return [(f'{rel} {place}', rng.choice(_NAMES)) for place in _PLACES for rel in _RELATIONS]


def examples(split: str, seed: int = 0) -> list[dict[str, str]]:
  """The task's examples for `split` ('train' or 'validation').

  Args:
    split: which split.
    seed: generator seed (the default is the registered task).

  Returns:
    Records with `inputs` and `targets` text.
  """
  rng = random.Random(seed + (0 if split == 'train' else 1))
  facts = _facts(seed)
  count = NUM_TRAIN if split == 'train' else NUM_VALIDATION
  records = []
  for i in range(count):
    if i % 2 == 0:
      question, answer = facts[rng.randrange(len(facts))]
      records.append({'inputs': f"QUESTION = '{question}?'\nANSWER = '",
                      'targets': f"{answer}'  # [END]"})
    else:
      word = ''.join(rng.choice('abcdefghij') for _ in range(rng.randint(3, 5)))
      records.append({'inputs': f"copy('{word}') == '", 'targets': f"{word}'  # [END]"})
  return records


def _dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
  del shuffle_files, seed  # one in-memory shard; seqio shuffles examples
  records = examples(split)
  return tf.data.Dataset.from_tensor_slices({
      'inputs': [r['inputs'] for r in records],
      'targets': [r['targets'] for r in records],
  })


def register() -> seqio.Task:
  """Registers (or replaces) `restreact_smoke`."""
  common.remove(TASK_NAME)
  return seqio.TaskRegistry.add(
      TASK_NAME,
      source=seqio.FunctionDataSource(_dataset_fn, splits=('train', 'validation'),
                                      num_input_examples={'train': NUM_TRAIN,
                                                          'validation': NUM_VALIDATION}),
      preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
      output_features=common.output_features(None),
  )


register()
