"""Tests for pruning a teacher into a student: kept layers and MLP units, exactly."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restreact_jax import errors
from restreact_jax.models import configs, prune
from restreact_jax.models.transformer import Transformer

TEACHER = configs.TransformerConfig(vocab_size=96, embed_dim=32, num_layers=3, num_heads=4,
                                    num_kv_heads=2, head_dim=8, mlp_dim=48, max_len=32)
TOKENS = jnp.asarray(np.random.default_rng(0).integers(1, 96, (2, 12)), jnp.int32)


def _init(cfg):
  params = Transformer(cfg).init(jax.random.key(0), TOKENS[:, :4])['params']
  return jax.tree.map(np.array, nn.meta.unbox(params))


def _logits(cfg, params):
  return np.asarray(Transformer(cfg).apply({'params': params}, TOKENS)[0])


def test_kept_layers_are_evenly_spaced_with_first_and_last():
  assert prune.kept_layers(3, 3) == [0, 1, 2]
  assert prune.kept_layers(3, 2) == [0, 2]
  assert prune.kept_layers(5, 3) == [0, 2, 4]
  assert prune.kept_layers(4, 1) == [0]


def test_the_same_config_keeps_every_weight():
  params = _init(TEACHER)
  pruned = prune.prune_params(params, TEACHER, TEACHER)
  np.testing.assert_array_equal(_logits(TEACHER, pruned), _logits(TEACHER, params))


def test_dropping_a_layer_that_adds_nothing_keeps_the_output():
  params = _init(TEACHER)
  student = TEACHER.replace(num_layers=2)
  before = _logits(student, prune.prune_params(params, TEACHER, student))
  # The middle layer writes nothing to the residual stream: the teacher is the
  # student with an identity layer in between.
  params['layers_1']['attn']['o_proj'] = np.zeros_like(params['layers_1']['attn']['o_proj'])
  params['layers_1']['mlp']['down_proj'] = np.zeros_like(params['layers_1']['mlp']['down_proj'])
  pruned = prune.prune_params(params, TEACHER, student)
  np.testing.assert_allclose(_logits(student, pruned), _logits(TEACHER, params), atol=1e-5)
  # With the middle layer's weights in place the two differ: the check can fail.
  assert not np.allclose(before, _logits(TEACHER, _init(TEACHER)), atol=1e-3)


def test_dropping_dead_mlp_units_keeps_the_output():
  params = _init(TEACHER)
  dead = np.arange(0, 48, 3)  # 16 units with no weights: importance 0
  for i in range(TEACHER.num_layers):
    mlp = params[f'layers_{i}']['mlp']
    mlp['gate_proj'][:, dead] = 0.0
    mlp['up_proj'][:, dead] = 0.0
    mlp['down_proj'][dead, :] = 0.0
  student = TEACHER.replace(mlp_dim=32)
  pruned = prune.prune_params(params, TEACHER, student)
  shapes = jax.tree.map(lambda x: x.shape, pruned)
  assert shapes == jax.tree.map(lambda x: x.shape, _init(student))
  kept = prune.kept_units(params['layers_0']['mlp'], 32)
  assert not set(kept) & set(dead)
  np.testing.assert_allclose(_logits(student, pruned), _logits(TEACHER, params), atol=1e-5)


def test_pruning_drops_the_least_important_units():
  params = _init(TEACHER)
  mlp = params['layers_0']['mlp']
  mlp['down_proj'][5, :] *= 1e-3  # unit 5 barely writes anything
  keep = prune.kept_units(mlp, TEACHER.mlp_dim - 1)
  assert 5 not in keep and list(keep) == sorted(keep)


@pytest.mark.parametrize('change, field', [
    ({'embed_dim': 16}, 'embed_dim'),
    ({'num_heads': 2}, 'num_heads'),
    ({'vocab_size': 64}, 'vocab_size'),
    ({'num_layers': 4}, 'num_layers'),
    ({'mlp_dim': 64}, 'mlp_dim'),
])
def test_a_student_pruning_cannot_reach_is_one_clear_error(change, field):
  with pytest.raises(errors.UserError, match=f'its {field} '):
    prune.prune_params(_init(TEACHER), TEACHER, TEACHER.replace(**change))


def test_the_prune_phase_writes_a_checkpoint_the_student_loads(tmp_path):
  from restreact_jax import checkpoints, partitioning, trainer
  from restreact_jax.rest import phases
  params = _init(TEACHER)
  with checkpoints.Checkpointer(tmp_path / 'teacher') as ckpt:
    ckpt.save({'params': params}, checkpoints.Meta(step=40, data_position=0, config_gin=''))
    ckpt.wait()
  student = TEACHER.replace(num_layers=2, mlp_dim=32)
  result = phases.prune_checkpoint(tmp_path / 'out', tmp_path / 'teacher', TEACHER, student)
  assert result['kept_layers'] == [0, 2] and result['params'] < result['teacher_params']
  mesh = partitioning.make_mesh((1, 1), devices=jax.devices()[:1])
  loaded = trainer.load_params(str(tmp_path / 'out' / 'checkpoints'), student, mesh,
                               partitioning.logical_axis_rules(False))
  np.testing.assert_array_equal(_logits(student, jax.device_get(loaded)),
                                _logits(student, prune.prune_params(params, TEACHER, student)))
