"""`restreact report`: (re)build an experiment's HTML report from what is on disk.

  restreact report --gin_file=gin/experiments/demo_cpu.gin --gin.EXP_DIR="'runs/demo'"
  restreact report --exp_dir=runs/demo [--max_trajectories=50]

Reads the auto-eval summaries (`gen_<g>/eval/<size>/summary.json`), ranking
rows and trajectories of EXP_DIR and writes `EXP_DIR/report/{index.html,
table.md, summary.json, plots/*.png}` with the same function the loop's
`report` phase uses (`evaluation.report.build_report`), so a report built by
hand equals the loop's. Prints the Table-1-shaped accuracy table and the path
of `index.html`. The report is replaced atomically; nothing else in EXP_DIR is
touched (the run's own `config.gin` stays as it was).
"""

from __future__ import annotations

import pathlib

import gin

from restreact_jax import errors
from restreact_jax import gin_utils


def _exp_dir_macro() -> str | None:
  """The `EXP_DIR` gin macro, when some gin file or `--gin.EXP_DIR` set it."""
  try:
    return gin.query_parameter('EXP_DIR/macro.value')
  except ValueError:
    return None


def _positive_int(value: int | str, name: str) -> int:
  try:
    number = int(value)
  except (TypeError, ValueError):
    raise errors.UserError(f'report: --{name} must be an integer, got {value!r}') from None
  if number < 0:
    raise errors.UserError(f'report: --{name} must be >= 0, got {number}')
  return number


@gin.configurable
def report(exp_dir: str | None = None,
           max_trajectories: int | str = 20) -> pathlib.Path:
  """Builds `EXP_DIR/report/` and prints its table and location.

  Args:
    exp_dir: the experiment directory; unset, the `EXP_DIR` gin macro.
    max_trajectories: trajectories shown in the viewer (latest generation that
      has any).

  Returns:
    The path of `report/index.html`.
  """
  from restreact_jax.evaluation import report as report_lib  # pylint: disable=g-import-not-at-top

  exp_dir = exp_dir or _exp_dir_macro()
  if not exp_dir:
    raise errors.UserError('report: no experiment directory; pass --exp_dir=DIR or '
                           "--gin.EXP_DIR=\"'DIR'\"")
  index = report_lib.build_report(
      exp_dir, max_trajectories=_positive_int(max_trajectories, 'max_trajectories'))
  # The run's config.gin belongs to the run; the report's own config goes beside it.
  gin_utils.write_config(index.parent)
  table = (index.parent / 'table.md').read_text()
  if table.count('\n') <= 2:  # header lines only
    print(f'report: no auto-eval summaries under {exp_dir}/gen_*/eval/ yet')
  else:
    print(table, end='')
  print(f'report: wrote {index}')
  return index
