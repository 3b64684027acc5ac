"""Auto-eval: judge R runs of trajectories per question, report mean ± std.

The paper's protocol (PAPER_NOTES §5): 10 trajectories per evaluation question
(10 runs), accuracy per run, reported as mean ± std over the runs, both for the
answer-generation output and for the final answer after the self-checks (the
Table 4 self-critique ablation). Run r is the set of trajectories with
`repeat == r`. A question without a trajectory in a run, or with a failed one
(no answer), counts as wrong.

Accuracies are percentages (0-100) as in the paper's tables; `std` is the
sample standard deviation over runs (ddof=1; 0.0 for a single run).

`summary.json`:
  {"final": {"mean", "std", "n_runs"}, "answer_generation": {...},
   "by_qtype": {qtype: {"final": ..., "answer_generation": ..., "n_questions"}},
   "by_hops": {"2": {...}}, "n_questions", "judge": {...}, "missing", ...}
`results.jsonl`: one row per (run, question) with both answers and verdicts.

With the verdicts comes the funnel (`funnel.py`): per row whether the search
results and the kept summaries mention a reference answer, and in
`summary.json` `"funnel": {"in_results", "in_summaries",
"answer_given_summaries"}` (each mean ± std over runs, percent of the
applicable rows; the last is answer-generation accuracy on the rows whose
summaries held the answer).
"""

from __future__ import annotations

import collections
import dataclasses
import json
import math
import os
import pathlib
import tempfile
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import tqdm

from restreact_jax import errors
from restreact_jax.evaluation import funnel
from restreact_jax.evaluation import judge as judge_lib

KINDS = ('final', 'answer_generation')
_ANSWER_FIELD = {'final': 'final_answer', 'answer_generation': 'answer_generation'}


@dataclasses.dataclass
class EvalResult:
  summary: dict[str, Any]
  rows: list[dict[str, Any]]


def mean_std(values: Sequence[float]) -> dict[str, float | int]:
  """`{"mean", "std", "n_runs"}` of per-run accuracies (sample std, ddof=1).

  Args:
    values: one accuracy per run.

  Returns:
    The summary dict; NaN mean for no runs, std 0.0 for one run.
  """
  arr = np.asarray(values, dtype=np.float64)
  if arr.size == 0:
    return {'mean': math.nan, 'std': math.nan, 'n_runs': 0}
  std = float(arr.std(ddof=1)) if arr.size > 1 else 0.0
  return {'mean': float(arr.mean()), 'std': std, 'n_runs': int(arr.size)}


def _question_id(q: Mapping[str, Any], where: str) -> str:
  qid = q.get('question_id', q.get('id'))
  if qid is None:
    raise errors.UserError(f'{where}: question has no "id" or "question_id"')
  return str(qid)


def index_questions(questions: Iterable[Mapping[str, Any]], where: str = 'questions') -> dict[str, dict[str, Any]]:
  """`{question_id: question}` with `answers` checked.

  Args:
    questions: dicts with `id` (or `question_id`), `question`, `answers`
      (canonical first) or `answer`, optional `qtype`, `num_hops`.
    where: names the source in errors.

  Returns:
    The index.
  """
  out: dict[str, dict[str, Any]] = {}
  for n, q in enumerate(questions, 1):
    qid = _question_id(q, f'{where}:{n}')
    answers = q.get('answers') or ([q['answer']] if q.get('answer') else [])
    if isinstance(answers, str):
      answers = [answers]
    if not answers:
      raise errors.UserError(f'{where}:{n}: question {qid!r} has no answers')
    out[qid] = {**q, 'answers': [str(a) for a in answers]}
  return out


def load_jsonl(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
  """Reads a JSONL file; a torn last line is skipped, other bad lines are errors."""
  try:
    lines = pathlib.Path(path).read_text().split('\n')
  except OSError as e:
    raise errors.UserError(f'cannot read {path}: {e.strerror}') from e
  rows = []
  last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
  for i, line in enumerate(lines):
    if not line.strip():
      continue
    try:
      rows.append(json.loads(line))
    except json.JSONDecodeError as e:
      if i == last:
        break  # a writer killed mid-line: the unit in flight is lost, not the file
      raise errors.UserError(f'{path}:{i + 1}: not valid JSON ({e.msg})') from e
  return rows


def evaluate(trajectories: Iterable[Mapping[str, Any]],
             questions: Mapping[str, Mapping[str, Any]],
             judge: judge_lib.Judge, *, expected_runs: int | None = None,
             batch_size: int = 512, progress: bool = True) -> EvalResult:
  """Judges every run and summarises accuracy over runs.

  Args:
    trajectories: trajectory dicts (`question_id`, `repeat`, `answer_generation`,
      `final_answer`, `status`).
    questions: `index_questions` output for the evaluation set.
    judge: any `Judge`.
    expected_runs: if set, the number of distinct repeats must equal it.
    batch_size: items per `judge_batch` call (progress granularity).
    progress: show a tqdm bar.

  Returns:
    The summary and the per-(run, question) rows.
  """
  by_key: dict[tuple[int, str], Mapping[str, Any]] = {}
  duplicates = 0
  for t in trajectories:
    qid = str(t.get('question_id'))
    if qid not in questions:
      raise errors.UserError(
          f'trajectory for question {qid!r} (repeat {t.get("repeat")}) is not in the '
          'evaluation questions')
    key = (int(t.get('repeat', 0)), qid)
    if key in by_key:
      duplicates += 1
      continue
    by_key[key] = t
  runs = sorted({r for r, _ in by_key})
  if expected_runs is not None and len(runs) != expected_runs:
    raise errors.UserError(
        f'auto-eval expected {expected_runs} runs per question but the trajectories '
        f'have {len(runs)} distinct repeats {runs[:12]}')
  if not runs:
    raise errors.UserError('auto-eval: no trajectories to evaluate')

  # One judge call per distinct (question, answer): finals often equal drafts.
  items: dict[tuple[str, str], judge_lib.JudgeItem] = {}
  rows: list[dict[str, Any]] = []
  missing = 0
  for r in runs:
    for qid, q in questions.items():
      t = by_key.get((r, qid))
      missing += t is None
      row = {'run': r, 'question_id': qid, 'qtype': q.get('qtype'),
             'num_hops': q.get('num_hops'), 'missing': t is None,
             'status': None if t is None else t.get('status'),
             **funnel.trajectory_stages(t, q['answers'])}
      for kind in KINDS:
        answer = None if t is None else t.get(_ANSWER_FIELD[kind])
        row[_ANSWER_FIELD[kind]] = answer
        items.setdefault((qid, answer or ''), judge_lib.make_item(
            q.get('question', ''), answer, q['answers']))
      rows.append(row)

  keys = list(items)
  verdicts: dict[tuple[str, str], judge_lib.Verdict] = {}
  bar = tqdm.tqdm(total=len(keys), desc=f'auto-eval ({judge.name})', unit='answer',
                  disable=not progress)
  for start in range(0, len(keys), batch_size):
    chunk = keys[start:start + batch_size]
    for key, verdict in zip(chunk, judge.judge_batch([items[k] for k in chunk])):
      verdicts[key] = verdict
    bar.update(len(chunk))
  bar.close()

  sources: collections.Counter[str] = collections.Counter()
  for row in rows:
    for kind in KINDS:
      v = verdicts[(row['question_id'], row[_ANSWER_FIELD[kind]] or '')]
      row[f'correct_{kind}'] = bool(v.correct)
      row[f'judge_source_{kind}'] = v.source
      sources[v.source] += 1
    row['answer_given_summaries'] = (row['correct_answer_generation'] if row['in_summaries']
                                     else None)

  summary = summarize(rows, runs)
  summary['funnel'] = {field: mean_std(funnel.per_run_rates(rows, runs, field))
                       for field in (*funnel.STAGES, 'answer_given_summaries')}
  summary.update({
      'n_questions': len(questions), 'missing': missing, 'duplicates': duplicates,
      'judge': {'name': judge.name, 'sources': dict(sources),
                'unparseable': sum(1 for v in verdicts.values() if v.source == 'fallback')},
      'accuracy_unit': 'percent',
  })
  return EvalResult(summary, rows)


def _per_run_accuracy(rows: Sequence[Mapping[str, Any]], runs: Sequence[int], kind: str) -> list[float]:
  by_run: dict[int, list[bool]] = {r: [] for r in runs}
  for row in rows:
    by_run[row['run']].append(row[f'correct_{kind}'])
  return [100.0 * float(np.mean(v)) for v in by_run.values() if v]


def summarize(rows: Sequence[Mapping[str, Any]], runs: Sequence[int]) -> dict[str, Any]:
  """Mean ± std over runs, overall and by `qtype` and `num_hops`.

  Args:
    rows: judged rows (`run`, `question_id`, `qtype`, `num_hops`,
      `correct_final`, `correct_answer_generation`).
    runs: the run ids.

  Returns:
    The `summary.json` accuracy fields.
  """
  out: dict[str, Any] = {kind: mean_std(_per_run_accuracy(rows, runs, kind)) for kind in KINDS}
  for field, name in (('qtype', 'by_qtype'), ('num_hops', 'by_hops')):
    groups: dict[str, list[Mapping[str, Any]]] = collections.defaultdict(list)
    for row in rows:
      if row.get(field) is not None:
        groups[str(row[field])].append(row)
    out[name] = {
        g: {**{kind: mean_std(_per_run_accuracy(grows, runs, kind)) for kind in KINDS},
            'n_questions': len({r['question_id'] for r in grows})}
        for g, grows in sorted(groups.items())}
  return out


def _atomic_write(path: pathlib.Path, text: str) -> None:
  fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f'.{path.name}.', suffix='.tmp')
  with os.fdopen(fd, 'w') as f:
    f.write(text)
  os.replace(tmp, path)


def write_result(result: EvalResult, out_dir: str | os.PathLike[str]) -> pathlib.Path:
  """Writes `results.jsonl` then `summary.json` (each atomically) into `out_dir`.

  Args:
    result: from `evaluate`.
    out_dir: e.g. `EXP_DIR/gen_1/eval/<size>`; created if needed.

  Returns:
    The path of `summary.json`.
  """
  out = pathlib.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  _atomic_write(out / 'results.jsonl',
                ''.join(json.dumps(r, sort_keys=True) + '\n' for r in result.rows))
  # The summary goes last: its presence means the evaluation is complete.
  _atomic_write(out / 'summary.json', json.dumps(result.summary, indent=2, sort_keys=True) + '\n')
  return out / 'summary.json'


def evaluate_files(trajectory_paths: Sequence[str | os.PathLike[str]],
                   questions_path: str | os.PathLike[str], out_dir: str | os.PathLike[str],
                   judge: judge_lib.Judge, *, expected_runs: int | None = None,
                   progress: bool = True) -> dict[str, Any]:
  """Reads trajectory shards and a questions JSONL, evaluates, writes results.

  Args:
    trajectory_paths: JSONL shards of trajectories.
    questions_path: JSONL of evaluation questions.
    out_dir: where `summary.json` and `results.jsonl` go.
    judge: any `Judge`.
    expected_runs: checked against the number of distinct repeats.
    progress: show a tqdm bar.

  Returns:
    The summary.
  """
  if not trajectory_paths:
    raise errors.UserError('auto-eval: no trajectory files given')
  questions = index_questions(load_jsonl(questions_path), str(questions_path))
  trajectories = [t for p in trajectory_paths for t in load_jsonl(p)]
  result = evaluate(trajectories, questions, judge, expected_runs=expected_runs,
                    progress=progress)
  write_result(result, out_dir)
  return result.summary
