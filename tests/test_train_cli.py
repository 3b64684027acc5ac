"""End-to-end tests of `restreact train` through the CLI entry point."""

import re

import jax
import numpy as np
import pytest

from restreact_jax import checkpoints
from restreact_jax import main as cli
from restreact_jax import partitioning
from restreact_jax import trainer
from restreact_jax.models import configs

# The smoke experiment on a (2, 4) mesh with a pinned decay, so these runs share
# the compiled step of tests/test_trainer.py when run in one session.
SMOKE = ['train', '--gin_file=gin/experiments/smoke.gin', '--gin.MESH_SHAPE=(2, 4)',
         '--gin.train.decay_steps=100', '--gin.train.progress=False']
TINY = configs.TransformerConfig(embed_dim=64, num_layers=2, num_heads=4, num_kv_heads=2,
                                 head_dim=16, mlp_dim=256)


def _train(exp_dir, *extra):
  import gin
  gin.clear_config(clear_constants=True)  # as a fresh process would start
  return cli.main([*SMOKE, f"--gin.EXP_DIR='{exp_dir}'", *extra])


def _events(logdir):
  import tensorflow as tf
  tags = set()
  for path in logdir.glob('events.out.tfevents.*'):
    for event in tf.compat.v1.train.summary_iterator(str(path)):
      tags.update(v.tag for v in event.summary.value)
  return tags


def test_smoke_run_writes_outputs_and_resumes(tmp_path, capsys):
  assert _train(tmp_path, '--gin.TRAIN_STEPS=4', '--gin.train.eval_period=4') == 0
  out = tmp_path / 'smoke'
  assert 'train.train_steps = %TRAIN_STEPS' in (out / 'config.gin').read_text()
  assert "TRAIN_STEPS = 4" in (out / 'config.gin').read_text()
  assert {'loss', 'accuracy', 'learning_rate', 'eval/loss'} <= _events(out / 'tensorboard')
  assert 'train: step 4' in capsys.readouterr().out

  assert _train(tmp_path, '--gin.TRAIN_STEPS=6', '--gin.train.eval_period=0') == 0
  with checkpoints.Checkpointer(out / 'checkpoints') as ckpt:
    assert ckpt.all_steps() == [4, 6]
    abstract = trainer.build_program(TINY, partitioning.make_mesh((2, 4)),
                                     partitioning.logical_axis_rules(),
                                     trainer.OptimizerConfig(learning_rate=3e-3, warmup_steps=10,
                                                             decay_steps=100),
                                     z_loss=1e-4).abstract_state
    state, meta = ckpt.restore(abstract)
  assert int(state.step) == 6 and meta.data_position == 6  # resumed, not restarted
  assert 'TRAIN_STEPS = 6' in meta.config_gin
  # A finished run is a no-op.
  assert _train(tmp_path, '--gin.TRAIN_STEPS=6') == 0
  assert 'already done' in capsys.readouterr().out

  # Fine-tuning starts from those params at step 0 with a fresh optimizer; the
  # first step's learning rate is 0 (warmup), so its params are exactly them.
  assert _train(tmp_path, '--gin.TRAIN_STEPS=1', "--gin.train.model_dir='tuned'",
                "--gin.train.init_checkpoint='smoke/checkpoints'") == 0
  with checkpoints.Checkpointer(tmp_path / 'tuned' / 'checkpoints') as ckpt:
    tuned, meta = ckpt.restore(abstract)
  assert meta.step == 1 and meta.data_position == 1
  for a, b in zip(jax.tree.leaves(tuned.params), jax.tree.leaves(state.params), strict=True):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  assert float(jax.tree.leaves(tuned.opt_state)[0]) == 1  # a fresh optimizer's count


def test_distils_from_a_teacher_checkpoint(tmp_path, capsys):
  assert _train(tmp_path, '--gin.TRAIN_STEPS=2') == 0
  student = ["--gin.train.model_dir='student'", '--gin.TRAIN_STEPS=2']
  assert _train(tmp_path, *student, "--gin.train.teacher_checkpoint='smoke/checkpoints'") == 2
  err = capsys.readouterr().err.strip()
  assert err.endswith('train: set teacher_model and teacher_checkpoint together'), err
  assert _train(tmp_path, *student, '--gin.train.teacher_model=%MODEL',
                "--gin.train.teacher_checkpoint='smoke/checkpoints'",
                '--gin.train.distill_weight=1.0') == 0
  assert 'distill_kl=' in capsys.readouterr().out
  assert 'distill_kl' in _events(tmp_path / 'student' / 'tensorboard')
  assert "train.teacher_checkpoint = 'smoke/checkpoints'" in (
      tmp_path / 'student' / 'config.gin').read_text()


def test_missing_gin_file(capsys):
  assert cli.main(['train', '--gin_file=gin/experiments/nope.gin']) == 2
  err = capsys.readouterr().err.strip()
  assert err.startswith('restreact: error:') and 'nope.gin' in err and len(err.splitlines()) == 1


def test_unknown_binding_names_it_and_suggests(tmp_path, capsys):
  assert _train(tmp_path, '--gin.train.learnig_rate=0.1') == 2
  err = capsys.readouterr().err
  assert 'learnig_rate' in err and 'Did you mean: learning_rate' in err
  assert not (tmp_path / 'smoke').exists()


def test_missing_init_checkpoint(tmp_path, capsys):
  assert _train(tmp_path, '--gin.TRAIN_STEPS=1', "--gin.train.init_checkpoint='nowhere'") == 2
  err = capsys.readouterr().err
  assert 'checkpoint directory not found' in err and 'nowhere' in err


@pytest.mark.slow
def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, capsys):
  assert _train(tmp_path, '--gin.TRAIN_STEPS=2', '--gin.train.checkpoint_period=1') == 0
  capsys.readouterr()
  # An absurd learning rate blows the weights up within a step or two.
  assert _train(tmp_path, '--gin.TRAIN_STEPS=8', '--gin.train.checkpoint_period=1',
                '--gin.train.learning_rate=1e30', '--gin.train.warmup_steps=0') == 2
  err = capsys.readouterr().err.strip().splitlines()[-1]
  match = re.match(r'restreact: error: (loss|grad_norm) is (nan|inf|-inf) at step (\d+);', err)
  assert match, err
  bad_step = int(match.group(3))
  assert bad_step > 2
  assert 'last good checkpoint: step' in err
  with checkpoints.Checkpointer(tmp_path / 'smoke' / 'checkpoints') as ckpt:
    steps = ckpt.all_steps()
    assert steps and max(steps) < bad_step
    params = ckpt.restore_params(trainer.param_shardings(
        TINY, partitioning.make_mesh((2, 4)), partitioning.logical_axis_rules())[0])
  assert all(np.isfinite(np.asarray(p)).all() for p in jax.tree.leaves(params))
  assert f'step {max(steps)} in' in err
