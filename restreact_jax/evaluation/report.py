"""The experiment report: `EXP_DIR/report/` with a table, plots and a trajectory viewer.

Reads what the phases left in the experiment directory:

* `gen_<g>/eval/<size>/summary.json` (auto-eval) -> a table shaped like the
  paper's Table 1 (generation x model size, final-answer accuracy mean ± std)
  and a plot of accuracy by generation per size;
* `gen_<g>/ranked/*.jsonl` (ranking rows) and `gen_<g>/trajectories/*.jsonl`
  -> examples per step type and how often the ranker's pick agrees with the
  rollout's own min-perplexity choice;
* a few trajectories -> a static viewer: every step's visible prompt, its
  candidates with perplexities, the chosen and the ranker-picked candidate with
  the explanation, search results and citations, and the auto-eval verdict
  when the trajectory was judged.

Writes `report/{index.html, table.md, summary.json, plots/*.png}` into a
temporary directory renamed into place at the end. `summary.json` is
`{"world_seed", "wall_seconds", "generations": [{"gen", "models": {size:
{"final", "answer_generation"}}}]}`. All model text is HTML-escaped.
"""

from __future__ import annotations

import collections
import html
import json
import math
import pathlib
import re
import shutil
import tempfile
from typing import Any

from restreact_jax import errors
from restreact_jax.evaluation.autoeval import load_jsonl
from restreact_jax.feedback.text_overlap import cited_ids

_GEN_RE = re.compile(r'^gen_(\d+)$')
STEP_TYPES = ('decision', 'summarize', 'answer', 'relevance', 'grounding')


def _read_json(path: pathlib.Path) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise errors.UserError(f'report: cannot read {path}: {e}') from e


def _generations(exp: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
  gens = [(int(m.group(1)), p) for p in exp.iterdir() if p.is_dir() and (m := _GEN_RE.match(p.name))]
  return sorted(gens)


def collect_summary(exp_dir: str | pathlib.Path, world_seed: int | None = None,
                    wall_seconds: float | None = None) -> dict[str, Any]:
  """The report's `summary.json` content, read from the experiment directory.

  Args:
    exp_dir: EXP_DIR.
    world_seed: overrides `world/world.json`'s seed.
    wall_seconds: overrides the sum of the manifest's phase times.

  Returns:
    `{"world_seed", "wall_seconds", "generations": [...]}`.
  """
  exp = pathlib.Path(exp_dir)
  if not exp.is_dir():
    raise errors.UserError(f'report: experiment directory {exp} does not exist')
  if world_seed is None:
    world_json = exp / 'world' / 'world.json'
    meta = _read_json(world_json) if world_json.exists() else {}
    world_seed = int(meta.get('world_seed', meta.get('seed', -1)))
  if wall_seconds is None:
    manifest = exp / 'manifest.json'
    phases = _read_json(manifest).get('phases', {}) if manifest.exists() else {}
    wall_seconds = float(sum(float(p.get('seconds', 0.0)) for p in phases.values()))
  generations = []
  for g, path in _generations(exp):
    models = {}
    for summary in sorted((path / 'eval').glob('*/summary.json')):
      s = _read_json(summary)
      models[summary.parent.name] = {k: s[k] for k in ('final', 'answer_generation') if k in s}
    if models:
      generations.append({'gen': g, 'models': models})
  return {'world_seed': world_seed, 'wall_seconds': wall_seconds, 'generations': generations}


def _cell(stat: dict[str, Any] | None) -> str:
  if not stat or stat.get('mean') is None or not math.isfinite(stat['mean']):
    return 'N/A'
  return f'{stat["mean"]:.1f} ± {stat["std"]:.1f}'


def table_rows(summary: dict[str, Any], kind: str = 'final') -> tuple[list[str], list[list[str]]]:
  """(sizes, rows): one row per generation, `mean ± std` per size (Table 1's shape)."""
  sizes = sorted({s for g in summary['generations'] for s in g['models']})
  rows = [[f'gen {g["gen"]}'] + [_cell(g['models'].get(s, {}).get(kind)) for s in sizes]
          for g in summary['generations']]
  return sizes, rows


def _markdown(sizes: list[str], rows: list[list[str]]) -> str:
  head = '| generation | ' + ' | '.join(sizes) + ' |\n|---|' + '---|' * len(sizes) + '\n'
  return head + ''.join('| ' + ' | '.join(r) + ' |\n' for r in rows)


def _rankings_and_trajectories(path: pathlib.Path):
  ranked = [r for f in sorted((path / 'ranked').glob('*.jsonl')) for r in load_jsonl(f)]
  trajs = [t for f in sorted((path / 'trajectories').glob('*.jsonl')) for t in load_jsonl(f)]
  return ranked, trajs


def _step_stats(ranked: list[dict[str, Any]], trajs: list[dict[str, Any]]):
  """Examples per step type and ranker-vs-rollout agreement per step type."""
  chosen = {(t['question_id'], t.get('repeat', 0), i): s.get('chosen')
            for t in trajs for i, s in enumerate(t.get('steps') or [])}
  counts: collections.Counter[str] = collections.Counter()
  agree: dict[str, list[bool]] = collections.defaultdict(list)
  for r in ranked:
    counts[r.get('step_type', '?')] += 1
    c = chosen.get((r['question_id'], r.get('repeat', 0), r['step_index']))
    if c is not None and r.get('order'):
      agree[r.get('step_type', '?')].append(r['order'][0] == c)
  return counts, {k: sum(v) / len(v) for k, v in agree.items() if v}


def _plots(summary, per_gen_stats, plot_dir: pathlib.Path) -> list[str]:
  import matplotlib
  matplotlib.use('Agg')
  import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

  names = []
  sizes = sorted({s for g in summary['generations'] for s in g['models']})
  if sizes:
    fig, ax = plt.subplots(figsize=(5, 3.5))
    for size in sizes:
      pts = [(g['gen'], g['models'][size]['final']) for g in summary['generations']
             if size in g['models'] and 'final' in g['models'][size]]
      if pts:
        ax.errorbar([p[0] for p in pts], [p[1]['mean'] for p in pts],
                    yerr=[p[1]['std'] for p in pts], marker='o', capsize=3, label=size)
    ax.set_xlabel('generation')
    ax.set_ylabel('auto-eval accuracy (%)')
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_dir / 'accuracy.png', dpi=90)
    plt.close(fig)
    names.append('accuracy.png')
  for key, fname, ylabel in (('counts', 'examples_per_step.png', 'ranked examples'),
                             ('agreement', 'ranker_agreement.png', 'ranker pick == rollout pick')):
    gens = [(g, st[key]) for g, st in per_gen_stats if st[key]]
    if not gens:
      continue
    fig, ax = plt.subplots(figsize=(6, 3.5))
    width = 0.8 / len(gens)
    for j, (g, values) in enumerate(gens):
      ax.bar([i + j * width for i in range(len(STEP_TYPES))],
             [values.get(s, 0) for s in STEP_TYPES], width, label=f'gen {g}')
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(STEP_TYPES))], STEP_TYPES)
    ax.set_ylabel(ylabel)
    ax.legend()
    fig.tight_layout()
    fig.savefig(plot_dir / fname, dpi=90)
    plt.close(fig)
    names.append(fname)
  return names


def _e(x: Any) -> str:
  return html.escape(str(x))


def _trajectory_html(t: dict[str, Any], rankings: dict[tuple, dict[str, Any]],
                     verdicts: dict[tuple, dict[str, Any]]) -> str:
  key = (t.get('question_id'), t.get('repeat', 0))
  v = verdicts.get(key)
  verdict = '' if v is None else (f' — verdict: final {"✔" if v.get("correct_final") else "✘"}, '
                                  f'draft {"✔" if v.get("correct_answer_generation") else "✘"}')
  out = [f'<details class="traj"><summary><b>{_e(t.get("question_id"))}</b> #{_e(t.get("repeat", 0))}: '
         f'{_e(t.get("question", ""))} <i>[{_e(t.get("status"))}]</i>{_e(verdict)}</summary>',
         f'<p>Draft answer: {_e(t.get("answer_generation"))}<br>Final answer: {_e(t.get("final_answer"))}</p>']
  for i, s in enumerate(t.get('steps') or []):
    rk = rankings.get((*key, i))
    pick = rk['order'][0] if rk and rk.get('order') else None
    prompt = str(s.get('prompt', ''))[int(s.get('prefix_len') or 0):]
    out.append(f'<div class="step"><h4>step {i}: {_e(s.get("step_type"))}</h4>'
               f'<details><summary>prompt (state part)</summary><pre>{_e(prompt)}</pre></details>'
               '<table><tr><th>#</th><th>ppl</th><th>parsed</th><th>chosen</th><th>ranker</th><th>text</th></tr>')
    for j, c in enumerate(s.get('candidates') or []):
      ppl = c.get('perplexity')
      ppl_s = f'{ppl:.3f}' if isinstance(ppl, (int, float)) and math.isfinite(ppl) else '–'
      ok = (c.get('parse') or {}).get('ok')
      out.append(f'<tr><td>{j + 1}</td><td>{ppl_s}</td><td>{"yes" if ok else "no"}</td>'
                 f'<td>{"●" if s.get("chosen") == j else ""}</td><td>{"★" if pick == j else ""}</td>'
                 f'<td><pre>{_e(c.get("text", ""))}</pre></td></tr>')
    out.append('</table>')
    if rk:
      out.append(f'<p class="rk">ranker {_e(rk.get("ranker"))} ({_e(rk.get("status", "ok"))}'
                 f'{", ORACLE" if rk.get("oracle") else ""}): <pre>{_e(rk.get("explanation", ""))}</pre></p>')
    chosen = s.get('chosen')
    cands = s.get('candidates') or []
    if isinstance(chosen, int) and 0 <= chosen < len(cands):
      cites = cited_ids(cands[chosen].get('text', ''))
      if cites:
        out.append(f'<p>citations: {", ".join(f"[link_id={c}]" for c in cites)}</p>')
    tool = s.get('tool')
    if tool:
      items = ''.join(f'<li>[{_e(r.get("link_id"))}] <b>{_e(r.get("link_text"))}</b>: {_e(r.get("snippet"))}</li>'
                      for r in tool.get('results') or [])
      out.append(f'<p>search: <code>{_e(tool.get("query"))}</code></p><ul>{items}</ul>')
    out.append('</div>')
  out.append('</details>')
  return '\n'.join(out)


_CSS = ('body{font-family:sans-serif;max-width:1100px;margin:auto}table{border-collapse:collapse}'
        'td,th{border:1px solid #ccc;padding:3px 6px;vertical-align:top}pre{white-space:pre-wrap;margin:0}'
        '.step{margin-left:1em;border-left:3px solid #ddd;padding-left:.5em}img{max-width:100%}')


def build_report(exp_dir: str | pathlib.Path, *, world_seed: int | None = None,
                 wall_seconds: float | None = None, max_trajectories: int = 20) -> pathlib.Path:
  """Writes `EXP_DIR/report/` and returns the path of its `index.html`.

  Args:
    exp_dir: EXP_DIR.
    world_seed: overrides the seed read from `world/world.json`.
    wall_seconds: overrides the manifest's summed phase times.
    max_trajectories: how many trajectories the viewer shows (latest generation
      that has any).

  Returns:
    The path of `report/index.html`.
  """
  exp = pathlib.Path(exp_dir)
  summary = collect_summary(exp, world_seed, wall_seconds)
  per_gen, viewer = [], []
  for g, path in _generations(exp):
    ranked, trajs = _rankings_and_trajectories(path)
    counts, agreement = _step_stats(ranked, trajs)
    per_gen.append((g, {'counts': dict(counts), 'agreement': agreement}))
    if trajs:
      rankings = {(r['question_id'], r.get('repeat', 0), r['step_index']): r for r in ranked}
      verdicts = {(r['question_id'], r['run']): r
                  for f in sorted((path / 'eval').glob('*/results.jsonl')) for r in load_jsonl(f)}
      viewer = [(g, _trajectory_html(t, rankings, verdicts)) for t in trajs[:max_trajectories]]

  tmp = pathlib.Path(tempfile.mkdtemp(dir=exp, prefix='.report.'))
  try:
    (tmp / 'plots').mkdir()
    plots = _plots(summary, per_gen, tmp / 'plots')
    sizes, rows = table_rows(summary, 'final')
    _, draft_rows = table_rows(summary, 'answer_generation')
    (tmp / 'table.md').write_text(_markdown(sizes, rows))
    (tmp / 'summary.json').write_text(json.dumps(summary, indent=2, sort_keys=True) + '\n')

    def html_table(rs):
      head = ''.join(f'<th>{_e(s)}</th>' for s in sizes)
      body = ''.join('<tr>' + ''.join(f'<td>{_e(c)}</td>' for c in r) + '</tr>' for r in rs)
      return f'<table><tr><th>generation</th>{head}</tr>{body}</table>'

    stats_rows = ''.join(
        f'<tr><td>gen {g}</td>' + ''.join(
            f'<td>{st["counts"].get(s, 0)} / {st["agreement"][s]:.0%}</td>' if s in st['agreement']
            else f'<td>{st["counts"].get(s, 0)} / –</td>' for s in STEP_TYPES) + '</tr>'
        for g, st in per_gen)
    page = [
        f'<!doctype html><html><head><meta charset="utf-8"><title>restreact-jax report</title>'
        f'<style>{_CSS}</style></head><body>',
        '<h1>restreact-jax experiment report</h1>',
        f'<p>world seed {_e(summary["world_seed"])}; wall time {summary["wall_seconds"]:.0f} s</p>',
        '<h2>Auto-eval accuracy, final answer (%, mean ± std over runs)</h2>', html_table(rows),
        '<h2>Before the self-checks (answer generation)</h2>', html_table(draft_rows),
        '<h2>Ranked examples per step type / ranker agrees with rollout pick</h2>',
        '<table><tr><th>generation</th>' + ''.join(f'<th>{s}</th>' for s in STEP_TYPES) + '</tr>'
        + stats_rows + '</table>',
        *[f'<h3>{_e(p)}</h3><img src="plots/{_e(p)}" alt="{_e(p)}">' for p in plots],
        '<h2>Trajectories</h2>', *[f'<h3>gen {g}</h3>{h}' if i == 0 else h
                                   for i, (g, h) in enumerate(viewer)],
        '</body></html>']
    (tmp / 'index.html').write_text('\n'.join(page))
    target = exp / 'report'
    if target.exists():
      old = exp / f'.report.old.{tmp.name[-8:]}'
      target.rename(old)
      tmp.rename(target)
      shutil.rmtree(old, ignore_errors=True)
    else:
      tmp.rename(target)
  except BaseException:
    shutil.rmtree(tmp, ignore_errors=True)
    raise
  return target / 'index.html'
