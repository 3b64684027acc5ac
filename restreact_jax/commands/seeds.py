"""`restreact seeds`: one loop per world seed, compared across seeds.

  restreact seeds --exp_dirs='runs/s0,runs/s7,runs/s1' [--out=runs/seeds.md]
  restreact seeds --exp_dirs='runs/s*'

Reads each directory's `report/summary.json` (test split), prints the
per-seed table and, for each generation step of the policy and each student
against its teacher, the per-seed differences, their mean ± sd across seeds,
how many seeds improved (and by more than the std over runs), a one-sided
sign test and a paired t-test (`evaluation.seeds`), and the seeds on which
every step of the policy is beyond the std over runs. `--out=FILE.md` also
writes the markdown and `FILE.json` beside it.
"""

from __future__ import annotations

import glob
import json
import pathlib

import gin

from restreact_jax import errors


def _expand(exp_dirs: str) -> list[str]:
  """Comma-separated directories; a glob stands for the directories it matches, sorted."""
  paths = []
  for part in (p.strip() for p in str(exp_dirs).split(',')):
    if not part:
      continue
    if not glob.has_magic(part):
      paths.append(part)  # a missing one is reported by name when it is read
      continue
    matches = sorted(m for m in glob.glob(part) if pathlib.Path(m).is_dir())
    if not matches:
      raise errors.UserError(f'seeds: {part!r} matches no directory')
    paths += matches
  return paths


@gin.configurable
def seeds(exp_dirs: str = gin.REQUIRED, out: str | None = None) -> dict:
  """Prints (and with `out` writes) the across-seed comparison of several loops.

  Args:
    exp_dirs: comma-separated experiment directories or globs, one loop each.
    out: write the markdown here and the JSON beside it (`.json`).

  Returns:
    The JSON-able comparison.
  """
  from restreact_jax.evaluation import seeds as seeds_lib  # pylint: disable=g-import-not-at-top
  runs = [seeds_lib.read_run(d) for d in _expand(exp_dirs)]
  result = seeds_lib.compare(runs)
  text = seeds_lib.markdown(result)
  data = seeds_lib.as_json(result)
  print(text, end='')
  if out:
    path = pathlib.Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.with_suffix('.json').write_text(json.dumps(data, indent=2, ensure_ascii=False) + '\n')
    print(f'seeds: wrote {path} and {path.with_suffix(".json")}')
  return data
