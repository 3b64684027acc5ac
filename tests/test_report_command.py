"""Tests for `restreact report`: the CLI over `evaluation.report.build_report`."""

from __future__ import annotations

import json

import gin

from restreact_jax import main
from restreact_jax.evaluation import report
from tests.test_report import _exp


def _run(argv: list[str]) -> int:
  gin.clear_config(clear_constants=True)  # each CLI call starts like a fresh process
  return main.main(argv)


def test_report_command_builds_what_the_loop_builds(tmp_path, capsys):
  exp = _exp(tmp_path)
  (exp / 'config.gin').write_text('# the run\'s own config\n')
  test_eval = exp / 'test' / 'eval' / 'gen_1-xs' / 'summary.json'
  test_eval.parent.mkdir(parents=True)
  test_eval.write_text(json.dumps({'final': {'mean': 61.0, 'std': 0.5, 'n_runs': 3},
                                   'answer_generation': {'mean': 60.0, 'std': 1.25, 'n_runs': 3}}))
  assert _run(['report', f'--exp_dir={exp}', '--max_trajectories=1']) == 0
  out = capsys.readouterr().out.splitlines()
  assert out[0] == '| generation | s | xs |'
  assert '| gen 1 | N/A | 55.2 ± 1.5 |' in out
  assert out[-1] == f'report: wrote {exp / "report" / "index.html"}'
  by_command = {name: (exp / 'report' / name).read_text()
                for name in ('index.html', 'table.md', 'test.md')}
  # The test split's table (the loop's test.md) survives a rebuild by hand.
  assert by_command['test.md'].splitlines()[2] == '| gen_1-xs | 61.0 ± 0.5 | 60.0 ± 1.2 |'
  assert '<td>gen_1-xs</td><td>61.0 ± 0.5</td>' in by_command['index.html']
  # The run's config stays; the report's own resolved config sits in report/.
  assert (exp / 'config.gin').read_text() == '# the run\'s own config\n'
  assert (exp / 'report' / 'config.gin').exists()
  report.build_report(exp, max_trajectories=1)  # what the loop's report phase calls
  assert {name: (exp / 'report' / name).read_text() for name in by_command} == by_command


def test_report_command_reads_the_exp_dir_macro(tmp_path, capsys):
  exp = _exp(tmp_path)
  assert _run(['report', f"--gin.EXP_DIR='{exp}'"]) == 0
  assert capsys.readouterr().out.splitlines()[-1].endswith('report/index.html')
  summary = json.loads((exp / 'report' / 'summary.json').read_text())
  assert [g['gen'] for g in summary['generations']] == [0, 1]


def test_report_command_errors_are_one_line_and_keep_the_old_report(tmp_path, capsys):
  assert _run(['report']) == 2
  assert capsys.readouterr().err.strip() == (
      'restreact: error: report: no experiment directory; pass --exp_dir=DIR or '
      "--gin.EXP_DIR=\"'DIR'\"")
  assert _run(['report', f'--exp_dir={tmp_path / "missing"}']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'does not exist' in err[0] and 'missing' in err[0]
  exp = _exp(tmp_path)
  assert _run(['report', f'--exp_dir={exp}']) == 0
  before = (exp / 'report' / 'index.html').read_text()
  assert _run(['report', f'--exp_dir={exp}', '--max_trajectories=-1']) == 2
  assert '--max_trajectories must be >= 0' in capsys.readouterr().err
  (exp / 'gen_0' / 'eval' / 's' / 'summary.json').write_text('{broken')
  assert _run(['report', f'--exp_dir={exp}']) == 2
  err = capsys.readouterr().err.strip().splitlines()
  assert len(err) == 1 and 'cannot read' in err[0] and 'gen_0/eval/s/summary.json' in err[0]
  assert (exp / 'report' / 'index.html').read_text() == before
  assert [p.name for p in exp.iterdir() if p.name.startswith('.')] == []
