"""`restreact evaluate`: auto-eval one model of generation g on dev (loop phases).

  restreact evaluate --gin_file=gin/experiments/demo_cpu.gin --gin.EXP_DIR="'runs/demo'" \
      --generation=1 --size=xs

Rolls the model out on the dev questions (`rest.eval_runs` runs, resumable)
into `EXP_DIR/gen_<g>/eval_rollouts/<size>/` and judges them into
`EXP_DIR/gen_<g>/eval/<size>/{summary.json, results.jsonl}`; prints mean ± std
over runs. The model's training must be done.
"""

from __future__ import annotations

from typing import Any

import gin


@gin.configurable
def evaluate(generation: int | str = gin.REQUIRED, size: str | None = None) -> dict[str, Any]:
  """Runs `gen_<g>/eval_rollout/<size>` and `gen_<g>/eval/<size>`.

  Args:
    generation: g >= 0.
    size: the model size (default: `rest.policy_size`).

  Returns:
    The loop's (partial) summary.
  """
  from restreact_jax.commands import rest as rest_cmd  # pylint: disable=g-import-not-at-top
  g = rest_cmd._opt_int(generation, '--generation')  # pylint: disable=protected-access
  if size is None:
    size = gin.query_parameter('rest.policy_size')
  return rest_cmd.rest(only=[f'gen_{g}/eval_rollout/{size}', f'gen_{g}/eval/{size}'])
