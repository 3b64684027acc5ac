"""Hugging Face checkpoint import: Llama, Qwen2 and Gemma (v1) safetensors.

`load_hf_checkpoint(path)` reads `config.json` into a `TransformerConfig` and
streams the `*.safetensors` files (one, or many listed in
`model.safetensors.index.json`) tensor by tensor: each tensor is read on the
host, put into this project's layout, checked against the model's abstract
shape and placed on the devices with the sharding the partitioning rules give
it, before the next one is read. No second full copy is ever held.
`load(path, config)` returns just the params, after checking the checkpoint
fits the configuration the caller will run.

Layout (ours <- Hugging Face, `torch.nn.Linear` weights are `[out, in]`):

  embedding [V, D]                 <- model.embed_tokens.weight
  layers_i/attn/q_proj [D, H, hd]  <- self_attn.q_proj.weight [H*hd, D]
  layers_i/attn/{k,v}_proj         <- the same with K heads
  layers_i/attn/{q,k,v}_bias       <- self_attn.{q,k,v}_proj.bias (Qwen2)
  layers_i/attn/o_proj [H, hd, D]  <- self_attn.o_proj.weight [D, H*hd]
  layers_i/mlp/{gate,up}_proj      <- mlp.{gate,up}_proj.weight, transposed
  layers_i/mlp/down_proj           <- mlp.down_proj.weight, transposed
  layers_i/{attn,mlp}_norm/scale   <- {input,post_attention}_layernorm.weight
  final_norm/scale                 <- model.norm.weight
  lm_head [D, V]                   <- lm_head.weight, transposed (untied only)

RoPE uses the same rotate-half layout as Hugging Face, so q/k need no
permutation; Gemma's `(1 + w)` norm weights are stored as-is (`norm_offset`).
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util
from safetensors import safe_open
from tqdm import tqdm

from restreact_jax import errors, partitioning
from restreact_jax.models.configs import TransformerConfig
from restreact_jax.models.transformer import Transformer

SUPPORTED_MODEL_TYPES = ('llama', 'qwen2', 'gemma')
INDEX_FILE = 'model.safetensors.index.json'
_DTYPES = {'float32': 'float32', 'bfloat16': 'bfloat16', 'float16': 'float16'}
_TANH_GELUS = ('gelu_pytorch_tanh', 'gelu_new', 'gelu_fast', 'gelu')
# Buffers some exporters save that carry no weights.
_IGNORED = re.compile(r'.*\.rotary_emb\.inv_freq$')

Transform = Callable[[np.ndarray], np.ndarray]


def _get(config: dict[str, Any], key: str, default: Any = None) -> Any:
  value = config.get(key, default)
  return default if value is None else value


def _rope_theta(hf: dict[str, Any], where: str) -> float:
  """RoPE base from `rope_parameters` (transformers >= 5) or the older keys."""
  params = hf.get('rope_parameters') or {}
  scaling = hf.get('rope_scaling') or {}
  rope_type = params.get('rope_type') or scaling.get('rope_type') or scaling.get('type')
  if rope_type not in (None, 'default'):
    raise errors.UserError(f'{where}: RoPE scaling {rope_type!r} is not supported '
                           '(only plain RoPE)')
  return float(params.get('rope_theta', hf.get('rope_theta', 10_000.0)))


def config_from_hf(hf: dict[str, Any], *, dtype: str | None = None,
                   where: str = 'config.json') -> TransformerConfig:
  """Maps a Hugging Face `config.json` dict to a `TransformerConfig`.

  Args:
    hf: the parsed config.json of a Llama, Qwen2 or Gemma (v1) checkpoint.
    dtype: compute and parameter dtype; default the checkpoint's own
      (`dtype` / `torch_dtype`), float32 when it names none.
    where: how errors name the source.

  Returns:
    The matching `TransformerConfig`.

  Raises:
    UserError: unsupported model type or feature, or a missing field.
  """
  model_type = hf.get('model_type')
  if model_type not in SUPPORTED_MODEL_TYPES:
    raise errors.UserError(f'{where}: model_type {model_type!r} is not supported; '
                           f'expected one of {SUPPORTED_MODEL_TYPES}')
  try:
    embed_dim = int(hf['hidden_size'])
    num_heads = int(hf['num_attention_heads'])
    fields = dict(
        vocab_size=int(hf['vocab_size']),
        embed_dim=embed_dim,
        num_layers=int(hf['num_hidden_layers']),
        num_heads=num_heads,
        num_kv_heads=int(_get(hf, 'num_key_value_heads', num_heads)),
        head_dim=int(_get(hf, 'head_dim', embed_dim // num_heads)),
        mlp_dim=int(hf['intermediate_size']),
    )
  except KeyError as e:
    raise errors.UserError(f'{where}: missing field {e.args[0]!r}') from None
  if hf.get('attention_bias') or hf.get('mlp_bias'):
    raise errors.UserError(f'{where}: attention_bias/mlp_bias checkpoints are not supported')
  if hf.get('use_sliding_window'):
    raise errors.UserError(f'{where}: sliding-window attention is not supported')
  if hf.get('use_bidirectional_attention'):
    raise errors.UserError(f'{where}: bidirectional attention is not supported')

  if model_type == 'gemma':
    act = _get(hf, 'hidden_activation', _get(hf, 'hidden_act', 'gelu_pytorch_tanh'))
    if act not in _TANH_GELUS:
      raise errors.UserError(f'{where}: Gemma activation {act!r} is not supported')
    # Gemma v1 runs the tanh GELU even where its config says 'gelu'.
    activation = 'gelu'
  else:
    act = _get(hf, 'hidden_act', 'silu')
    if act != 'silu':
      raise errors.UserError(f'{where}: hidden_act {act!r} is not supported (silu only)')
    activation = 'silu'

  if dtype is None:
    dtype = _DTYPES.get(str(_get(hf, 'dtype', _get(hf, 'torch_dtype', 'float32'))), 'float32')
  is_gemma = model_type == 'gemma'
  return TransformerConfig(
      **fields,
      activation=activation,
      norm_eps=float(_get(hf, 'rms_norm_eps', 1e-6)),
      norm_offset=is_gemma,
      rope_theta=_rope_theta(hf, where),
      tie_embeddings=bool(_get(hf, 'tie_word_embeddings', is_gemma)),
      scale_embeddings=is_gemma,
      qkv_bias=model_type == 'qwen2',
      max_len=int(_get(hf, 'max_position_embeddings', 2048)),
      dtype=dtype,
      param_dtype=dtype,
      family=model_type,
  )


def _tensor_map(config: TransformerConfig) -> dict[str, tuple[tuple[str, ...], Transform]]:
  """Hugging Face tensor name -> (our parameter path, layout transform)."""
  d, n, kv, hd = config.embed_dim, config.num_heads, config.num_kv_heads, config.head_dim

  def heads_in(num: int) -> Transform:
    return lambda w: w.reshape(num, hd, d).transpose(2, 0, 1)

  def heads_bias(num: int) -> Transform:
    return lambda b: b.reshape(num, hd)

  same: Transform = lambda w: w
  out = {
      'model.embed_tokens.weight': (('embedding',), same),
      'model.norm.weight': (('final_norm', 'scale'), same),
  }
  if not config.tie_embeddings:
    out['lm_head.weight'] = (('lm_head',), lambda w: w.T)
  for i in range(config.num_layers):
    hf, ours = f'model.layers.{i}.', f'layers_{i}'
    out.update({
        hf + 'input_layernorm.weight': ((ours, 'attn_norm', 'scale'), same),
        hf + 'post_attention_layernorm.weight': ((ours, 'mlp_norm', 'scale'), same),
        hf + 'self_attn.q_proj.weight': ((ours, 'attn', 'q_proj'), heads_in(n)),
        hf + 'self_attn.k_proj.weight': ((ours, 'attn', 'k_proj'), heads_in(kv)),
        hf + 'self_attn.v_proj.weight': ((ours, 'attn', 'v_proj'), heads_in(kv)),
        hf + 'self_attn.o_proj.weight': ((ours, 'attn', 'o_proj'),
                                         lambda w: w.T.reshape(n, hd, d)),
        hf + 'mlp.gate_proj.weight': ((ours, 'mlp', 'gate_proj'), lambda w: w.T),
        hf + 'mlp.up_proj.weight': ((ours, 'mlp', 'up_proj'), lambda w: w.T),
        hf + 'mlp.down_proj.weight': ((ours, 'mlp', 'down_proj'), lambda w: w.T),
    })
    if config.qkv_bias:
      for name, num in (('q', n), ('k', kv), ('v', kv)):
        out[hf + f'self_attn.{name}_proj.bias'] = ((ours, 'attn', f'{name}_bias'),
                                                   heads_bias(num))
  return out


def _checkpoint_files(directory: pathlib.Path) -> list[pathlib.Path]:
  """The safetensors files to read: those of the index, else every one present."""
  index = directory / INDEX_FILE
  if index.exists():
    try:
      weight_map = json.loads(index.read_text())['weight_map']
    except (ValueError, KeyError) as e:
      raise errors.UserError(f'{index}: not a safetensors index ({e})') from None
    files = [directory / name for name in sorted(set(weight_map.values()))]
    for f in files:
      if not f.exists():
        raise errors.UserError(f'{index}: lists {f.name}, which is missing')
    return files
  files = sorted(directory.glob('*.safetensors'))
  if not files:
    raise errors.UserError(f'{directory}: no *.safetensors files (convert .bin/.pth '
                           'checkpoints to safetensors first)')
  return files


def _read_config(directory: pathlib.Path) -> dict[str, Any]:
  if not directory.is_dir():
    raise errors.UserError(f'{directory}: not a checkpoint directory')
  path = directory / 'config.json'
  if not path.exists():
    raise errors.UserError(f'{path}: missing (a Hugging Face checkpoint needs config.json)')
  try:
    return json.loads(path.read_text())
  except ValueError as e:
    raise errors.UserError(f'{path}: invalid JSON ({e})') from None


def _convert(raw: np.ndarray, transform: Transform, expected: tuple[int, ...],
             where: str, target: str) -> np.ndarray:
  """Applies the layout transform and checks the result against the model."""
  try:
    value = np.asarray(transform(raw))
  except ValueError:
    value = None  # cannot even be reshaped: report like any mismatch
  if value is None or value.shape != tuple(expected):
    raise errors.UserError(f'{where} has shape {tuple(raw.shape)}, which does not fit '
                           f'{target} {tuple(expected)} implied by config.json')
  return value


def _place(value: np.ndarray, sharding: jax.sharding.Sharding | None) -> jax.Array:
  """Puts one host tensor on the devices; with a sharding, only local shards."""
  if sharding is None:
    return jax.device_put(value)
  # Each process transfers just its addressable shards (multi-host safe).
  return jax.make_array_from_callback(value.shape, sharding, lambda index: value[index])


def load_hf_checkpoint(path: str | pathlib.Path, *,
                       mesh: jax.sharding.Mesh | None = None,
                       rules: partitioning.Rules | None = None,
                       dtype: str | None = None) -> tuple[TransformerConfig, dict[str, Any]]:
  """Loads a Llama / Qwen2 / Gemma safetensors checkpoint as our params.

  Args:
    path: the checkpoint directory (config.json and *.safetensors).
    mesh: when given, every parameter is placed with its sharding on `mesh`;
      otherwise on the default device.
    rules: logical-axis rules; default `partitioning.logical_axis_rules()`.
    dtype: parameter and compute dtype ('float32', 'bfloat16', 'float16');
      default the checkpoint's.

  Returns:
    `(config, params)` with `params` the unboxed tree `Transformer(config)`
    takes as `{'params': params}`.

  Raises:
    UserError: missing files, unsupported model, unknown or missing tensors,
      or a tensor whose shape does not fit the config.
  """
  directory = pathlib.Path(path)
  hf_config = _read_config(directory)
  config = config_from_hf(hf_config, dtype=dtype, where=str(directory / 'config.json'))
  files = _checkpoint_files(directory)

  boxed = jax.eval_shape(Transformer(config).init, jax.random.key(0),
                         jnp.zeros((1, 1), jnp.int32))['params']
  abstract = traverse_util.flatten_dict(nn.meta.unbox(boxed))
  shardings = None
  if mesh is not None:
    rules = partitioning.logical_axis_rules() if rules is None else rules
    shardings = traverse_util.flatten_dict(partitioning.boxed_shardings(boxed, mesh, rules))

  mapping = _tensor_map(config)
  target_dtype = config.params_dtype
  flat: dict[tuple[str, ...], jax.Array] = {}
  host = jax.devices('cpu')[0]
  with tqdm(total=len(mapping), desc=f'import {config.family} checkpoint', unit='tensor',
            disable=None) as progress:
    for file in files:
      # The flax backend reads bf16 too; keep the read on the host CPU.
      with jax.default_device(host), safe_open(str(file), framework='flax') as reader:
        for name in reader.keys():
          if _IGNORED.match(name) or (name == 'lm_head.weight' and config.tie_embeddings):
            continue  # buffers, or the tied copy some exporters also save
          if name not in mapping:
            raise errors.UserError(f'{file}: unknown tensor {name!r} for a '
                                   f'{config.family} model of {config.num_layers} layers')
          target, transform = mapping[name]
          value = _convert(np.asarray(reader.get_tensor(name)), transform,
                           abstract[target].shape, f'{file}: tensor {name!r}',
                           '/'.join(target)).astype(target_dtype)
          flat[target] = _place(value, None if shardings is None else shardings[target])
          del value
          progress.update(1)
  missing = [name for name, (target, _) in mapping.items() if target not in flat]
  if missing:
    raise errors.UserError(f'{directory}: checkpoint lacks {len(missing)} tensor(s), '
                           f'first {missing[0]!r}')
  return config, traverse_util.unflatten_dict(flat)


# Fields that must agree between a checkpoint and a config it is loaded into;
# dtypes, max_len and family may differ.
_ARCHITECTURE_FIELDS = ('vocab_size', 'embed_dim', 'num_layers', 'num_heads', 'num_kv_heads',
                        'head_dim', 'mlp_dim', 'activation', 'norm_offset', 'rope_theta',
                        'tie_embeddings', 'scale_embeddings', 'qkv_bias')


def load(path: str | pathlib.Path, config: TransformerConfig | None = None, *,
         mesh: jax.sharding.Mesh | None = None,
         rules: partitioning.Rules | None = None) -> dict[str, Any]:
  """Params of a checkpoint, checked against the `config` they will run under.

  Args:
    path: the checkpoint directory.
    config: the configuration the caller will build `Transformer` with; its
      `param_dtype` is used. None accepts the checkpoint's own.
    mesh: optional mesh to place the params on.
    rules: logical-axis rules (default `partitioning.logical_axis_rules()`).

  Returns:
    The unboxed params tree.

  Raises:
    UserError: the checkpoint's architecture differs from `config`.
  """
  directory = pathlib.Path(path)
  if config is not None:
    found = config_from_hf(_read_config(directory), where=str(directory / 'config.json'))
    diff = [f'{name}={getattr(found, name)!r} (config has {getattr(config, name)!r})'
            for name in _ARCHITECTURE_FIELDS if getattr(found, name) != getattr(config, name)]
    if diff:
      raise errors.UserError(f'{directory}: checkpoint does not match the model config: '
                             + ', '.join(diff))
  _, params = load_hf_checkpoint(directory, mesh=mesh, rules=rules,
                                 dtype=None if config is None else config.param_dtype)
  return params
