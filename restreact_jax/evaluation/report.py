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

Writes `report/{index.html, table.md, summary.json, plots/*.png}` (and
`test.md` / `heldout.md` when `test/eval/*/summary.json` /
`heldout/eval/*/summary.json` exist) into a
temporary directory renamed into place at the end. `summary.json` is
`{"world_seed", "wall_seconds", "split", "generations": [{"gen", "models":
{size: {"final", "answer_generation"}}}]}`, on the test split
(`test/eval/gen_<g>_<size>/`) when the loop evaluated there, else on dev
(`gen_<g>/eval/<size>/`; `split` says which), plus `"heldout":
{"generations": [...]}` of the same shape when the loop also judged the
held-out training questions (`rest.heldout_eval`). The test and held-out
tables carry auto-eval's funnel when the evals have one (`funnel.py`: how
often the answer was in the search results, in the kept summaries, and the
answer step's accuracy given it was). All model text is HTML-escaped.

The page reads top to bottom: the headline results table (cells in
`RESULTS_BG` under a dark header, rows `RESULTS_ROW_GAP_PX` apart, the best
generation per size in bold), the test-split and held-out tables when the
loop has run them,
the draft-answer and ranker tables side by side, the plots in a grid, then
the trajectories (the first one unfolded, each step a collapsed `<details>`
whose summary shows the chosen action). It is self-contained: inline CSS,
images by relative path, no scripts, nothing fetched from the network.
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
from typing import Any, Iterable, Mapping

from restreact_jax import errors
from restreact_jax.evaluation.autoeval import load_jsonl
from restreact_jax.feedback.text_overlap import cited_ids

_GEN_RE = re.compile(r'^gen_(\d+)$')
_TEST_EVAL_RE = re.compile(r'^gen_(\d+)_(.+)$')
STEP_TYPES = ('decision', 'summarize', 'answer', 'relevance', 'grounding')


def _read_json(path: pathlib.Path) -> Any:
  try:
    return json.loads(path.read_text())
  except (OSError, json.JSONDecodeError) as e:
    raise errors.UserError(f'report: cannot read {path}: {e}') from e


def _generations(exp: pathlib.Path) -> list[tuple[int, pathlib.Path]]:
  gens = [(int(m.group(1)), p) for p in exp.iterdir() if p.is_dir() and (m := _GEN_RE.match(p.name))]
  return sorted(gens)


def busy_seconds(phases: Iterable[Mapping[str, Any]]) -> float:
  """Seconds during which some phase ran: the union of their time intervals.

  Phases that ran at the same time (the test models on threads) count once,
  and the gaps of a loop resumed later do not count. A phase recorded
  without `finished_at` adds its `seconds`.
  """
  intervals, loose = [], 0.0
  for p in phases:
    seconds = float(p.get('seconds', 0.0))
    if 'finished_at' in p:
      end = float(p['finished_at'])
      intervals.append((end - seconds, end))
    else:
      loose += seconds
  total, reach = 0.0, float('-inf')
  for start, end in sorted(intervals):
    if end > reach:
      total += end - max(start, reach)
      reach = end
  return total + loose


def collect_summary(exp_dir: str | pathlib.Path, world_seed: int | None = None,
                    wall_seconds: float | None = None) -> dict[str, Any]:
  """The report's `summary.json` content, read from the experiment directory.

  Args:
    exp_dir: EXP_DIR.
    world_seed: overrides `world/world.json`'s seed.
    wall_seconds: overrides the manifest's busy time (`busy_seconds`).

  Returns:
    `{"world_seed", "wall_seconds", "split", "generations": [...]}`.
  """
  exp = pathlib.Path(exp_dir)
  if not exp.is_dir():
    raise errors.UserError(f'report: experiment directory {exp} does not exist')
  if world_seed is None:
    world_json = exp / 'world' / 'world.json'
    meta = _read_json(world_json) if world_json.exists() else {}
    config = meta.get('config') if isinstance(meta.get('config'), dict) else {}
    world_seed = int(meta.get('world_seed', meta.get('seed', config.get('seed', -1))))
  if wall_seconds is None:
    manifest = exp / 'manifest.json'
    phases = _read_json(manifest).get('phases', {}) if manifest.exists() else {}
    wall_seconds = busy_seconds(phases.values())
  # The test split (`test/eval/gen_<g>_<size>/`) when the loop has run it there.
  by_gen = _split_by_gen(exp, 'test')
  split = 'test'
  if not by_gen:  # otherwise the dev evaluations of `gen_<g>/eval/<size>/`
    split = 'dev'
    for g, path in _generations(exp):
      for summary in sorted((path / 'eval').glob('*/summary.json')):
        by_gen.setdefault(g, {})[summary.parent.name] = _kept(_read_json(summary))
  out = {'world_seed': world_seed, 'wall_seconds': wall_seconds, 'split': split,
         'generations': _listed(by_gen)}
  if heldout := _split_by_gen(exp, 'heldout'):
    out['heldout'] = {'generations': _listed(heldout)}
  return out


def _kept(summary: dict[str, Any]) -> dict[str, Any]:
  return {k: summary[k] for k in ('final', 'answer_generation') if k in summary}


def _split_by_gen(exp: pathlib.Path, split: str) -> dict[int, dict[str, Any]]:
  """generation -> size -> stats of `<split>/eval/gen_<g>_<size>/summary.json`."""
  by_gen: dict[int, dict[str, Any]] = {}
  for summary in sorted((exp / split / 'eval').glob('*/summary.json')):
    if m := _TEST_EVAL_RE.match(summary.parent.name):
      by_gen.setdefault(int(m.group(1)), {})[m.group(2)] = _kept(_read_json(summary))
  return by_gen


def _listed(by_gen: dict[int, dict[str, Any]]) -> list[dict[str, Any]]:
  return [{'gen': g, 'models': models} for g, models in sorted(by_gen.items()) if models]


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
  gens_evaluated = [g['gen'] for g in summary['generations']]
  # One figure size and resolution for all plots so the page's grid lines up.
  figsize, dpi = (5.2, 3.4), 100
  if sizes:
    fig, ax = plt.subplots(figsize=figsize)
    for size in sizes:
      pts = [(g['gen'], g['models'][size]['final']) for g in summary['generations']
             if size in g['models'] and 'final' in g['models'][size]]
      if pts:
        ax.errorbar([p[0] for p in pts], [p[1]['mean'] for p in pts],
                    yerr=[p[1]['std'] for p in pts], marker='o', capsize=3, label=size)
    # Generations are integers; matplotlib would otherwise put ticks at 0.2 steps.
    ax.set_xticks(gens_evaluated)
    ax.set_xlim(min(gens_evaluated) - 0.3, max(gens_evaluated) + 0.3)
    ax.set_xlabel('generation')
    ax.set_ylabel('auto-eval accuracy (%)')
    ax.grid(alpha=0.3)
    ax.legend(title='size', fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_dir / 'accuracy.png', dpi=dpi)
    plt.close(fig)
    names.append('accuracy.png')
  for key, fname, ylabel in (('counts', 'examples_per_step.png', 'ranked examples'),
                             ('agreement', 'ranker_agreement.png', 'share of steps')):
    gens = [(g, st[key]) for g, st in per_gen_stats if st[key]]
    if not gens:
      continue
    fig, ax = plt.subplots(figsize=figsize)
    width = 0.8 / len(gens)
    for j, (g, values) in enumerate(gens):
      bars = ax.bar([i + j * width for i in range(len(STEP_TYPES))],
                    [values.get(s, 0) for s in STEP_TYPES], width, label=f'gen {g}')
      # Values on the bars: a 0% agreement is otherwise indistinguishable from no data.
      labels = [(f'{values[s]:.0%}' if key == 'agreement' else f'{values[s]:g}')
                if s in values else '' for s in STEP_TYPES]
      ax.bar_label(bars, labels=labels, fontsize=7, padding=1)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(STEP_TYPES))], STEP_TYPES, fontsize=8)
    if key == 'agreement':
      ax.set_ylim(0, 1.12)
    else:
      ax.margins(y=0.12)
      ax.yaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(axis='y', alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(plot_dir / fname, dpi=dpi)
    plt.close(fig)
    names.append(fname)
  return names


def _e(x: Any) -> str:
  return html.escape(str(x))


def _short(text: Any, limit: int = 84) -> str:
  """One line of model text for a collapsed summary (escaped by the caller)."""
  flat = ' '.join(str(text).split())
  return flat if len(flat) <= limit else flat[:limit - 1] + '…'


def _mark(ok: Any) -> str:
  return '<span class="ok">✔</span>' if ok else '<span class="bad">✘</span>'


def _trajectory_html(t: dict[str, Any], rankings: dict[tuple, dict[str, Any]],
                     verdicts: dict[tuple, dict[str, Any]], *, open_: bool = False) -> str:
  """One collapsible trajectory whose steps are collapsible too."""
  key = (t.get('question_id'), t.get('repeat', 0))
  v = verdicts.get(key)
  verdict = '' if v is None else (f'<span class="verdict">final {_mark(v.get("correct_final"))} '
                                  f'draft {_mark(v.get("correct_answer_generation"))}</span>')
  status = str(t.get('status'))
  out = [f'<details class="traj"{" open" if open_ else ""}><summary>'
         f'<span class="badge {"done" if status == "done" else "fail"}">{_e(status)}</span> '
         f'<b>{_e(t.get("question_id"))}</b> #{_e(t.get("repeat", 0))} '
         f'{_e(t.get("question", ""))}{verdict}</summary>',
         '<dl class="answers">'
         f'<dt>draft answer</dt><dd>{_e(t.get("answer_generation"))}</dd>'
         f'<dt>final answer</dt><dd>{_e(t.get("final_answer"))}</dd></dl>']
  for i, s in enumerate(t.get('steps') or []):
    rk = rankings.get((*key, i))
    pick = rk['order'][0] if rk and rk.get('order') else None
    cands = s.get('candidates') or []
    chosen = s.get('chosen')
    chosen_text = (cands[chosen].get('text', '')
                   if isinstance(chosen, int) and 0 <= chosen < len(cands) else '')
    prompt = str(s.get('prompt', ''))[int(s.get('prefix_len') or 0):]
    out.append(f'<details class="step"><summary><span class="stype">{_e(s.get("step_type"))}</span> '
               f'step {i} · {len(cands)} candidate{"" if len(cands) == 1 else "s"} · '
               f'<code>{_e(_short(chosen_text))}</code>'
               '</summary>'
               f'<details class="prompt"><summary>prompt (state part)</summary>'
               f'<pre>{_e(prompt)}</pre></details>'
               '<table class="cands"><tr><th>#</th><th>ppl</th><th>parsed</th><th>chosen</th>'
               '<th>ranker</th><th>text</th></tr>')
    for j, c in enumerate(cands):
      ppl = c.get('perplexity')
      ppl_s = f'{ppl:.3f}' if isinstance(ppl, (int, float)) and math.isfinite(ppl) else '–'
      if c.get('finish_reason') == 'revision':
        ppl_s = 'revision'  # the rater's restatement (feedback/revision.py), not a sample
      ok = (c.get('parse') or {}).get('ok')
      cls = ' class="picked"' if chosen == j else ''
      out.append(f'<tr{cls}><td>{j + 1}</td><td>{ppl_s}</td><td>{"yes" if ok else "no"}</td>'
                 f'<td>{"●" if chosen == j else ""}</td><td>{"★" if pick == j else ""}</td>'
                 f'<td><pre>{_e(c.get("text", ""))}</pre></td></tr>')
    out.append('</table>')
    if rk:
      out.append(f'<div class="rk">ranker {_e(rk.get("ranker"))} ({_e(rk.get("status", "ok"))}'
                 f'{", ORACLE" if rk.get("oracle") else ""}):<pre>{_e(rk.get("explanation", ""))}'
                 '</pre></div>')
    cites = cited_ids(chosen_text) if chosen_text else []
    if cites:
      out.append(f'<p>citations: {", ".join(f"[link_id={c}]" for c in cites)}</p>')
    tool = s.get('tool')
    if tool:
      items = ''.join(f'<li>[{_e(r.get("link_id"))}] <b>{_e(r.get("link_text"))}</b>: {_e(r.get("snippet"))}</li>'
                      for r in tool.get('results') or [])
      out.append(f'<p>search: <code>{_e(tool.get("query"))}</code></p><ul>{items}</ul>')
    out.append('</details>')
  out.append('</details>')
  return '\n'.join(out)


# The results table's cell colour. A real style choice (a calm blue that marks
# the page's headline numbers) and also what the browser test looks for in a
# screenshot, so keep no other element of the page this exact colour.
RESULTS_BG = '#d6e6f5'
RESULTS_HEAD_BG = '#1f4e79'
# Vertical gap between the results table's rows (page background shows through).
RESULTS_ROW_GAP_PX = 3

_CSS = f"""
body{{font-family:"DejaVu Sans",system-ui,sans-serif;font-size:15px;line-height:1.45;color:#1d2733;
  background:#fff;max-width:1120px;margin:0 auto;padding:20px 28px}}
h1{{font-size:26px;margin:0 0 4px}}
h2{{font-size:19px;margin:30px 0 10px;padding-bottom:4px;border-bottom:1px solid #dde3ea}}
.meta{{color:#5b6875;margin:0 0 12px}}
.note{{color:#5b6875;font-size:13px;margin:6px 0 0}}
pre{{white-space:pre-wrap;word-break:break-word;margin:0;font-size:13px}}
code{{font-size:13px;background:#f3f5f7;padding:0 3px;border-radius:3px}}
table.results{{border-collapse:separate;border-spacing:0 {RESULTS_ROW_GAP_PX}px;
  font-variant-numeric:tabular-nums;font-size:16px}}
table.results th{{background:{RESULTS_HEAD_BG};color:#fff;padding:8px 22px;text-align:right}}
table.results td{{background:{RESULTS_BG};padding:9px 22px;text-align:right}}
table.results th:first-child,table.results td:first-child{{text-align:left}}
table.results td.best{{font-weight:bold}}
table.plain{{border-collapse:collapse;font-variant-numeric:tabular-nums;font-size:14px}}
table.plain th,table.plain td{{border:1px solid #d5dbe1;padding:4px 12px;text-align:right}}
table.plain th{{background:#f3f5f7}}
table.plain th:first-child,table.plain td:first-child{{text-align:left}}
.cols{{display:flex;flex-wrap:wrap;gap:14px 40px;align-items:flex-start}}
.cols h3{{font-size:15px;margin:0 0 6px;font-weight:normal;color:#3a4753}}
.plots{{display:grid;grid-template-columns:repeat(auto-fill,minmax(440px,1fr));gap:16px}}
figure{{margin:0;border:1px solid #e3e8ed;border-radius:6px;padding:8px}}
figure img{{width:100%;height:auto;display:block}}
figcaption{{font-size:13px;color:#3a4753;margin-bottom:4px}}
details.traj{{border:1px solid #d5dbe1;border-radius:6px;margin:8px 0;padding:6px 10px}}
details.traj>summary{{cursor:pointer;font-size:15px}}
details.step{{margin:6px 0 6px 12px;border-left:3px solid #c9d3dd;padding:2px 0 2px 10px}}
details.step>summary{{cursor:pointer}}
details.prompt{{margin:6px 0}}
details.prompt pre{{background:#f7f8fa;padding:6px;max-height:360px;overflow:auto}}
.stype{{display:inline-block;min-width:78px;font-weight:bold;color:#1f4e79}}
.badge{{font-size:12px;border-radius:3px;padding:1px 6px;color:#fff}}
.badge.done{{background:#3b7d3b}} .badge.fail{{background:#a33}}
.verdict{{margin-left:10px;font-size:13px;color:#3a4753}}
.ok{{color:#2e7d32}} .bad{{color:#c62828}}
dl.answers{{display:grid;grid-template-columns:max-content 1fr;gap:2px 12px;margin:8px 0}}
dl.answers dt{{color:#5b6875}} dl.answers dd{{margin:0}}
table.cands{{border-collapse:collapse;margin:6px 0;width:100%;font-size:13px}}
table.cands th,table.cands td{{border:1px solid #e0e5ea;padding:3px 6px;vertical-align:top;text-align:left}}
table.cands tr.picked td{{background:#fdf6dc}}
.rk pre{{background:#f7f8fa;padding:6px;margin-top:2px}}
"""

_PLOT_TITLES = {
    'accuracy.png': 'Auto-eval accuracy by generation',
    'examples_per_step.png': 'Ranked examples per step type',
    'ranker_agreement.png': "Ranker's pick equals the rollout's pick",
}


def _wall(seconds: float) -> str:
  if seconds < 120:
    return f'{seconds:.0f} s'
  minutes = seconds / 60
  return f'{minutes:.0f} min' if minutes < 120 else f'{minutes / 60:.1f} h'


def _results_table(sizes: list[str], rows: list[list[str]], css: str) -> str:
  """An HTML table of `table_rows` output; in `results` the best cell per size is bold."""
  best: dict[int, float] = {}
  for r in rows:
    for j, c in enumerate(r[1:], 1):
      m = re.match(r'-?[\d.]+', c)
      if m:
        best[j] = max(best.get(j, -math.inf), float(m.group()))
  head = ''.join(f'<th>{_e(s)}</th>' for s in sizes)
  body = []
  for r in rows:
    cells = [f'<td>{_e(r[0])}</td>']
    for j, c in enumerate(r[1:], 1):
      m = re.match(r'-?[\d.]+', c)
      is_best = css == 'results' and m and len(rows) > 1 and float(m.group()) == best[j]
      cells.append(f'<td class="best">{_e(c)}</td>' if is_best else f'<td>{_e(c)}</td>')
    body.append('<tr>' + ''.join(cells) + '</tr>')
  return f'<table class="{css}"><tr><th>generation</th>{head}</tr>{"".join(body)}</table>'


SPLIT_TITLES = {
    'test': 'Test split, final models',
    'heldout': 'Held-out training questions (no rollout saw them), final models',
}


FUNNEL_COLUMNS = {'in_results': 'answer in results', 'in_summaries': 'in summaries',
                  'answer_given_summaries': 'answered, given summaries'}


def split_tables(exp: pathlib.Path, split: str) -> tuple[str, str]:
  """(html, markdown) of a split's eval of the final models; empty when not run.

  `split` is 'test' or 'heldout' (`<split>/eval/<model>/summary.json`). The
  markdown is `report/<split>.md`, which the loop prints at its end.
  """
  html_rows, md_rows = [], []
  evals = [(p.parent.name, _read_json(p))
           for p in sorted((exp / split / 'eval').glob('*/summary.json'))]
  funnel = [c for c in FUNNEL_COLUMNS if any('funnel' in s for _, s in evals)]
  for name, s in evals:
    stages = s.get('funnel') or {}
    cells = [_cell(s.get('final')), _cell(s.get('answer_generation'))]
    cells += [_cell(stages.get(field)) for field in funnel]
    html_rows.append(f'<tr><td>{_e(name)}</td>'
                     + ''.join(f'<td>{_e(c)}</td>' for c in cells) + '</tr>')
    md_rows.append(f'| {name} | ' + ' | '.join(cells) + ' |\n')
  if not html_rows:
    return '', ''
  head = ['final', 'answer generation', *(FUNNEL_COLUMNS[c] for c in funnel)]
  note = ('<p class="note">Where answers are lost (auto-eval\'s funnel): the reference answer '
          'appears in a search result the agent saw, in a summary it kept, and the answer '
          'generation\'s accuracy on the runs whose summaries held it.</p>' if funnel else '')
  return ((f'<h2>{_e(SPLIT_TITLES[split])} (%, mean ± std over runs)</h2><table class="plain">'
           '<tr><th>model</th>' + ''.join(f'<th>{_e(h)}</th>' for h in head) + '</tr>'
           + ''.join(html_rows) + '</table>' + note),
          '| model | ' + ' | '.join(head) + ' |\n|---' + '|---' * len(head) + '|\n'
          + ''.join(md_rows))


def render_page(summary: dict[str, Any], per_gen: list[tuple[int, dict[str, Any]]],
                plots: list[str], viewer: list[tuple[int, str]], test_html: str = '') -> str:
  """The report page: the results table first, then plots, then trajectories.

  Args:
    summary: `collect_summary` output.
    per_gen: `(generation, {"counts", "agreement"})` per generation.
    plots: file names under `plots/`.
    viewer: `(generation, trajectory html)` pairs.
    test_html: the test-split and held-out tables (may be empty).

  Returns:
    A self-contained HTML page (inline CSS, relative image links, no scripts).
  """
  sizes, rows = table_rows(summary, 'final')
  _, draft_rows = table_rows(summary, 'answer_generation')
  stats_rows = ''.join(
      f'<tr><td>gen {g}</td>' + ''.join(
          f'<td>{st["counts"].get(s, 0)} / {st["agreement"][s]:.0%}</td>' if s in st['agreement']
          else f'<td>{st["counts"].get(s, 0)} / –</td>' for s in STEP_TYPES) + '</tr>'
      for g, st in per_gen)
  n_runs = sorted({str(st['final'].get('n_runs')) for g in summary['generations']
                   for st in g['models'].values() if isinstance(st.get('final'), dict)
                   and st['final'].get('n_runs') is not None})
  runs_txt = f'{"/".join(n_runs)} runs' if n_runs else 'runs'
  if rows:
    results = _results_table(sizes, rows, 'results')
  else:
    results = '<p class="note">No evaluation summaries yet (gen_&lt;g&gt;/eval/&lt;size&gt;/summary.json).</p>'
  page = [
      '<!doctype html><html lang="en"><head><meta charset="utf-8">'
      '<meta name="viewport" content="width=device-width, initial-scale=1">'
      f'<title>restreact-jax report</title><style>{_CSS}</style></head><body>',
      '<h1>restreact-jax experiment report</h1>',
      f'<p class="meta">world seed {_e(summary["world_seed"])} · wall time '
      f'{_e(_wall(summary["wall_seconds"]))} · {len(summary["generations"])} evaluated generations</p>',
      f'<h2>Auto-eval accuracy of the final answer (%, mean ± std over {_e(runs_txt)})</h2>',
      results,
      '<p class="note">Rows: generation (gen 0 is the seed policy); columns: model size. '
      'Bold: the best generation per size.</p>',
      test_html,
  ]
  # The secondary tables sit side by side under the headline one.
  side = []
  if draft_rows:
    side.append('<div><h2>Before the self-checks (answer generation)</h2>'
                + _results_table(sizes, draft_rows, 'plain') + '</div>')
  if per_gen:
    side.append('<div><h2>Ranked examples / ranker agrees with rollout</h2>'
                '<table class="plain"><tr><th>generation</th>'
                + ''.join(f'<th>{s}</th>' for s in STEP_TYPES) + '</tr>' + stats_rows
                + '</table></div>')
  if side:
    page += ['<div class="cols">', *side, '</div>']
  if plots:
    page.append('<h2>Plots</h2><div class="plots">')
    page += [f'<figure><figcaption>{_e(_PLOT_TITLES.get(p, p))}</figcaption>'
             f'<img src="plots/{_e(p)}" alt="{_e(_PLOT_TITLES.get(p, p))}"></figure>' for p in plots]
    page.append('</div>')
  if viewer:
    page.append(f'<h2>Trajectories (gen {viewer[0][0]}, {len(viewer)} shown)</h2>'
                '<p class="note">Click a trajectory, then a step, to unfold it. ● the rollout\'s '
                'choice (lowest perplexity), ★ the ranker\'s pick.</p>')
    page += [h for _, h in viewer]
  page.append('</body></html>')
  return '\n'.join(p for p in page if p)


def build_report(exp_dir: str | pathlib.Path, *, world_seed: int | None = None,
                 wall_seconds: float | None = None, max_trajectories: int = 20) -> pathlib.Path:
  """Writes `EXP_DIR/report/` and returns the path of its `index.html`.

  Args:
    exp_dir: EXP_DIR.
    world_seed: overrides the seed read from `world/world.json`.
    wall_seconds: overrides the manifest's busy time (`busy_seconds`).
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
      viewer = [(g, _trajectory_html(t, rankings, verdicts, open_=i == 0))
                for i, t in enumerate(trajs[:max_trajectories])]

  tmp = pathlib.Path(tempfile.mkdtemp(dir=exp, prefix='.report.'))
  try:
    (tmp / 'plots').mkdir()
    plots = _plots(summary, per_gen, tmp / 'plots')
    sizes, rows = table_rows(summary, 'final')
    (tmp / 'table.md').write_text(_markdown(sizes, rows))
    (tmp / 'summary.json').write_text(json.dumps(summary, indent=2, sort_keys=True) + '\n')
    split_html = []
    for split in SPLIT_TITLES:
      split_html_part, split_md = split_tables(exp, split)
      if split_md:
        (tmp / f'{split}.md').write_text(split_md)
        split_html.append(split_html_part)
    (tmp / 'index.html').write_text(
        render_page(summary, per_gen, plots, viewer, '\n'.join(split_html)))
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
