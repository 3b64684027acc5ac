"""Trajectories + rankings -> the fine-tuning mixture (one example per step).

Each rolled-out step becomes one example: `inputs` is the step's prompt exactly
as it was rolled out (so PAST_ACTIONS is the trajectory actually taken), and
`targets` is the ranker's top-ranked *parseable* candidate followed by the stop
marker, so a fine-tuned model learns to end its action with `# [END]`. This is
the paper's off-policy use of the ranker (PAPER_NOTES §4): rollouts continue
with the lowest-perplexity sample; the mixture trains on the best-ranked one.

With `only_acceptable`, the target is the best-ranked candidate that the
rater rules accept (`RuleRanker.acceptable`, recorded by the rank phase; no
labels), and a step with none is left out: the rater instructions' "filter
bad actions", which matters when the policy is weak and most candidates are.

A trajectory filter (`keep`) drops whole trajectories before that: the
loop's `trajectory_filter = 'oracle'` keeps only trajectories whose final
answer is right by the gold answers and trains on the steps they took (the
ReST/STaR filter with a gold reward — an ablation that measures what a
perfect filter would give, never a default, recorded in `stats.json`).

Examples are deduplicated on (inputs, targets), filtered by length, counted per
step type, and written as TFRecord files `<step_type>.tfrecord` (features
`inputs`, `targets`, `step_type`, `question_id`) plus `stats.json`.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import os
import pathlib
from typing import Any, Callable, Iterable, Iterator, Sequence

from restreact_jax import errors, jsonl
from restreact_jax.llm import END_MARKER

STEP_TYPES = ('decision', 'summarize', 'answer', 'relevance', 'grounding')


@dataclasses.dataclass(frozen=True)
class StepExample:
  inputs: str
  targets: str
  step_type: str
  question_id: str
  rank_source: str  # 'ranker' or 'chosen' (no ranking available)


@dataclasses.dataclass
class MixtureStats:
  trajectories: int = 0
  steps: int = 0
  examples: int = 0
  duplicates: int = 0
  too_long: int = 0
  no_parseable_candidate: int = 0
  unranked_steps: int = 0
  unacceptable: int = 0
  filtered_trajectories: int = 0
  trajectory_filter: str = ''
  per_step_type: dict[str, int] = dataclasses.field(default_factory=dict)


def read_jsonl(paths: Iterable[str | os.PathLike[str]]) -> Iterator[dict[str, Any]]:
  """Reads JSONL files, skipping a torn last line and naming bad lines."""
  return jsonl.iter_jsonl_files(paths, torn_tail_ok=True)


def ranking_key(question_id: str, repeat: int, step_index: int) -> tuple[str, int, int]:
  return (str(question_id), int(repeat), int(step_index))


def load_rankings(paths: Iterable[str | os.PathLike[str]]) -> dict[tuple[str, int, int], list[int]]:
  """`{(question_id, repeat, step_index): order}` from rankings JSONL files."""
  return {key: list(row['order']) for key, row in load_ranking_rows(paths).items()}


def load_ranking_rows(paths: Iterable[str | os.PathLike[str]]
                      ) -> dict[tuple[str, int, int], dict[str, Any]]:
  """`{(question_id, repeat, step_index): row}` from rankings JSONL files."""
  return {ranking_key(row['question_id'], row.get('repeat', 0), row['step_index']): row
          for row in read_jsonl(paths)}


def _target_index(step: dict[str, Any], order: Sequence[int] | None,
                  acceptable: Sequence[bool] | None = None) -> int | None:
  candidates = step.get('candidates') or []
  indices = list(order) if order is not None else [step.get('chosen')]
  for i in indices:
    if i is None or not 0 <= i < len(candidates):
      continue
    if acceptable is not None and not (i < len(acceptable) and acceptable[i]):
      continue
    if candidates[i].get('parse', {}).get('ok'):
      return i
  return None


def step_examples(trajectory: dict[str, Any],
                  rankings: dict[tuple[str, int, int], list[int]],
                  stats: MixtureStats | None = None,
                  acceptable: dict[tuple[str, int, int], list[bool]] | None = None
                  ) -> list[StepExample]:
  """One example per step of `trajectory` (see module docstring).

  `acceptable` (per ranked step, per candidate) restricts targets to accepted
  candidates; a step without a flag row (unranked) is then left out too.
  """
  stats = stats if stats is not None else MixtureStats()
  qid = str(trajectory['question_id'])
  repeat = int(trajectory.get('repeat', 0))
  examples = []
  for index, step in enumerate(trajectory.get('steps', [])):
    stats.steps += 1
    order = rankings.get(ranking_key(qid, repeat, index))
    if order is None:
      stats.unranked_steps += 1
    if acceptable is not None:
      flags = acceptable.get(ranking_key(qid, repeat, index))
      best = _target_index(step, order, flags or ())
      if best is None:
        if _target_index(step, order) is None:
          stats.no_parseable_candidate += 1
        else:
          stats.unacceptable += 1
        continue
    else:
      best = _target_index(step, order)
    if best is None:
      stats.no_parseable_candidate += 1
      continue
    text = step['candidates'][best]['text']
    examples.append(StepExample(
        inputs=step['prompt'], targets=text + END_MARKER, step_type=step['step_type'],
        question_id=qid, rank_source='ranker' if order is not None else 'chosen'))
  return examples


def gold_answer_filter(questions_path: str | os.PathLike[str] | None
                       ) -> Callable[[dict[str, Any]], bool]:
  """Keeps a trajectory whose final answer matches its question's gold answers."""
  from restreact_jax.evaluation import matcher  # pylint: disable=g-import-not-at-top
  if questions_path is None or not pathlib.Path(questions_path).is_file():
    raise errors.UserError(f'trajectory_filter oracle: no questions file {questions_path}')
  gold = {str(q['id']): [str(a) for a in q.get('answers') or ()]
          for q in jsonl.iter_jsonl(questions_path)}

  def keep(trajectory: dict[str, Any]) -> bool:
    answers = gold.get(str(trajectory.get('question_id')))
    if not answers:
      raise errors.UserError(f'trajectory_filter oracle: no gold answers for question '
                             f'{trajectory.get("question_id")!r} in {questions_path}')
    return matcher.matches(str(trajectory.get('final_answer') or ''), answers)
  return keep


def build_examples(trajectories: Iterable[dict[str, Any]],
                   rankings: dict[tuple[str, int, int], list[int]],
                   *,
                   length_fn: Callable[[str], int] = len,
                   max_input_length: int | None = None,
                   max_target_length: int | None = None,
                   acceptable: dict[tuple[str, int, int], list[bool]] | None = None,
                   keep: Callable[[dict[str, Any]], bool] | None = None,
                   filter_name: str = ''
                   ) -> tuple[list[StepExample], MixtureStats]:
  """Splits, deduplicates and length-filters; returns examples and counts.

  `acceptable`: see `step_examples` (None keeps every step's best candidate).
  `keep`: a trajectory filter (None keeps all); `filter_name` labels it in
  the stats.
  """
  stats = MixtureStats(trajectory_filter=filter_name)
  seen: set[tuple[str, str]] = set()
  kept = []
  for trajectory in trajectories:
    stats.trajectories += 1
    if keep is not None and not keep(trajectory):
      stats.filtered_trajectories += 1
      continue
    for ex in step_examples(trajectory, rankings, stats, acceptable):
      key = (ex.inputs, ex.targets)
      if key in seen:
        stats.duplicates += 1
        continue
      seen.add(key)
      if ((max_input_length and length_fn(ex.inputs) > max_input_length) or
          (max_target_length and length_fn(ex.targets) > max_target_length)):
        stats.too_long += 1
        continue
      kept.append(ex)
  counts = collections.Counter(ex.step_type for ex in kept)
  stats.per_step_type = {t: counts.get(t, 0) for t in STEP_TYPES}
  stats.examples = len(kept)
  return kept, stats


def write_tfrecords(examples: Sequence[StepExample], out_dir: str | os.PathLike[str]) -> list[str]:
  """Writes `<step_type>.tfrecord` files (tf.train.Example) into `out_dir`."""
  import tensorflow as tf  # heavy; only when writing

  def feature(value: str) -> tf.train.Feature:
    return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode('utf-8')]))

  out_dir = pathlib.Path(out_dir)
  out_dir.mkdir(parents=True, exist_ok=True)
  by_type: dict[str, list[StepExample]] = collections.defaultdict(list)
  for ex in examples:
    by_type[ex.step_type].append(ex)
  written = []
  for step_type in STEP_TYPES:
    path = out_dir / f'{step_type}.tfrecord'
    with tf.io.TFRecordWriter(str(path)) as writer:
      for ex in by_type.get(step_type, []):
        record = tf.train.Example(features=tf.train.Features(feature={
            'inputs': feature(ex.inputs), 'targets': feature(ex.targets),
            'step_type': feature(ex.step_type), 'question_id': feature(ex.question_id),
        }))
        writer.write(record.SerializeToString())
    written.append(str(path))
  return written


def build_mixture(trajectory_glob: str,
                  rankings_glob: str | None,
                  out_dir: str | os.PathLike[str],
                  *,
                  length_fn: Callable[[str], int] = len,
                  max_input_length: int | None = None,
                  max_target_length: int | None = None) -> MixtureStats:
  """The `mixture` phase: trajectory shards + rankings -> TFRecords + stats."""
  paths = sorted(glob.glob(trajectory_glob))
  if not paths:
    raise errors.UserError(f'no trajectory shards match {trajectory_glob}')
  rankings = load_rankings(sorted(glob.glob(rankings_glob))) if rankings_glob else {}
  examples, stats = build_examples(
      read_jsonl(paths), rankings, length_fn=length_fn,
      max_input_length=max_input_length, max_target_length=max_target_length)
  write_tfrecords(examples, out_dir)
  with open(pathlib.Path(out_dir) / 'stats.json', 'w') as f:
    json.dump(dataclasses.asdict(stats), f, indent=2, sort_keys=True)
  return stats
