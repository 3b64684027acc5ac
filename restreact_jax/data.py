"""SeqIO task or mixture → decoder features → sharded global `jax.Array` batches.

`seqio.DecoderFeatureConverter` turns `inputs`/`targets` (or `targets` only)
into `decoder_input_tokens` (shifted right, 0 as BOS), `decoder_target_tokens`
and `decoder_loss_weights` (1 on target tokens only: the prompt is context,
never trained), plus `decoder_segment_ids`/`decoder_positions` when packing.
Each process reads its own shard of the data and contributes its rows of the
global batch (`jax.make_array_from_process_local_data`), so one code path
serves one host and many.

The stream is deterministic for a seed, and its position is the number of
global batches produced; a restarted run rebuilds the stream and skips that
many batches, so it sees exactly what an uninterrupted run would have seen.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator, Mapping

import jax
import numpy as np
import seqio
import tensorflow as tf
from jax.sharding import Mesh

from restreact_jax import errors
from restreact_jax import partitioning

Batch = dict[str, jax.Array]

# Features the model consumes; seqio's `decoder_causal_attention` (prefix-LM
# bidirectional attention) is dropped because the decoder is fully causal.
MODEL_FEATURES = ('decoder_input_tokens', 'decoder_target_tokens', 'decoder_loss_weights')
PACKING_FEATURES = ('decoder_segment_ids', 'decoder_positions')


@dataclasses.dataclass(frozen=True)
class DataConfig:
  """Which data, how long, how many, in what order.

  Attributes:
    mixture_or_task_name: a registered seqio task or mixture.
    task_feature_lengths: e.g. `{'inputs': 512, 'targets': 128}`, or
      `{'targets': 512}` for language modelling.
    batch_size: the global batch (all processes together).
    split: dataset split.
    shuffle: shuffle examples (with `seed`).
    seed: the data seed.
    pack: pack several examples per row (segment ids keep them apart).
    num_epochs: None repeats forever (training); 1 reads once (eval).
    loss_on_targets_only: weight only target tokens (the T5X default for
      inputs/targets tasks); False also trains on the prompt tokens.
  """
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  batch_size: int
  split: str = 'train'
  shuffle: bool = True
  seed: int = 0
  pack: bool = False
  num_epochs: int | None = None
  loss_on_targets_only: bool = True

  def model_length(self) -> int:
    """Length of a model row: inputs and targets are concatenated."""
    return sum(int(v) for v in self.task_feature_lengths.values())


def _get_provider(name: str) -> seqio.DatasetProviderBase:
  try:
    return seqio.get_mixture_or_task(name)
  except ValueError:
    import difflib
    names = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f' Did you mean: {", ".join(close)}?' if close else ''
    raise errors.UserError(f'no seqio task or mixture named {name!r}.{hint}') from None


def get_dataset(config: DataConfig, position: int = 0) -> tf.data.Dataset:
  """This process's batches as a `tf.data.Dataset`, starting at `position`.

  Args:
    config: what to read.
    position: number of global batches to skip (the checkpointed position).

  Returns:
    A dataset of dicts of int32 `[batch_size / process_count, length]` arrays.
  """
  num_processes = jax.process_count()
  if config.batch_size % num_processes:
    raise errors.UserError(f'batch_size {config.batch_size} is not divisible by the '
                           f'{num_processes} processes')
  provider = _get_provider(config.mixture_or_task_name)
  if config.split not in provider.splits:
    raise errors.UserError(f'{config.mixture_or_task_name!r} has no split {config.split!r} '
                           f'(has: {", ".join(provider.splits)})')
  missing = set(provider.output_features) - set(config.task_feature_lengths)
  if missing:
    raise errors.UserError(f'{config.mixture_or_task_name!r} needs lengths for '
                           f'{", ".join(sorted(missing))}; got {dict(config.task_feature_lengths)}')
  lengths = {k: int(v) for k, v in config.task_feature_lengths.items()
             if k in provider.output_features}
  ds = seqio.get_dataset(
      config.mixture_or_task_name,
      task_feature_lengths=lengths,
      feature_converter=seqio.DecoderFeatureConverter(
          pack=config.pack, loss_on_targets_only=config.loss_on_targets_only),
      dataset_split=config.split,
      shuffle=config.shuffle,
      num_epochs=config.num_epochs,
      shard_info=seqio.ShardInfo(index=jax.process_index(), num_shards=num_processes),
      seed=config.seed,
      verbose=False,
  )
  keep = MODEL_FEATURES + (PACKING_FEATURES if config.pack else ())
  ds = ds.map(lambda ex: {k: ex[k] for k in keep}, num_parallel_calls=tf.data.AUTOTUNE)
  ds = ds.batch(config.batch_size // num_processes, drop_remainder=True)
  if position:
    ds = ds.skip(position)
  return ds.prefetch(2)


class BatchIterator:
  """Global, sharded batches with a checkpointable position.

  `position` counts the batches handed out; `BatchIterator(config, mesh,
  position=p)` resumes exactly after the first `p`.
  """

  def __init__(self, config: DataConfig, mesh: Mesh, position: int = 0):
    """Builds the stream.

    Args:
      config: what to read.
      mesh: the device mesh; batches are sharded over its `data` axis.
      position: batches already consumed (skipped).
    """
    self.config = config
    self.mesh = mesh
    self.position = int(position)
    self._sharding = partitioning.batch_sharding(mesh, 2)
    self._it: Iterator[Mapping[str, np.ndarray]] = get_dataset(
        config, self.position).as_numpy_iterator()

  def __iter__(self) -> 'BatchIterator':
    return self

  def __next__(self) -> Batch:
    local = next(self._it)
    self.position += 1
    return {k: jax.make_array_from_process_local_data(self._sharding, np.asarray(v, np.int32))
            for k, v in local.items()}


def numpy_batches(config: DataConfig, num_batches: int | None = None,
                  position: int = 0) -> list[dict[str, np.ndarray]]:
  """This process's batches as numpy (for tests, eval and inspection).

  Args:
    config: what to read.
    num_batches: how many (None: until the dataset ends; needs `num_epochs`).
    position: batches to skip first.

  Returns:
    A list of batches.
  """
  ds = get_dataset(config, position)
  if num_batches is not None:
    ds = ds.take(num_batches)
  elif config.num_epochs is None:
    raise errors.UserError('numpy_batches over a repeating dataset needs num_batches')
  return list(ds.as_numpy_iterator())
