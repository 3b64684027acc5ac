"""Tests for the trainer: sharded step, accumulation, masking, resume, overfitting."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from restreact_jax import checkpoints
from restreact_jax import data as data_lib
from restreact_jax import partitioning
from restreact_jax import trainer
from restreact_jax.models import configs

# The model of gin/models/tiny.gin, the smoke task's row length (48 + 16), and
# the optimizer, batch and mesh tests/test_train_cli.py binds: one compiled
# step serves every test in this session (`trainer.build_program` caches).
CONFIG = configs.TransformerConfig(embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                   head_dim=16, mlp_dim=256)
RULES = partitioning.logical_axis_rules()
OPT = trainer.OptimizerConfig(learning_rate=3e-3, warmup_steps=10, decay_steps=100)


def _batch(seed=0, batch=16, length=64):
  rng = np.random.default_rng(seed)
  tokens = rng.integers(3, CONFIG.vocab_size, size=(batch, length + 1)).astype(np.int32)
  weights = np.zeros((batch, length), np.int32)
  for b in range(batch):  # a prompt of random length, then targets, then padding
    start, end = rng.integers(2, 30), rng.integers(34, length + 1)
    weights[b, start:end] = 1
  return {'decoder_input_tokens': tokens[:, :-1], 'decoder_target_tokens': tokens[:, 1:],
          'decoder_loss_weights': weights}


def _run(mesh, batches, num_microbatches=1):
  program = trainer.build_program(CONFIG, mesh, RULES, OPT, num_microbatches, z_loss=1e-4)
  state = program.init(jax.random.key(0))
  sharding = partitioning.batch_sharding(mesh)
  metrics = []
  for b in batches:
    state, m = program.steps.train(state, {k: jax.device_put(v, sharding) for k, v in b.items()},
                           jax.random.key(1))
    metrics.append({k: float(v) for k, v in m.items()})
  return state, metrics, program.shardings


def _assert_close(a, b, atol):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
    np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=0)


@pytest.fixture(scope='module')
def sharded_run():
  return _run(partitioning.make_mesh((2, 4)), [_batch(0), _batch(1)])


def test_sharded_step_equals_unsharded(sharded_run):
  state, metrics, _ = sharded_run
  single, single_metrics, _ = _run(partitioning.make_mesh((1, 1)), [_batch(0), _batch(1)])
  _assert_close(state.params, single.params, 1e-5)
  _assert_close(state.opt_state, single.opt_state, 1e-5)
  for m, s in zip(metrics, single_metrics):
    assert m['loss'] == pytest.approx(s['loss'], abs=1e-5)
  # The steps moved the weights well beyond the tolerance above.
  init = trainer.build_program(CONFIG, partitioning.make_mesh((1, 1)), RULES, OPT,
                               z_loss=1e-4).init(jax.random.key(0))
  moved = max(float(jnp.max(jnp.abs(x - y)))
              for x, y in zip(jax.tree.leaves(init.params), jax.tree.leaves(single.params)))
  assert moved > 1e-4
  assert int(state.step) == 2


def test_state_carries_rule_shardings(sharded_run):
  state, _, shardings = sharded_run
  layer = state.params['layers_0']
  assert layer['attn']['q_proj'].sharding.spec == P(None, 'model')  # (embed, heads, kv)
  assert layer['mlp']['up_proj'].sharding.spec == P(None, 'model')
  assert layer['mlp']['down_proj'].sharding.spec == P('model')
  assert state.params['embedding'].sharding.spec == P('model')  # (vocab, embed)
  assert layer['attn_norm']['scale'].sharding.spec == P()
  for leaf, expected in zip(jax.tree.leaves(state), jax.tree.leaves(shardings), strict=True):
    assert leaf.sharding.is_equivalent_to(expected, leaf.ndim)
  # Adam moments follow their parameter; scalars are replicated on the mesh.
  adam = state.opt_state[1][0]
  assert adam.mu['embedding'].sharding.spec == P('model')
  assert adam.count.sharding == NamedSharding(state.params['embedding'].sharding.mesh, P())
  fsdp = trainer.state_shardings(CONFIG, partitioning.make_mesh((2, 4)),
                                 partitioning.logical_axis_rules(fsdp=True),
                                 trainer.make_optimizer(OPT, 10))[1]
  assert fsdp.params['layers_0']['mlp']['up_proj'].spec == P('data', 'model')


def test_grad_accumulation_equals_full_batch(sharded_run):
  full, full_metrics, _ = sharded_run
  # 4 microbatches of 4 rows, each split over the 2-way data axis.
  accum, accum_metrics, _ = _run(partitioning.make_mesh((2, 4)), [_batch(0), _batch(1)],
                                 num_microbatches=4)
  _assert_close(full.params, accum.params, 1e-5)
  for f, a in zip(full_metrics, accum_metrics):
    assert f['loss'] == pytest.approx(a['loss'], abs=1e-6)
    assert f['target_tokens'] == a['target_tokens']


def test_loss_ignores_prompt_tokens():
  model_params = trainer.build_program(CONFIG, partitioning.make_mesh((1, 1)), RULES, OPT,
                                      z_loss=1e-4).init(jax.random.key(0)).params
  from restreact_jax.models import transformer
  loss_fn = jax.jit(functools.partial(trainer.loss_fn, model=transformer.Transformer(CONFIG),
                                      z_loss=1e-4))
  batch = {k: jnp.asarray(v) for k, v in _batch(5).items()}
  loss, _ = loss_fn(model_params, batch, jax.random.key(0))
  weights = np.asarray(batch['decoder_loss_weights'])
  targets = np.asarray(batch['decoder_target_tokens'])
  # Changing what the prompt (weight 0) "should" predict changes nothing ...
  changed = dict(batch, decoder_target_tokens=jnp.where(weights == 0, (targets + 7) % 2048,
                                                        targets))
  same, _ = loss_fn(model_params, changed, jax.random.key(0))
  assert float(same) == float(loss)
  # ... while changing a single trained target does.
  b, t = np.argwhere(weights == 1)[0]
  targets2 = targets.copy()
  targets2[b, t] = (targets2[b, t] + 7) % 2048
  other, _ = loss_fn(model_params, dict(batch, decoder_target_tokens=jnp.asarray(targets2)),
                     jax.random.key(0))
  assert float(other) != float(loss)


def test_learning_rate_schedule():
  schedule = trainer.learning_rate_schedule(
      trainer.OptimizerConfig(learning_rate=1.0, warmup_steps=10,
                              end_learning_rate_fraction=0.1), 110)
  assert float(schedule(0)) == 0.0
  assert float(schedule(5)) == pytest.approx(0.5)
  assert float(schedule(10)) == pytest.approx(1.0)
  assert float(schedule(60)) == pytest.approx(0.55, abs=1e-6)  # cosine midpoint
  assert float(schedule(110)) == pytest.approx(0.1)


SMOKE = data_lib.DataConfig('restreact_smoke', {'inputs': 48, 'targets': 16}, 16, seed=3)
TINY = CONFIG


def _loop(model_dir, steps, period):
  import tasks  # noqa: F401
  return trainer.train_loop(
      TINY, partitioning.make_mesh((2, 4)), RULES, OPT, SMOKE,
      trainer.LoopConfig(train_steps=steps, checkpoint_period=period, seed=5),
      model_dir=model_dir, progress=False)


def test_resume_equals_uninterrupted(tmp_path):
  straight = _loop(tmp_path / 'a', 6, 100)
  first = _loop(tmp_path / 'b', 3, 100)  # saves step 3, then the process "dies"
  assert first.data_position == 3
  del first
  resumed = _loop(tmp_path / 'b', 6, 100)
  assert [h['step'] for h in resumed.history] == [4, 5, 6]
  assert resumed.data_position == straight.data_position == 6
  _assert_close(resumed.state.params, straight.state.params, 1e-6)
  _assert_close(resumed.state.opt_state, straight.state.opt_state, 1e-6)
  with checkpoints.Checkpointer(tmp_path / 'b' / 'checkpoints') as ckpt:
    assert ckpt.all_steps() == [3, 6]
  # Inference users read the params alone, in their own layout.
  mesh = partitioning.make_mesh((8, 1))
  params = trainer.load_params(tmp_path / 'b' / 'checkpoints', TINY, mesh, RULES)
  _assert_close(params, straight.state.params, 1e-6)
  assert params['embedding'].sharding.mesh.shape['data'] == 8


@pytest.mark.slow
def test_tiny_model_overfits_tiny_task(tmp_path):
  from tasks import common
  records = [{'inputs': f'Q{i}: who rules {name}? A:', 'targets': f' {ruler}'}
             for i, (name, ruler) in enumerate([('Orlen', 'Ada'), ('Vey', 'Bron'),
                                                ('Tarsk', 'Cyra'), ('Kethra', 'Dov')])]
  common.write_examples(tmp_path / 'tiny.tfrecord', records * 2)
  common.register_text_to_text_task('test_overfit', [str(tmp_path / 'tiny.tfrecord')], None)
  result = trainer.train_loop(
      TINY, partitioning.make_mesh((2, 4)), RULES,
      OPT,
      data_lib.DataConfig('test_overfit', {'inputs': 48, 'targets': 16}, 16, seed=0),
      trainer.LoopConfig(train_steps=60, checkpoint_period=1000, log_period=1000),
      progress=False)
  first, last = result.history[0], result.history[-1]
  assert last['loss'] < 0.1 * first['loss']
  assert last['accuracy'] > 0.95


@pytest.mark.slow
def test_bfloat16_compute_keeps_float32_params():
  config = configs.TransformerConfig(embed_dim=64, num_layers=1, num_heads=4, num_kv_heads=2,
                                     head_dim=16, mlp_dim=128, dtype='bfloat16')
  program = trainer.build_program(config, partitioning.make_mesh((2, 4)), RULES, OPT)
  state = program.init(jax.random.key(0))
  sharding = partitioning.batch_sharding(partitioning.make_mesh((2, 4)))
  losses = []
  for _ in range(12):  # one repeated batch: the loss must fall
    state, m = program.steps.train(
        state, {k: jax.device_put(v, sharding) for k, v in _batch(0).items()}, jax.random.key(1))
    losses.append(float(m['loss']))
  assert all(np.isfinite(losses)) and losses[-1] < losses[0] - 0.1
  assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(state.params))
