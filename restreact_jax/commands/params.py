"""`restreact params`: parameter counts and training FLOPs/token of a model config.

  restreact params --gin_file=gin/models/s.gin [--seq_len=512]

Counts come from the parameter shapes of `jax.eval_shape(model.init)`, so even
real-scale configs (gin/models/llama3_8b.gin) answer instantly with no memory.
"""

from __future__ import annotations

import json as json_lib
from typing import Any

import flax.linen as nn
import gin
import jax
import jax.numpy as jnp
import numpy as np

from restreact_jax import errors
from restreact_jax import gin_utils
from restreact_jax.models import configs
from restreact_jax.models.transformer import Transformer

_EMBEDDING_PARAMS = ('embedding', 'lm_head')


def count_params(config: configs.TransformerConfig) -> dict[str, int]:
  """Parameter counts from abstract shapes (nothing is allocated).

  Args:
    config: the architecture.

  Returns:
    `{'total', 'embedding', 'non_embedding'}` counts; `embedding` is the input
    table plus an untied output projection.
  """
  boxed = jax.eval_shape(Transformer(config).init, jax.random.key(0),
                         jnp.zeros((1, 1), jnp.int32))
  params = nn.meta.unbox(boxed)['params']
  total = sum(int(np.prod(leaf.shape)) for leaf in jax.tree.leaves(params))
  embedding = sum(int(np.prod(params[name].shape)) for name in _EMBEDDING_PARAMS
                  if name in params)
  return {'total': total, 'embedding': embedding, 'non_embedding': total - embedding}


def _human(n: float) -> str:
  for unit, scale in (('T', 1e12), ('B', 1e9), ('M', 1e6), ('K', 1e3)):
    if abs(n) >= scale:
      return f'{n / scale:.2f}{unit}'
  return f'{n:.0f}'


@gin.configurable
def params(model: configs.TransformerConfig | None = None,
           seq_len: int | str | None = None,
           json: bool | str = False) -> dict[str, Any]:
  """Prints parameter counts and FLOPs/token of `model` (default: `%MODEL`).

  Args:
    model: the architecture; unset, the `MODEL` macro of the gin files.
    seq_len: sequence length for the attention FLOPs; default `model.max_len`.
    json: print one JSON object instead of the table.

  Returns:
    The numbers printed, as a dict.
  """
  model = model if model is not None else gin_utils.macro_value('MODEL')
  if model is None:
    raise errors.UserError('params: no model; pass --gin_file=gin/models/<size>.gin '
                           '(which sets MODEL) or bind params.model')
  if not isinstance(model, configs.TransformerConfig):
    raise errors.UserError(f'params: model must be a models.TransformerConfig, got '
                           f'{type(model).__name__}')
  try:
    seq_len = model.max_len if seq_len is None else int(seq_len)
  except ValueError:
    raise errors.UserError(f'params: --seq_len must be an int, got {seq_len!r}') from None
  if seq_len <= 0:
    raise errors.UserError(f'params: --seq_len must be positive, got {seq_len}')
  counts = count_params(model)
  result = {
      **counts,
      'flops_per_token': configs.flops_per_token(model, seq_len),
      'seq_len': seq_len,
      'family': model.family,
  }
  if str(json).lower() in ('1', 'true', 'yes'):
    print(json_lib.dumps(result))
    return result
  print(f'model: {model.family}  layers={model.num_layers} embed={model.embed_dim} '
        f'heads={model.num_heads}/{model.num_kv_heads} head_dim={model.head_dim} '
        f'mlp={model.mlp_dim} vocab={model.vocab_size} tied={model.tie_embeddings}')
  for name in ('total', 'embedding', 'non_embedding'):
    label = f'params {name.replace("_", "-")}:'
    print(f'{label:<24}{counts[name]:>16,}  ({_human(counts[name])})')
  flops = result['flops_per_token']
  print(f'{"train FLOPs/token:":<24}{flops:>16.4g}  ({_human(flops)}, seq_len={seq_len})')
  return result
