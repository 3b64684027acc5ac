"""`restreact rank`: rank generation g's rollout steps (one phase of the loop).

  restreact rank --gin_file=gin/experiments/demo_cpu.gin --gin.EXP_DIR="'runs/demo'" \
      --generation=1 [--ranker=oracle]

Needs everything before it done (`restreact rest` has run up to the rollout of
generation g). Writes `EXP_DIR/gen_<g>/rankings/rankings.jsonl` and records
the phase in the manifest. `--ranker` applies to generation g only; later
phases must then be run with the same override
(`--gin.rest.ranker_by_generation="{g: 'oracle'}"`), or bind `rest.ranker`
for every generation; a plain `restreact rest` redoes the ranking with the
configured ranker. The oracle
ranker reads gold answers: an ablation, labelled `oracle: true` in every row.
"""

from __future__ import annotations

from typing import Any

import gin


@gin.configurable
def rank(generation: int | str = gin.REQUIRED, ranker: str | None = None) -> dict[str, Any]:
  """Runs the phase `gen_<generation>/rank` with the `rest` bindings.

  Args:
    generation: g >= 1.
    ranker: override of `rest.ranker` for this generation ('default',
      'rules', 'consistency', 'oracle').

  Returns:
    The loop's (partial) summary.
  """
  from restreact_jax.commands import rest as rest_cmd  # pylint: disable=g-import-not-at-top
  g = rest_cmd._opt_int(generation, '--generation')  # pylint: disable=protected-access
  overrides = {'ranker_by_generation': {g: ranker}} if ranker else {}
  return rest_cmd.rest(only=[f'gen_{g}/rank'], **overrides)
