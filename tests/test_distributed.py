"""Tests for restreact_jax/distributed.py, including a real two-process run.

The two-process test starts two JAX processes on localhost (4 fake CPU devices
each, gloo collectives), builds the global (2, 4) mesh over their 8 devices,
runs the tiny model's forward pass, a training step and a sampling step with
global shardings, and checks every number equals a single process on 8 fake
devices. This file is also the worker script: `python test_distributed.py
worker --out=DIR [--coordinator=... --num_processes=N --process_id=I]`.
"""

from __future__ import annotations

import os
import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent

# --- settings and sharding (no processes started) ---------------------------


def _dist():
  from restreact_jax import distributed
  return distributed


def test_resolve_single_process_when_nothing_given():
  assert _dist().resolve(environ={}) is None


def test_resolve_multihost_alone_asks_jax_to_detect():
  settings = _dist().resolve(multihost=True, environ={})
  assert settings.auto_detect
  assert settings.coordinator_address is None and settings.num_processes is None


def test_resolve_reads_environment_and_flags_win():
  d = _dist()
  env = {d.ENV_COORDINATOR: 'h0:1234', d.ENV_NUM_PROCESSES: '4', d.ENV_PROCESS_ID: '2',
         d.ENV_LOCAL_DEVICE_IDS: '0, 1'}
  settings = d.resolve(environ=env)
  assert settings == d.Settings('h0:1234', 4, 2, (0, 1), auto_detect=False)
  settings = d.resolve(process_id='3', coordinator_address='h1:99', environ=env)
  assert (settings.coordinator_address, settings.process_id) == ('h1:99', 3)


def test_resolve_one_process_is_single():
  assert _dist().resolve(num_processes=1, process_id=0, coordinator_address='h:1',
                         environ={}) is None


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_processes=2), 'missing: --coordinator, --process_id'),
    (dict(num_processes='two', process_id=0, coordinator_address='h:1'), 'integer'),
    (dict(num_processes=2, process_id=2, coordinator_address='h:1'), 'in [0, 2)'),
    (dict(num_processes=2, process_id=0, coordinator_address='h'), 'host:port'),
    (dict(num_processes=0, process_id=0, coordinator_address='h:1'), '>= 1'),
    (dict(num_processes=2, process_id=0, coordinator_address='h:1', local_device_ids='0,x'),
     'comma-separated'),
])
def test_resolve_bad_settings_are_user_errors(kwargs, message):
  from restreact_jax import errors
  with pytest.raises(errors.UserError, match=message.replace('[', r'\[').replace(')', r'\)')):
    _dist().resolve(environ={}, **kwargs)


def test_initialize_is_a_no_op_for_one_process(monkeypatch):
  d = _dist()
  for name in (d.ENV_COORDINATOR, d.ENV_NUM_PROCESSES, d.ENV_PROCESS_ID):
    monkeypatch.delenv(name, raising=False)
  called = []
  monkeypatch.setattr(d.jax.distributed, 'initialize', lambda **kw: called.append(kw))
  assert d.initialize() is False
  assert d.initialize(num_processes=1) is False
  assert called == []
  assert d.process_index() == 0 and d.process_count() == 1 and d.is_primary()
  d.barrier('single process: returns at once')


def test_initialize_passes_settings_and_is_idempotent(monkeypatch):
  d = _dist()
  state = {'up': False, 'calls': []}

  def fake_initialize(**kwargs):
    state['calls'].append(kwargs)
    state['up'] = True

  monkeypatch.setattr(d.jax.distributed, 'initialize', fake_initialize)
  monkeypatch.setattr(d.jax.distributed, 'is_initialized', lambda: state['up'])
  assert d.initialize('h:1', '2', '1', '0,1') is True
  assert d.initialize('h:1', '2', '1') is True
  assert state['calls'] == [dict(coordinator_address='h:1', num_processes=2, process_id=1,
                                 local_device_ids=[0, 1])]


def test_initialize_turns_jax_failures_into_one_line(monkeypatch):
  d = _dist()
  from restreact_jax import errors

  def fail(**kwargs):
    raise RuntimeError('jax.distributed.initialize() must be called before any JAX '
                       'computations are executed.\nmore detail')

  monkeypatch.setattr(d.jax.distributed, 'initialize', fail)
  with pytest.raises(errors.UserError) as e:
    d.initialize('h:1', 2, 0)
  assert '\n' not in str(e.value) and 'before any JAX computations' in str(e.value)


def test_initialize_from_flags_consumes_only_its_flags(monkeypatch):
  d = _dist()
  seen = []
  monkeypatch.setattr(d, 'initialize', lambda **kw: seen.append(kw))
  rest = d.initialize_from_flags({'multihost': 'true', 'process_id': '1', 'mesh': '2x4'})
  assert rest == {'mesh': '2x4'}
  assert seen == [dict(coordinator_address=None, num_processes=None, process_id='1',
                       local_device_ids=None, multihost=True)]
  from restreact_jax import errors
  with pytest.raises(errors.UserError, match='--multihost'):
    d.initialize_from_flags({'multihost': 'maybe'})


@pytest.mark.parametrize('num_items, count', [(10, 3), (3, 4), (0, 2), (8, 8), (7, 1)])
def test_shards_are_contiguous_balanced_and_cover_everything(num_items, count):
  d = _dist()
  items = list(range(num_items))
  shards = [d.local_shard(items, i, count) for i in range(count)]
  assert sum(shards, []) == items
  sizes = [len(s) for s in shards]
  assert max(sizes) - min(sizes) <= 1
  with pytest.raises(ValueError):
    d.shard_bounds(num_items, count, count)


def test_local_shard_defaults_to_this_process():
  assert _dist().local_shard(['a', 'b', 'c']) == ['a', 'b', 'c']


def test_global_batch_on_one_process_is_the_batch():
  import jax

  from restreact_jax import partitioning
  mesh = partitioning.make_mesh((2, 4))
  batch = {'tokens': np.arange(24, dtype=np.int32).reshape(8, 3)}
  out = _dist().global_batch(batch, partitioning.batch_sharding(mesh))
  assert out['tokens'].sharding.spec == partitioning.batch_sharding(mesh).spec
  np.testing.assert_array_equal(jax.device_get(out['tokens']), batch['tokens'])


# --- the worker -------------------------------------------------------------

BATCH, LENGTH, PROMPT, NEW_TOKENS = 8, 12, 5, 6


def _worker(out_dir: str, coordinator: str | None, num_processes: int, process_id: int) -> None:
  """One process of the run; process 0 writes `results.npz` into `out_dir`."""
  import jax
  jax.config.update('jax_cpu_collectives_implementation', 'gloo')
  from restreact_jax import distributed
  distributed.initialize(coordinator, num_processes, process_id)

  import functools

  import flax.linen as nn
  import jax.numpy as jnp
  from jax.experimental import multihost_utils

  from restreact_jax import decoding, partitioning, trainer
  from restreact_jax.models import KVCache, Mode, Transformer, TransformerConfig

  assert jax.process_count() == num_processes and jax.device_count() == 8
  config = TransformerConfig(vocab_size=64, embed_dim=32, num_layers=2, num_heads=4,
                             num_kv_heads=2, head_dim=8, mlp_dim=64, max_len=32)
  model = Transformer(config)
  mesh = partitioning.make_mesh((2, 4))
  rules = partitioning.logical_axis_rules()
  data_sharding = partitioning.batch_sharding(mesh)

  # Every process holds the rows of the global batch its devices own.
  rng = np.random.default_rng(0)
  tokens = rng.integers(2, config.vocab_size, size=(BATCH, LENGTH), dtype=np.int32)
  rows = distributed.local_shard(list(range(BATCH)))
  tokens_BxL = distributed.global_batch(tokens[rows], data_sharding)

  # One AdamW step of the trainer's own jitted train_step over global shardings.
  optimizer_config = trainer.OptimizerConfig(learning_rate=1e-2, warmup_steps=0)
  optimizer = trainer.make_optimizer(optimizer_config, total_steps=10)
  schedule = trainer.learning_rate_schedule(optimizer_config, total_steps=10)
  _, state_shardings = trainer.state_shardings(config, mesh, rules, optimizer)
  steps = trainer.compile_steps(config, mesh, rules, optimizer, schedule, state_shardings)
  state = trainer.init_state(config, mesh, rules, jax.random.key(0), optimizer)
  batch = {'decoder_input_tokens': tokens[:, :-1], 'decoder_target_tokens': tokens[:, 1:],
           'decoder_loss_weights': np.ones((BATCH, LENGTH - 1), np.float32)}
  local_batch = {k: v[rows] for k, v in batch.items()}
  global_batch = distributed.global_batch(local_batch, data_sharding)
  before = steps.eval(state.params, global_batch)
  state, metrics = steps.train(state, global_batch, jax.random.key(1))
  after = steps.eval(state.params, global_batch)
  loss = before['ce'] / before['weight']
  loss_after = after['ce'] / after['weight']
  new_params = state.params

  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    # Sampling: prefill the prompts, then decode a chunk at temperature 0.7.
    def tokens_to_logits(p, toks, cache, lengths):
      mode = Mode.DECODE if toks.shape[1] == 1 else Mode.PREFILL
      return model.apply({'params': p}, toks, mode=mode, cache=cache, input_lengths_B=lengths)

    cache_names = KVCache.logical_axes()
    abstract_cache = jax.eval_shape(lambda: KVCache.init(config, BATCH, config.max_len))
    cache_shardings = partitioning.tree_shardings(abstract_cache, cache_names, mesh, rules)
    cache = jax.jit(lambda: KVCache.init(config, BATCH, config.max_len),
                    out_shardings=cache_shardings)()
    lengths_B = distributed.global_batch(np.full((BATCH,), PROMPT, np.int32)[rows],
                                         partitioning.batch_sharding(mesh, 1))

    @jax.jit
    def sample(p, prompts_BxL, lengths_B, cache):
      t2l = functools.partial(tokens_to_logits, p)
      logits_BxV, cache = decoding.prefill(t2l, prompts_BxL, lengths_B, cache)
      params_rows = decoding.RowParams(
          temperature=jnp.full((BATCH,), 0.7, jnp.float32),
          top_k=jnp.zeros((BATCH,), jnp.int32), top_p=jnp.ones((BATCH,), jnp.float32),
          max_new=jnp.full((BATCH,), NEW_TOKENS, jnp.int32),
          seed=jnp.arange(BATCH, dtype=jnp.uint32), sample_index=jnp.zeros((BATCH,), jnp.int32))
      state = decoding.init_state(cache, logits_BxV, params_rows,
                                  jnp.zeros((BATCH,), bool), NEW_TOKENS)
      state = decoding.decode_loop(t2l, state, eos_id=-1)
      return state.tokens_BxC, state.logprobs_BxC

    sampled, logprobs = sample(new_params, tokens_BxL[:, :PROMPT], lengths_B, cache)

  gather = lambda x: np.asarray(multihost_utils.process_allgather(x, tiled=True))
  results = {
      'loss': gather(loss), 'loss_after': gather(loss_after),
      'train_loss': gather(metrics['loss']), 'grad_norm': gather(metrics['grad_norm']),
      'sampled': gather(sampled), 'logprobs': gather(logprobs),
      **{'param/' + '/'.join(str(getattr(k, 'key', k)) for k in path): gather(v)
         for path, v in jax.tree_util.tree_flatten_with_path(new_params)[0]},
      'local_rows': np.asarray(rows), 'process_count': np.asarray(jax.process_count()),
  }
  np.savez(os.path.join(out_dir, f'results_{jax.process_index()}.npz'), **results)
  distributed.barrier('results written')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _start(out_dir: pathlib.Path, devices: int, *args: str) -> subprocess.Popen:
  env = {k: v for k, v in os.environ.items() if not k.startswith('RESTREACT_')}
  env.update(XLA_FLAGS=f'--xla_force_host_platform_device_count={devices}',
             JAX_PLATFORMS='cpu', TF_CPP_MIN_LOG_LEVEL='3', PYTHONPATH=str(ROOT))
  return subprocess.Popen([sys.executable, __file__, 'worker', f'--out={out_dir}', *args],
                          env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(procs: list[subprocess.Popen], timeout: float) -> None:
  try:
    outputs = [p.communicate(timeout=timeout)[0] for p in procs]
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
  for p, out in zip(procs, outputs):
    assert p.returncode == 0, out[-4000:]


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_two_processes_equal_one_process(tmp_path):
  two, one = tmp_path / 'two', tmp_path / 'one'
  two.mkdir()
  one.mkdir()
  coordinator = f'127.0.0.1:{_free_port()}'
  # The two workers and the single-process reference run side by side.
  workers = [_start(two, 4, f'--coordinator={coordinator}', '--num_processes=2',
                    f'--process_id={i}') for i in range(2)]
  _wait([*workers, _start(one, 8)], timeout=240)

  reference = dict(np.load(one / 'results_0.npz'))
  assert reference['process_count'] == 1
  assert reference['local_rows'].tolist() == list(range(BATCH))
  for i in range(2):
    got = dict(np.load(two / f'results_{i}.npz'))
    assert got['process_count'] == 2
    # Each process fed only its own half of the batch.
    assert got['local_rows'].tolist() == list(range(i * BATCH // 2, (i + 1) * BATCH // 2))
    assert set(got) == set(reference)
    for key in reference:
      if key in ('local_rows', 'process_count'):
        continue
      if key == 'sampled':
        np.testing.assert_array_equal(got[key], reference[key], err_msg=key)
      else:
        np.testing.assert_allclose(got[key], reference[key], rtol=2e-5, atol=2e-6,
                                   err_msg=key)
  # The step changed the parameters and lowered the loss: the run did real work.
  assert reference['loss_after'] < reference['loss']
  assert reference['sampled'].shape == (BATCH, NEW_TOKENS)
  assert len({tuple(r) for r in reference['sampled']}) > 1


if __name__ == '__main__':
  if len(sys.argv) < 2 or sys.argv[1] != 'worker':
    raise SystemExit('usage: test_distributed.py worker --out=DIR [--coordinator=H:P '
                     '--num_processes=N --process_id=I]')
  flags = dict(a[2:].split('=', 1) for a in sys.argv[2:])
  _worker(flags['out'], flags.get('coordinator'), int(flags.get('num_processes', 1)),
          int(flags.get('process_id', 0)))
