"""`restreact mixture`: build generation g's fine-tuning mixture (one phase of the loop).

  restreact mixture --gin_file=gin/experiments/demo_cpu.gin --gin.EXP_DIR="'runs/demo'" \
      --generation=1

Needs the rollout and ranking of generation g done. Writes
`EXP_DIR/gen_<g>/ranked/<step_type>.tfrecord`, `stats.json` and the rankings
beside them, and prints the example counts per step type.
"""

from __future__ import annotations

from typing import Any

import gin


@gin.configurable
def mixture(generation: int | str = gin.REQUIRED) -> dict[str, Any]:
  """Runs the phase `gen_<generation>/mixture` with the `rest` bindings.

  Args:
    generation: g >= 1.

  Returns:
    The loop's (partial) summary.
  """
  from restreact_jax.commands import rest as rest_cmd  # pylint: disable=g-import-not-at-top
  g = rest_cmd._opt_int(generation, '--generation')  # pylint: disable=protected-access
  return rest_cmd.rest(only=[f'gen_{g}/mixture'])
