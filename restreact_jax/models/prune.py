"""A smaller model from a bigger one's weights: drop layers and MLP units.

The student of self-distillation need not start from scratch. Sanh et al.
(2019, DistilBERT) start their student from every other layer of the teacher;
Muralidharan et al. (2024, Minitron) also cut MLP units by importance before
distilling. `prune_params` does both for our decoder:

* layers: the student keeps `student.num_layers` of the teacher's, evenly
  spaced from the first to the last (3 -> 2 keeps layers 0 and 2);
* MLP units: each kept layer keeps the `student.mlp_dim` hidden units with the
  largest importance `|gate_i| * |up_i| * |down_i|` (the norms of the unit's
  input and output weights), in their original order.

Everything else (width, heads, vocabulary, norms, embedding) must match: the
kept weights are copied unchanged, so a layer whose output is zero, or a unit
whose weights are zero, can be dropped without changing the model's output.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from restreact_jax import errors
from restreact_jax.models import configs

# Fields a pruned student shares with its teacher.
SHARED_FIELDS = ('vocab_size', 'embed_dim', 'num_heads', 'num_kv_heads', 'head_dim',
                 'activation', 'norm_eps', 'norm_offset', 'rope_theta', 'tie_embeddings',
                 'scale_embeddings', 'qkv_bias')


def check_prunable(teacher: configs.TransformerConfig, student: configs.TransformerConfig) -> None:
  """Raises a `UserError` naming the first field pruning cannot change."""
  for name in SHARED_FIELDS:
    if getattr(teacher, name) != getattr(student, name):
      raise errors.UserError(
          f'cannot prune to the student: its {name} {getattr(student, name)!r} differs from '
          f"the teacher's {getattr(teacher, name)!r} (pruning drops layers and MLP units only)")
  for name in ('num_layers', 'mlp_dim'):
    if getattr(student, name) > getattr(teacher, name):
      raise errors.UserError(
          f'cannot prune to the student: its {name} {getattr(student, name)} is larger than '
          f"the teacher's {getattr(teacher, name)}")


def kept_layers(teacher_layers: int, student_layers: int) -> list[int]:
  """Evenly spaced teacher layers, first and last included (one layer: the first)."""
  return sorted({int(round(i)) for i in np.linspace(0, teacher_layers - 1, student_layers)})


def kept_units(mlp: Mapping[str, Any], units: int) -> np.ndarray:
  """Indices of the `units` most important hidden units of one MLP, ascending."""
  gate, up, down = (np.asarray(mlp[k]) for k in ('gate_proj', 'up_proj', 'down_proj'))
  importance = (np.linalg.norm(gate, axis=0) * np.linalg.norm(up, axis=0)
                * np.linalg.norm(down, axis=1))
  # Stable: among equals, the earlier unit is kept.
  return np.sort(np.argsort(-importance, kind='stable')[:units])


def prune_params(params: Mapping[str, Any], teacher: configs.TransformerConfig,
                 student: configs.TransformerConfig) -> dict[str, Any]:
  """The student's params cut from the teacher's (numpy arrays, same tree layout).

  Args:
    params: the teacher's params (`{'embedding', 'layers_0', ..., 'final_norm'}`,
      plus `lm_head` when untied).
    teacher: the teacher's config.
    student: the student's config: fewer or equal layers and MLP units, every
      other field the same.

  Returns:
    Params for a `Transformer(student)`.
  """
  check_prunable(teacher, student)
  layers = kept_layers(teacher.num_layers, student.num_layers)
  tree = _to_numpy(params)
  out = {k: v for k, v in tree.items() if not k.startswith('layers_')}
  for new, old in enumerate(layers):
    block = dict(tree[f'layers_{old}'])
    keep = kept_units(block['mlp'], student.mlp_dim)
    block['mlp'] = {'gate_proj': block['mlp']['gate_proj'][:, keep],
                    'up_proj': block['mlp']['up_proj'][:, keep],
                    'down_proj': block['mlp']['down_proj'][keep, :]}
    out[f'layers_{new}'] = block
  return out


def _to_numpy(tree: Any) -> Any:
  if isinstance(tree, Mapping):
    return {k: _to_numpy(v) for k, v in tree.items()}
  return np.asarray(tree)
