"""Tests for the Orbax checkpoint wrapper: layout, keep-N, crashes, resharding."""

import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import NamedSharding, PartitionSpec as P

from restreact_jax import checkpoints
from restreact_jax import errors
from restreact_jax import partitioning


def _state(mesh, seed=0):
  rng = np.random.default_rng(seed)
  return {
      'step': jax.device_put(jnp.asarray(seed, jnp.int32), NamedSharding(mesh, P())),
      'params': {'w': jax.device_put(rng.normal(size=(8, 4)).astype(np.float32),
                                     NamedSharding(mesh, P('data', 'model'))),
                 'b': jax.device_put(rng.normal(size=(4,)).astype(np.float32),
                                     NamedSharding(mesh, P()))},
  }


def _assert_equal(a, b):
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_save_restore_layout_and_meta(tmp_path):
  mesh = partitioning.make_mesh((2, 4))
  state = _state(mesh, 3)
  with checkpoints.Checkpointer(tmp_path / 'ckpt') as ckpt:
    assert ckpt.save(state, checkpoints.Meta(step=3, data_position=7, config_gin='a = 1\n'))
    assert not ckpt.save(state, checkpoints.Meta(step=3, data_position=7))  # exists
  # The on-disk layout other tools rely on.
  step_dir = tmp_path / 'ckpt' / '3'
  assert {'state', 'meta'} <= {p.name for p in step_dir.iterdir()}
  meta_files = [p for p in (step_dir / 'meta').iterdir() if p.is_file()]
  assert json.loads(meta_files[0].read_text()) == {
      'step': 3, 'data_position': 7, 'config_gin': 'a = 1\n'}
  with checkpoints.Checkpointer(tmp_path / 'ckpt', create=False) as ckpt:
    restored, meta = ckpt.restore(checkpoints.abstract_like(state))
  assert meta == checkpoints.Meta(step=3, data_position=7, config_gin='a = 1\n')
  _assert_equal(restored, state)
  assert restored['params']['w'].sharding.spec == P('data', 'model')


def test_restore_into_other_sharding(tmp_path):
  state = _state(partitioning.make_mesh((2, 4)), 1)
  with checkpoints.Checkpointer(tmp_path) as ckpt:
    ckpt.save(state, checkpoints.Meta(step=1, data_position=1))
  other = partitioning.make_mesh((8, 1))
  target = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype,
                                                       sharding=NamedSharding(other, P())), state)
  target['params']['w'] = jax.ShapeDtypeStruct((8, 4), jnp.float32,
                                               sharding=NamedSharding(other, P('data')))
  with checkpoints.Checkpointer(tmp_path) as ckpt:
    restored, _ = ckpt.restore(target)
  _assert_equal(restored, state)
  assert restored['params']['w'].sharding == NamedSharding(other, P('data'))


def test_keep_n_and_latest(tmp_path):
  mesh = partitioning.make_mesh((2, 4))
  with checkpoints.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
    for step in (1, 2, 3):
      ckpt.save(_state(mesh, step), checkpoints.Meta(step=step, data_position=step * 10))
    assert ckpt.all_steps() == [2, 3]
    restored, meta = ckpt.restore(checkpoints.abstract_like(_state(mesh)))
  assert meta.step == 3 and meta.data_position == 30
  _assert_equal(restored, _state(mesh, 3))


def test_interrupted_save_keeps_previous(tmp_path):
  mesh = partitioning.make_mesh((2, 4))
  with checkpoints.Checkpointer(tmp_path) as ckpt:
    ckpt.save(_state(mesh, 2), checkpoints.Meta(step=2, data_position=2))
  # A save of step 5 killed mid-write: Orbax's temporary directory is left
  # behind with part of the files (and no commit marker).
  partial = tmp_path / '5.orbax-checkpoint-tmp-1234567'
  shutil.copytree(tmp_path / '2', partial)
  shutil.rmtree(partial / 'meta')
  (partial / 'state' / 'garbage').write_bytes(b'\x00' * 10)
  with checkpoints.Checkpointer(tmp_path) as ckpt:
    assert ckpt.latest_step() == 2
    restored, meta = ckpt.restore(checkpoints.abstract_like(_state(mesh)))
    assert meta.step == 2
    _assert_equal(restored, _state(mesh, 2))
    # The next save of that step works and the leftover is gone.
    ckpt.save(_state(mesh, 5), checkpoints.Meta(step=5, data_position=5))
    assert ckpt.all_steps() == [2, 5]
  assert not partial.exists()


def test_missing_or_empty_dir_is_user_error(tmp_path):
  with pytest.raises(errors.UserError, match='not found'):
    checkpoints.Checkpointer(tmp_path / 'nope', create=False)
  (tmp_path / 'empty').mkdir()
  with pytest.raises(errors.UserError, match='no checkpoints'):
    checkpoints.Checkpointer(tmp_path / 'empty', create=False)
  with checkpoints.Checkpointer(tmp_path / 'fresh') as ckpt:
    with pytest.raises(errors.UserError, match='no checkpoint'):
      ckpt.restore({'x': jax.ShapeDtypeStruct((1,), jnp.float32)})
  assert not checkpoints.has_checkpoint(tmp_path / 'fresh')
