"""Tests for single loop phases' helpers (rest/phases.py)."""

import types

from restreact_jax.feedback.rankers import Ranking
from restreact_jax.rest import phases


def _ranked(step_type, order, scores=None, oracle=False):
  ctx = types.SimpleNamespace(step_type=step_type)
  ranking = Ranking(list(order), list(scores or [0.0] * len(order)), '', 'x', oracle=oracle)
  return (ctx, None, ranking)


def test_oracle_agreement_counts_only_informative_steps():
  ours = [_ranked('decision', [1, 0]), _ranked('decision', [0, 1]),
          _ranked('answer', [0, 1]), _ranked('answer', [1, 0])]
  gold = [_ranked('decision', [1, 0], [0.0, 1.0], True),
          _ranked('decision', [1, 0], [0.0, 1.0], True),
          _ranked('answer', [0, 1], [1.0, 1.0], True),   # not informative
          _ranked('answer', [0, 1], [1.0, 0.0], True)]
  agreement = phases.oracle_agreement(ours, gold)
  assert agreement['informative_steps'] == 3
  assert agreement['per_step_type']['decision'] == {'agreement': 0.5, 'steps': 2}
  assert agreement['per_step_type']['answer'] == {'agreement': 0.0, 'steps': 1}
  assert abs(agreement['all'] - 1 / 3) < 1e-9


def test_oracle_agreement_with_nothing_informative():
  agreement = phases.oracle_agreement([_ranked('decision', [0, 1])],
                                      [_ranked('decision', [0, 1], [0.0, 0.0], True)])
  assert agreement == {'all': None, 'informative_steps': 0, 'per_step_type': {}}
