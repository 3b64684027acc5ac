"""`TransformerConfig`: the shape of a decoder-only Transformer, and its costs.

One frozen dataclass covers the three checkpoint families the importer reads
(Llama, Qwen2, Gemma v1) and the from-scratch CPU sizes; gin files under
`gin/models/` set its fields. `param_count` and `flops_per_token` are analytic,
so trainers and benchmarks can report them without building the model.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp

from restreact_jax import errors

ACTIVATIONS = ('silu', 'gelu')
DTYPES = ('float32', 'bfloat16', 'float16')


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
  """Architecture of a decoder-only Transformer.

  Attributes:
    vocab_size: number of token ids.
    embed_dim: model width (d_model).
    num_layers: number of decoder blocks.
    num_heads: query heads.
    num_kv_heads: key/value heads; fewer than `num_heads` is grouped-query
      attention, 1 is multi-query attention.
    head_dim: features per head.
    mlp_dim: hidden units of the gated MLP.
    activation: 'silu' (SwiGLU, Llama/Qwen2) or 'gelu' (GeGLU with the tanh
      approximation, as Gemma).
    norm_eps: RMSNorm epsilon.
    norm_offset: Gemma's RMSNorm `x * (1 + scale)` (scales start at zero).
    rope_theta: RoPE base frequency.
    tie_embeddings: the output projection reuses the input embedding table.
    scale_embeddings: multiply embeddings by sqrt(embed_dim) (Gemma); the
      factor is rounded to the compute dtype, as Hugging Face does.
    qkv_bias: biases on the q/k/v projections (Qwen2).
    max_len: longest sequence (cache length default).
    dtype: compute dtype name.
    param_dtype: parameter storage dtype name.
    family: free-form name of the model family ('llama', 'qwen2', 'gemma',
      'custom'); informational only.
  """
  vocab_size: int = 2048
  embed_dim: int = 128
  num_layers: int = 2
  num_heads: int = 4
  num_kv_heads: int = 2
  head_dim: int = 32
  mlp_dim: int = 512
  activation: str = 'silu'
  norm_eps: float = 1e-6
  norm_offset: bool = False
  rope_theta: float = 10_000.0
  tie_embeddings: bool = True
  scale_embeddings: bool = False
  qkv_bias: bool = False
  max_len: int = 1024
  dtype: str = 'float32'
  param_dtype: str = 'float32'
  family: str = 'custom'

  def __post_init__(self):
    for name in ('vocab_size', 'embed_dim', 'num_layers', 'num_heads', 'num_kv_heads',
                 'head_dim', 'mlp_dim', 'max_len'):
      value = getattr(self, name)
      if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        raise errors.UserError(f'TransformerConfig.{name} must be a positive int, got {value!r}')
    if self.num_heads % self.num_kv_heads:
      raise errors.UserError(
          f'TransformerConfig.num_heads={self.num_heads} is not a multiple of '
          f'num_kv_heads={self.num_kv_heads}')
    if self.head_dim % 2:
      raise errors.UserError(f'TransformerConfig.head_dim={self.head_dim} must be even (RoPE)')
    if self.activation not in ACTIVATIONS:
      raise errors.UserError(
          f'TransformerConfig.activation={self.activation!r}; expected one of {ACTIVATIONS}')
    for name in ('dtype', 'param_dtype'):
      if getattr(self, name) not in DTYPES:
        raise errors.UserError(
            f'TransformerConfig.{name}={getattr(self, name)!r}; expected one of {DTYPES}')

  @property
  def compute_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.dtype)

  @property
  def params_dtype(self) -> jnp.dtype:
    return jnp.dtype(self.param_dtype)

  def replace(self, **changes) -> 'TransformerConfig':
    """Returns a copy with `changes` applied (validated again)."""
    return dataclasses.replace(self, **changes)


def _layer_matmul_params(config: TransformerConfig) -> int:
  """Weights of one block's matrix multiplies (no norms, no biases)."""
  d, hd = config.embed_dim, config.head_dim
  attention = d * hd * (2 * config.num_heads + 2 * config.num_kv_heads)  # q, o, k, v
  mlp = 3 * d * config.mlp_dim  # gate, up, down
  return attention + mlp


def embedding_param_count(config: TransformerConfig) -> int:
  """Parameters of the embedding table plus the untied output projection."""
  table = config.vocab_size * config.embed_dim
  return table if config.tie_embeddings else 2 * table


def param_count(config: TransformerConfig) -> int:
  """Exact number of parameters `Transformer(config).init` creates.

  Args:
    config: the architecture.

  Returns:
    Total parameters: embeddings (and the output projection when untied), per
    layer the q/k/v/o and gate/up/down kernels, q/k/v biases when `qkv_bias`,
    two RMSNorm scales, and the final RMSNorm scale.
  """
  per_layer = _layer_matmul_params(config) + 2 * config.embed_dim
  if config.qkv_bias:
    per_layer += config.head_dim * (config.num_heads + 2 * config.num_kv_heads)
  return embedding_param_count(config) + config.num_layers * per_layer + config.embed_dim


def flops_per_token(config: TransformerConfig, seq_len: int) -> float:
  """Training FLOPs per token (forward + backward) at sequence length `seq_len`.

  The usual `6N + attention` estimate (Kaplan et al. 2020; PaLM appendix B):

    flops = 6 * N_matmul + 12 * num_layers * num_heads * head_dim * seq_len

  `N_matmul` counts the weights that take part in a matrix multiply per token:
  every layer's q/k/v/o and gate/up/down kernels plus the `vocab x embed` output
  projection (counted once, tied or not; the input lookup is not a matmul).
  Each such weight costs 2 FLOPs forward and 4 backward. The attention term is
  the `QK^T` and `AV` products (2 * 2 * seq_len * heads * head_dim forward per
  layer, x3 with backward), without halving for the causal mask, as PaLM.
  Norms, biases, RoPE and softmax are ignored (well under 1%).

  Args:
    config: the architecture.
    seq_len: training sequence length.

  Returns:
    FLOPs per trained token.
  """
  n_matmul = config.num_layers * _layer_matmul_params(config)
  n_matmul += config.vocab_size * config.embed_dim
  attention = 12 * config.num_layers * config.num_heads * config.head_dim * seq_len
  return float(6 * n_matmul + attention)
