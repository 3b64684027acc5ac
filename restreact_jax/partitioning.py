"""The mesh `('data', 'model')` and the ONE table of logical-axis rules.

Parameters, activations and KV caches carry *logical* axis names; this module
alone maps them to mesh axes. Two rule sets exist: the default (data parallel
over `data`, tensor parallel over `model`) and FSDP (parameters additionally
sharded over `data` along `embed`).

| logical name      | what it indexes                     | default | fsdp   |
|-------------------|-------------------------------------|---------|--------|
| batch             | examples / decode slots             | data    | data   |
| length            | sequence positions                  | -       | -      |
| embed             | model width (d_model)               | -       | data   |
| heads             | query heads                         | model   | model  |
| kv_heads          | key/value heads (GQA)               | model   | model  |
| kv                | per-head feature dim (head_dim)     | -       | -      |
| mlp               | MLP hidden units                    | model   | model  |
| vocab             | vocabulary                          | model   | model  |
| norm              | norm scales                         | -       | -      |
| layers            | stacked layer index                 | -       | -      |
| cache_batch       | KV-cache rows (slots)               | data    | data   |
| cache_sequence    | KV-cache positions                  | -       | -      |
| cache_heads       | KV-cache heads                      | model   | model  |
| cache_kv          | KV-cache head_dim                   | -       | -      |

A mesh axis is dropped for a dimension it does not divide (e.g. 1 KV head on a
4-way `model` axis is replicated), so every config runs on every mesh.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

MESH_AXES = ('data', 'model')

Rules = tuple[tuple[str, str | None], ...]

_DEFAULT_RULES: Rules = (
    ('batch', 'data'),
    ('length', None),
    ('embed', None),
    ('heads', 'model'),
    ('kv_heads', 'model'),
    ('kv', None),
    ('mlp', 'model'),
    ('vocab', 'model'),
    ('norm', None),
    ('layers', None),
    ('cache_batch', 'data'),
    ('cache_sequence', None),
    ('cache_heads', 'model'),
    ('cache_kv', None),
)


def logical_axis_rules(fsdp: bool = False) -> Rules:
  """Returns the rules table; `fsdp` also shards `embed` over `data`."""
  if not fsdp:
    return _DEFAULT_RULES
  return tuple((name, 'data' if name == 'embed' else axis) for name, axis in _DEFAULT_RULES)


def make_mesh(shape: Sequence[int] = (-1, 1),
              devices: Sequence[jax.Device] | None = None,
              axis_names: Sequence[str] = MESH_AXES) -> Mesh:
  """Builds a mesh of `shape` over `devices`; one -1 entry takes the rest.

  Uses the classic automatic-sharding axes (not `jax.make_mesh`'s Explicit ones).
  """
  devices = list(jax.devices() if devices is None else devices)
  shape = list(shape)
  if len(shape) != len(axis_names):
    raise ValueError(f'mesh shape {shape} does not match axes {tuple(axis_names)}')
  if shape.count(-1) > 1:
    raise ValueError(f'mesh shape {shape}: at most one -1')
  known = math.prod(d for d in shape if d != -1)
  if -1 in shape:
    if len(devices) % known:
      raise ValueError(f'mesh shape {shape} does not divide {len(devices)} devices')
    shape[shape.index(-1)] = len(devices) // known
  if math.prod(shape) > len(devices):
    raise ValueError(f'mesh shape {shape} needs {math.prod(shape)} devices, '
                     f'have {len(devices)}')
  grid = np.asarray(devices[:math.prod(shape)]).reshape(shape)
  return Mesh(grid, tuple(axis_names))


def logical_to_spec(names: Sequence[str | None],
                    rules: Rules,
                    mesh: Mesh | None = None,
                    shape: Sequence[int] | None = None) -> P:
  """Maps logical names to a PartitionSpec; drops axes that do not divide."""
  table = dict(rules)
  used: set[str] = set()
  spec = []
  for i, name in enumerate(names):
    axis = table.get(name) if name is not None else None
    if axis is not None and axis in used:
      axis = None  # a mesh axis may shard only one dimension
    if axis is not None and mesh is not None and shape is not None:
      if shape[i] % mesh.shape[axis]:
        axis = None
    if axis is not None and mesh is not None and mesh.shape[axis] == 1:
      axis = None
    if axis is not None:
      used.add(axis)
    spec.append(axis)
  while spec and spec[-1] is None:
    spec.pop()
  return P(*spec)


def logical_to_sharding(names: Sequence[str | None], mesh: Mesh, rules: Rules,
                        shape: Sequence[int] | None = None) -> NamedSharding:
  return NamedSharding(mesh, logical_to_spec(names, rules, mesh, shape))


def tree_shardings(abstract_tree: Any, names_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """Shardings for a pytree given a matching pytree of logical-name tuples.

  Leaves with no names (None or an empty tuple), and scalars such as optax's
  `count`, are replicated — explicitly on `mesh`, so jit never sees a
  single-device array beside sharded ones.
  """

  def one(leaf, names):
    shape = getattr(leaf, 'shape', ())
    if not names or len(shape) == 0:
      return NamedSharding(mesh, P())
    return logical_to_sharding(names, mesh, rules, shape)

  return jax.tree.map(one, abstract_tree, names_tree)


def boxed_shardings(boxed_tree: Any, mesh: Mesh, rules: Rules) -> Any:
  """Shardings for a tree of flax `nn.Partitioned` boxes (or plain leaves).

  `jax.eval_shape(model.init, ...)` returns such a tree; the result has the
  unboxed tree's structure.
  """
  import flax.linen as nn  # local: keep this module importable without flax

  def one(leaf):
    if isinstance(leaf, nn.Partitioned):
      names = tuple(leaf.names)
      shape = leaf.value.shape
    else:
      names, shape = (), getattr(leaf, 'shape', ())
    if not names or len(shape) == 0:
      return NamedSharding(mesh, P())
    return logical_to_sharding(names, mesh, rules, shape)

  return jax.tree.map(one, boxed_tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))


def batch_sharding(mesh: Mesh, rank: int = 2) -> NamedSharding:
  """Batches: leading dim over `data`, the rest replicated."""
  return NamedSharding(mesh, P('data', *([None] * (rank - 1))))


def replicated(mesh: Mesh) -> NamedSharding:
  return NamedSharding(mesh, P())
