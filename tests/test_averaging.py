"""Tests for tail averaging: the transform, and the trainer handing on the mean."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from restreact_jax import averaging
from restreact_jax import data as data_lib
from restreact_jax import errors
from restreact_jax import partitioning
from restreact_jax import trainer
from restreact_jax.models import configs


@pytest.mark.parametrize('num_steps', [3, 10])
def test_tail_average_is_the_mean_of_the_last_iterates(num_steps):
  total = 6
  opt = optax.chain(optax.sgd(0.1), averaging.tail_average(num_steps, total))
  params = {'w': jnp.array([1.0, -2.0]), 'b': jnp.array(0.5)}
  state = opt.init(params)
  iterates = []
  rng = np.random.default_rng(0)
  for _ in range(total):
    grads = jax.tree.map(lambda p: jnp.asarray(rng.normal(size=p.shape), p.dtype), params)
    updates, state = opt.update(grads, state, params)
    # The updates pass through unchanged: plain SGD's.
    for u, g in zip(jax.tree.leaves(updates), jax.tree.leaves(grads)):
      np.testing.assert_allclose(u, -0.1 * g, rtol=1e-6)
    params = optax.apply_updates(params, updates)
    iterates.append(params)
  window = iterates[-min(num_steps, total):]
  expected = jax.tree.map(lambda *xs: np.mean(np.stack(xs), axis=0), *window)
  got = averaging.averaged_params(state)
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected)):
    np.testing.assert_allclose(g, e, rtol=1e-6)
  # ... which is not the last iterate.
  assert not np.allclose(got['w'], params['w'])


def test_averaged_params_absent_without_the_transform():
  opt = optax.adamw(1e-3)
  assert averaging.averaged_params(opt.init({'w': jnp.zeros(2)})) is None
  with pytest.raises(ValueError, match='num_steps >= 1'):
    averaging.tail_average(0, 10)


CONFIG = configs.TransformerConfig(embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                   head_dim=16, mlp_dim=256)
RULES = partitioning.logical_axis_rules()
OPT = trainer.OptimizerConfig(learning_rate=3e-3, warmup_steps=2)
SMOKE = data_lib.DataConfig('restreact_smoke', {'inputs': 48, 'targets': 16}, 16, seed=3)


def _loop(model_dir, optimizer, period, keep=2):
  import tasks  # noqa: F401
  return trainer.train_loop(
      CONFIG, partitioning.make_mesh((2, 4)), RULES, optimizer, SMOKE,
      trainer.LoopConfig(train_steps=6, checkpoint_period=period, keep_checkpoints=keep, seed=5),
      model_dir=model_dir, progress=False)


def test_train_loop_hands_on_the_tail_average(tmp_path):
  mesh = partitioning.make_mesh((8, 1))
  plain = _loop(tmp_path / 'plain', OPT, period=1, keep=3)
  iterates = [trainer.load_params(tmp_path / 'plain' / 'checkpoints', CONFIG, mesh, RULES, step)
              for step in (4, 5, 6)]
  expected = jax.tree.map(lambda *xs: np.mean(np.stack([np.asarray(x) for x in xs]), axis=0),
                          *iterates)
  averaged = _loop(tmp_path / 'avg', dataclasses.replace(OPT, average_last_steps=3), period=100)
  # Averaging does not change the steps: the same losses, step by step.
  np.testing.assert_allclose([h['loss'] for h in averaged.history],
                             [h['loss'] for h in plain.history], rtol=1e-5)
  saved = trainer.load_params(tmp_path / 'avg' / 'checkpoints', CONFIG, mesh, RULES)
  for params in (averaged.state.params, saved):
    for got, want in zip(jax.tree.leaves(params), jax.tree.leaves(expected), strict=True):
      np.testing.assert_allclose(np.asarray(got), want, atol=1e-6, rtol=0)
  last = jax.tree.leaves(plain.state.params)[0]
  assert not np.allclose(np.asarray(jax.tree.leaves(saved)[0]), np.asarray(last), atol=1e-6)
  # The mean is sharded like the params it averages.
  mean = averaging.averaged_params(averaged.state.opt_state)
  for m, p in zip(jax.tree.leaves(mean), jax.tree.leaves(averaged.state.params), strict=True):
    assert m.sharding.is_equivalent_to(p.sharding, m.ndim)


def test_average_needs_the_schedule_to_end_with_the_run(tmp_path):
  pinned = dataclasses.replace(OPT, average_last_steps=3, decay_steps=100)
  with pytest.raises(errors.UserError, match='average_last_steps counts back from decay_steps'):
    _loop(tmp_path / 'x', pinned, period=100)
