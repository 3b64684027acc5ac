"""The decoder-only Transformer, its sizes, and checkpoint import.

`configs.TransformerConfig` describes an architecture, `transformer.Transformer`
runs it (TRAIN / PREFILL / DECODE over a `KVCache`), and
`hf_import.load_hf_checkpoint` reads Llama, Qwen2 and Gemma safetensors.
"""

from restreact_jax.models.configs import (TransformerConfig, embedding_param_count,
                                          flops_per_token, param_count)
from restreact_jax.models.transformer import KVCache, Mode, Transformer

__all__ = [
    'KVCache', 'Mode', 'Transformer', 'TransformerConfig', 'embedding_param_count',
    'flops_per_token', 'param_count',
]
