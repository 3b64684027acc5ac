"""Tail averaging: the mean of the parameters over a run's last N steps.

A short fine-tune ends wherever its last few batches pushed it, so the same
data in another order can land on a noticeably different policy. Averaging
the iterates of the final steps (Polyak averaging over the tail, as in SWA
and LAWA) keeps much of what those steps learned and less of their order.

`tail_average` is an optax transformation to put last in a chain: it passes
the updates through unchanged and keeps, in its state, the running mean of
the parameters the updates produce from step `total_steps - N + 1` on. The
mean lives in the optimizer state, so it takes the parameters' sharding,
is checkpointed with them and survives a resume. `averaged_params` finds it
in any optimizer state.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax


class TailAverageState(NamedTuple):
  """Updates applied so far, and the mean of the parameters in the window."""
  count: jax.Array
  mean: Any


def tail_average(num_steps: int, total_steps: int) -> optax.GradientTransformation:
  """The running mean of the parameters over the last `num_steps` of `total_steps`.

  Args:
    num_steps: steps averaged (>= 1); more than `total_steps` averages all.
    total_steps: the run's length.

  Returns:
    An optax transformation that leaves the updates unchanged.
  """
  if num_steps < 1:
    raise ValueError(f'tail_average needs num_steps >= 1, got {num_steps}')
  first = max(int(total_steps) - int(num_steps), 0)  # updates before the window

  def init(params):
    return TailAverageState(count=jnp.zeros((), jnp.int32),
                            mean=optax.tree_utils.tree_zeros_like(params))

  def update(updates, state, params=None):
    if params is None:
      raise ValueError('tail_average needs the params in update()')
    count = state.count + 1
    # 1 on the window's first step (the mean starts there), then 2, 3, ...
    n = (count - first).astype(jnp.float32)

    def step(mean, p, u):
      new = (p + u).astype(mean.dtype)
      running = mean + (new - mean) / jnp.maximum(n, 1.0)
      return jnp.where(n >= 1, running, mean)

    mean = jax.tree.map(step, state.mean, params, updates)
    return updates, TailAverageState(count=count, mean=mean)

  return optax.GradientTransformation(init, update)


def averaged_params(opt_state: Any) -> Any | None:
  """The `TailAverageState.mean` inside an optimizer state, or None."""
  if isinstance(opt_state, TailAverageState):
    return opt_state.mean
  if isinstance(opt_state, (tuple, list)):
    for part in opt_state:
      found = averaged_params(part)
      if found is not None:
        return found
  return None
