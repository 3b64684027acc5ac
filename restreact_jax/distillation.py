"""Logit distillation: a student trained toward its teacher's next-token distributions.

Fine-tuning a student on its teacher's sampled steps alone (the paper's
self-distillation) shows it one token per position; the teacher's whole
distribution at that position says which other tokens it found plausible and
by how much. The student's loss becomes

    (1 - weight) * CE(targets) + weight * T**2 * KL(teacher_T || student_T)

on the target tokens, where `_T` are the softmaxes at temperature `T` (the
`T**2` keeps the gradient's scale independent of `T`, Hinton et al., 2015).
The teacher's forward pass runs inside the jitted train step on the same
batch with its params held fixed (a pruned student, `models/prune.py`, is
the usual case: same vocabulary, fewer layers and units).
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from restreact_jax import errors
from restreact_jax.models import configs


@dataclasses.dataclass(frozen=True)
class Teacher:
  """What a distilling train step needs to know about its teacher (hashable).

  Attributes:
    config: the teacher's architecture (its vocabulary must be the student's).
    weight: share of the loss given to the KL term, in (0, 1].
    temperature: softening temperature of both distributions (> 0).
  """
  config: configs.TransformerConfig
  weight: float = 0.5
  temperature: float = 1.0

  def check(self, student: configs.TransformerConfig) -> None:
    """Raises a `UserError` naming the bad setting."""
    if not 0.0 < self.weight <= 1.0:
      raise errors.UserError(f'distillation weight must be in (0, 1], got {self.weight}')
    if self.temperature <= 0.0:
      raise errors.UserError(f'distillation temperature must be > 0, got {self.temperature}')
    if self.config.vocab_size != student.vocab_size:
      raise errors.UserError(
          f'the teacher\'s vocabulary ({self.config.vocab_size}) is not the student\'s '
          f'({student.vocab_size}); logit distillation needs the same tokens')


def kl_sums(student_logits_BxLxV: jax.Array, teacher_logits_BxLxV: jax.Array,
            weights_BxL: jax.Array, temperature: float) -> jax.Array:
  """`T**2 * KL(teacher_T || student_T)` summed over the weighted positions.

  A sum (not a mean) so microbatches add up exactly, like the cross-entropy's.

  Args:
    student_logits_BxLxV: the student's logits (gradients flow through them).
    teacher_logits_BxLxV: the teacher's logits (treated as constants).
    weights_BxL: 1 on trained (target) tokens, 0 on prompt and padding.
    temperature: softening temperature.

  Returns:
    A float32 scalar.
  """
  t = jnp.float32(temperature)
  teacher = jax.lax.stop_gradient(teacher_logits_BxLxV.astype(jnp.float32)) / t
  student = student_logits_BxLxV.astype(jnp.float32) / t
  teacher_logp = jax.nn.log_softmax(teacher, axis=-1)
  student_logp = jax.nn.log_softmax(student, axis=-1)
  kl_BxL = jnp.sum(jnp.exp(teacher_logp) * (teacher_logp - student_logp), axis=-1)
  return jnp.square(t) * jnp.sum(kl_BxL * weights_BxL.astype(jnp.float32))
