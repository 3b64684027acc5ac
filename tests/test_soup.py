"""Tests for the model soup of a loop training phase (`TrainSettings.soup`)."""

import jax
import numpy as np

from restreact_jax import partitioning
from restreact_jax import trainer
from restreact_jax.rest import phases

from tests.test_trainer import CONFIG, RULES


def _train(model_dir, settings):
  import tasks  # noqa: F401  (registers restreact_smoke)
  return phases.train(model_dir, model=CONFIG, task='restreact_smoke', settings=settings,
                      mesh_shape=(2, 4), init_checkpoint=None, config_text='', progress=False)


def _params(directory):
  return jax.device_get(trainer.load_params(str(directory), CONFIG,
                                            partitioning.make_mesh((1, 1), jax.devices()[:1]),
                                            RULES))


def test_soup_hands_on_the_mean_of_its_members(tmp_path):
  settings = phases.TrainSettings(steps=3, batch_size=16, warmup_steps=1, seed=4, soup=2,
                                  task_feature_lengths={'inputs': 48, 'targets': 16})
  result = _train(tmp_path, settings)
  assert result['step'] == 3 and len(result['members']) == 2
  members = [_params(tmp_path / f'soup_{k}' / 'checkpoints') for k in range(2)]
  # Different data orders: the members differ, and the phase's checkpoint is their mean.
  diffs = [np.abs(a - b).max() for a, b in zip(*map(jax.tree.leaves, members))]
  assert max(diffs) > 1e-4
  expected = jax.tree.map(lambda a, b: (a + b) / 2, *members)
  got = _params(tmp_path / 'checkpoints')
  for g, e in zip(jax.tree.leaves(got), jax.tree.leaves(expected), strict=True):
    np.testing.assert_allclose(g, e, rtol=1e-6, atol=1e-7)
  # Member k is the plain run with data-order seed `seed + k`.
  single = _train(tmp_path / 'single', phases.TrainSettings(
      steps=3, batch_size=16, warmup_steps=1, seed=5,
      task_feature_lengths={'inputs': 48, 'targets': 16}))
  assert single['params_digest'] == result['members'][1]['params_digest']
  # A rerun (after a kill, say) trains nothing more and finds the same soup.
  again = _train(tmp_path, settings)
  assert again['params_digest'] == result['params_digest']
  assert phases.TrainSettings(steps=3, soup=2).fingerprint_key()['soup'] == 2
  assert 'soup' not in phases.TrainSettings(steps=3).fingerprint_key()
