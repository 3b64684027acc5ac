"""Tests for logit distillation: the KL, the distilling train step and loop."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from restreact_jax import checkpoints
from restreact_jax import distillation
from restreact_jax import errors
from restreact_jax import partitioning
from restreact_jax import trainer

from tests.test_trainer import CONFIG, OPT, RULES, SMOKE, _assert_close, _batch

# The teacher a pruned student comes from: one more layer, wider MLP.
TEACHER = dataclasses.replace(CONFIG, num_layers=3, mlp_dim=384)


def _logits(seed, shape=(2, 5, 11)):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32) * 3


@pytest.mark.parametrize('temperature', [1.0, 2.5])
def test_kl_sums_match_torch_on_the_weighted_tokens(temperature):
  import torch  # local: torch and TensorFlow loaded at collection time can crash the process
  student, teacher = _logits(0), _logits(1)
  weights = np.array([[1, 1, 0, 1, 0], [0, 1, 1, 1, 0]], np.float32)
  got = float(distillation.kl_sums(student, teacher, weights, temperature))
  kl = torch.nn.functional.kl_div(
      torch.log_softmax(torch.tensor(student) / temperature, -1),
      torch.log_softmax(torch.tensor(teacher) / temperature, -1),
      log_target=True, reduction='none').sum(-1)
  expected = temperature ** 2 * float((kl * torch.tensor(weights)).sum())
  np.testing.assert_allclose(got, expected, rtol=1e-5)
  # Masked positions do not count, whatever their logits.
  moved = student.copy()
  moved[0, 2] += 50.0
  np.testing.assert_allclose(float(distillation.kl_sums(moved, teacher, weights, temperature)),
                             got, rtol=1e-5)
  assert float(distillation.kl_sums(teacher, teacher, weights, temperature)) == pytest.approx(
      0.0, abs=1e-5)


def test_kl_gradient_reaches_the_student_only():
  student, teacher = _logits(2), _logits(3)
  weights = np.ones(student.shape[:2], np.float32)
  g_student, g_teacher = jax.grad(distillation.kl_sums, argnums=(0, 1))(
      student, teacher, weights, 1.0)
  assert np.abs(np.asarray(g_student)).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(g_teacher), 0.0)
  # At T = 1 the gradient is softmax(student) - softmax(teacher), per token.
  expected = jax.nn.softmax(student) - jax.nn.softmax(teacher)
  np.testing.assert_allclose(np.asarray(g_student), np.asarray(expected), atol=1e-5)


def test_teacher_check_names_the_bad_setting():
  distillation.Teacher(TEACHER, 0.5, 2.0).check(CONFIG)
  with pytest.raises(errors.UserError, match='weight must be in'):
    distillation.Teacher(TEACHER, 0.0).check(CONFIG)
  with pytest.raises(errors.UserError, match='temperature must be > 0'):
    distillation.Teacher(TEACHER, 0.5, 0.0).check(CONFIG)
  with pytest.raises(errors.UserError, match='vocabulary'):
    distillation.Teacher(dataclasses.replace(TEACHER, vocab_size=CONFIG.vocab_size + 1)).check(
        CONFIG)


def _teacher_params(mesh, seed=7):
  return trainer.init_state(TEACHER, mesh, RULES, jax.random.key(seed),
                            trainer.make_optimizer(OPT, 100)).params


def _step(mesh, teacher, teacher_params, batch, state=None):
  program = trainer.build_program(CONFIG, mesh, RULES, OPT, 1, z_loss=0.0, teacher=teacher)
  state = program.init(jax.random.key(0)) if state is None else state
  sharding = partitioning.batch_sharding(mesh)
  batch = {k: jax.device_put(v, sharding) for k, v in batch.items()}
  return program.steps.train(state, batch, jax.random.key(1), teacher_params)


def test_distilling_step_loss_mixes_ce_and_kl():
  mesh = partitioning.make_mesh((2, 4))
  teacher = distillation.Teacher(TEACHER, weight=0.25, temperature=2.0)
  params = _teacher_params(mesh)
  batch = _batch(0)
  state = trainer.build_program(CONFIG, mesh, RULES, OPT, 1, z_loss=0.0).init(jax.random.key(0))
  student_params = jax.device_get(state.params)
  loss, sums = trainer.loss_fn(student_params, batch, jax.random.key(0),
                               jax.device_get(params), model=trainer.transformer.Transformer(
                                   CONFIG), z_loss=0.0, teacher=teacher)
  # Recomputed from the two models' logits, outside the trainer.
  s_logits, _ = trainer.transformer.Transformer(CONFIG).apply(
      {'params': student_params}, batch['decoder_input_tokens'], mode=trainer.transformer.Mode.TRAIN)
  t_logits, _ = trainer.transformer.Transformer(TEACHER).apply(
      {'params': jax.device_get(params)}, batch['decoder_input_tokens'],
      mode=trainer.transformer.Mode.TRAIN)
  ce = trainer.cross_entropy_sums(s_logits, batch['decoder_target_tokens'],
                                  batch['decoder_loss_weights'])['ce']
  kl = distillation.kl_sums(s_logits, t_logits, batch['decoder_loss_weights'], 2.0)
  np.testing.assert_allclose(float(sums['kl']), float(kl), rtol=1e-5)
  np.testing.assert_allclose(float(loss), 0.75 * float(ce) + 0.25 * float(kl), rtol=1e-5)
  # The step reports the plain cross-entropy and the KL per token (at T = 1 units).
  _, metrics = _step(mesh, teacher, params, batch)
  weight = float(np.sum(batch['decoder_loss_weights']))
  np.testing.assert_allclose(float(metrics['loss']), float(ce) / weight, rtol=1e-4)
  np.testing.assert_allclose(float(metrics['distill_kl']), float(kl) / weight / 4.0, rtol=1e-4)


def test_student_equal_to_its_teacher_does_not_move_under_pure_distillation():
  mesh = partitioning.make_mesh((2, 4))
  program = trainer.build_program(CONFIG, mesh, RULES, OPT, 1, z_loss=0.0)
  state = program.init(jax.random.key(0))
  start = jax.device_get(state.params)
  same = distillation.Teacher(CONFIG, weight=1.0)
  # A copy: the step donates the state's buffers.
  teacher_params = jax.tree.map(jnp.copy, state.params)
  new_state, metrics = _step(mesh, same, teacher_params, _batch(0), state=state)
  assert float(metrics['distill_kl']) == pytest.approx(0.0, abs=1e-6)
  assert float(metrics['grad_norm']) == pytest.approx(0.0, abs=1e-6)
  _assert_close(new_state.params, start, 1e-7)


def test_distilling_step_sharded_equals_unsharded():
  teacher = distillation.Teacher(TEACHER, weight=0.5, temperature=1.5)
  results = []
  for shape in ((2, 4), (1, 1)):
    mesh = partitioning.make_mesh(shape, devices=jax.devices()[:shape[0] * shape[1]])
    state, metrics = _step(mesh, teacher, _teacher_params(mesh), _batch(0))
    results.append((jax.device_get(state.params), float(metrics['distill_kl'])))
  _assert_close(results[0][0], results[1][0], 2e-5)
  assert results[0][1] == pytest.approx(results[1][1], rel=1e-4)


def test_distilling_loop_pulls_the_student_toward_its_teacher(tmp_path):
  import tasks  # noqa: F401
  mesh = partitioning.make_mesh((2, 4))
  with checkpoints.Checkpointer(tmp_path / 'teacher') as ckpt:
    ckpt.save({'params': jax.device_get(_teacher_params(mesh))},
              checkpoints.Meta(step=0, data_position=0, config_gin=''))
    ckpt.wait()
  loop = trainer.LoopConfig(train_steps=20, checkpoint_period=100, seed=5)

  def run(teacher):
    return trainer.train_loop(CONFIG, mesh, RULES, OPT, SMOKE, loop, progress=False,
                              teacher=teacher, teacher_checkpoint=str(tmp_path / 'teacher'))

  pure = run(distillation.Teacher(TEACHER, weight=1.0)).history
  kls = [h['distill_kl'] for h in pure]
  assert kls[-1] < 0.5 * kls[0], kls
  # Without the KL term the same run does not approach the teacher as fast.
  mixed = run(distillation.Teacher(TEACHER, weight=0.01)).history
  assert mixed[-1]['distill_kl'] > 2 * kls[-1]
  with pytest.raises(errors.UserError, match="teacher's checkpoint"):
    trainer.train_loop(CONFIG, mesh, RULES, OPT, SMOKE, loop, progress=False,
                       teacher=distillation.Teacher(TEACHER))


def test_phase_refuses_a_distill_weight_without_a_teacher(tmp_path):
  from restreact_jax.rest import phases  # pylint: disable=g-import-not-at-top
  settings = phases.TrainSettings(steps=2, distill_weight=0.5)
  with pytest.raises(errors.UserError, match='distill_weight is set but this model has no teacher'):
    phases.train(tmp_path / 'm', model=CONFIG, task='restreact_smoke', settings=settings,
                 mesh_shape=(1, 1), init_checkpoint=None, config_text='', progress=False)
  # Settings that never distil keep the fingerprints they had.
  assert 'distill_weight' not in phases.TrainSettings(steps=2).fingerprint_key()
  assert phases.TrainSettings(steps=2, distill_weight=0.5).fingerprint_key()['distill_weight'] == 0.5
