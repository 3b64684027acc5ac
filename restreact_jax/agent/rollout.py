"""Pooled rollouts: many agents share one LLM and one search tool.

Each turn gathers the pending request of every live agent: all searches go to
the tool in one batched `SearchTool.search` call (per `k`), then the LLM calls,
including those the searches just unlocked. A stepped LLM (the engine) gets
each call as soon as its agent has it and is driven one step per turn, so no
agent waits for another's samples; any other LLM gets the turn's calls in one
`LLM.generate`. Finished trajectories stream to
`shard-{process_index:05d}-of-{process_count:05d}.jsonl` under the output
directory, one JSON object per line, as soon as they finish.

Multi-host: process p of P takes questions p, p+P, p+2P, ... and writes only its
own shard. Resuming: trajectories already in the shard (by question id and
repeat) are skipped; a torn last line (a crash mid-write) is cut off first.
Because every seed derives from the trajectory's coordinates, a pooled rollout
produces the same trajectories as running the agents one at a time.

Infrastructure errors (the LLM server or the search backend failing) propagate
as they are; what was written stays, and a rerun resumes.
"""

from __future__ import annotations

import collections
import dataclasses
import json
import os
import pathlib
import time
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import tqdm

from restreact_jax import errors
from restreact_jax import llm as llm_lib
from restreact_jax.agent import prompts
from restreact_jax.agent.agent import Agent, AgentConfig, Chooser, Finished, LLMCall, SearchCall
from restreact_jax.agent.trajectory import Trajectory
from restreact_jax.llm import LLM
from restreact_jax.search.types import SearchTool


@dataclasses.dataclass(frozen=True)
class QuestionItem:
  """A question to roll out: a stable id and the text."""
  id: str
  question: str


def as_question(obj: Any) -> QuestionItem:
  """Accepts a `QuestionItem`, an `(id, text)` pair, a mapping with `id` (or
  `question_id`) and `question`, or an object with those attributes."""
  if isinstance(obj, QuestionItem):
    return obj
  if isinstance(obj, (tuple, list)) and len(obj) == 2:
    return QuestionItem(str(obj[0]), str(obj[1]))
  if isinstance(obj, Mapping):
    qid = obj.get('id', obj.get('question_id'))
    if qid is None or 'question' not in obj:
      raise errors.UserError(f'question record needs "id" and "question": {str(obj)[:120]}')
    return QuestionItem(str(qid), str(obj['question']))
  qid = getattr(obj, 'id', getattr(obj, 'question_id', None))
  if qid is None or not hasattr(obj, 'question'):
    raise errors.UserError(f'cannot read a question from {type(obj).__name__}')
  return QuestionItem(str(qid), str(obj.question))


def load_questions(path: str | os.PathLike[str]) -> list[QuestionItem]:
  """Reads a JSONL file of questions (`id`/`question_id` and `question`).

  Raises:
    UserError: missing file or a malformed line (names file and line).
  """
  path = pathlib.Path(path)
  if not path.is_file():
    raise errors.UserError(f'question file {path} does not exist')
  out = []
  with path.open(encoding='utf-8') as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        out.append(as_question(json.loads(line)))
      except (json.JSONDecodeError, errors.UserError) as e:
        raise errors.UserError(f'{path}:{lineno}: {e}') from None
  return out


def shard_name(process_index: int, process_count: int) -> str:
  return f'shard-{process_index:05d}-of-{process_count:05d}.jsonl'


def repair_and_read_keys(path: pathlib.Path) -> set[tuple[str, int]]:
  """Returns the (question_id, repeat) keys already in a shard.

  A last line that is incomplete (no newline) or not valid JSON is the trace of
  an interrupted write and is truncated away; a bad line elsewhere is an
  error, since truncating it would lose finished work.

  Raises:
    UserError: a corrupt line before the last one (names file and line).
  """
  if not path.exists():
    return set()
  data = path.read_bytes()
  lines = data.split(b'\n')
  keys: set[tuple[str, int]] = set()
  good_end = 0
  pos = 0
  for i, raw in enumerate(lines):
    end = pos + len(raw) + 1  # includes the '\n' (absent on the last piece)
    is_last = i == len(lines) - 1
    if not raw.strip():
      pos = end
      if not is_last:
        good_end = end
      continue
    try:
      record = json.loads(raw.decode('utf-8'))
      key = (str(record['question_id']), int(record['repeat']))
      complete = not is_last  # the final piece has no newline: torn
    except (ValueError, KeyError, TypeError):
      complete = False
    if not complete:
      next_nonempty = any(l.strip() for l in lines[i + 1:])
      if next_nonempty:
        raise errors.UserError(f'{path}:{i + 1}: corrupt trajectory line inside the shard')
      break
    keys.add(key)
    good_end = end
    pos = end
  if good_end < len(data):
    with path.open('r+b') as f:
      f.truncate(good_end)
  return keys


@dataclasses.dataclass
class RolloutStats:
  """What a rollout did and where the time went.

  `outside_engine_fraction` is the share of wall time not spent inside
  the LLM (`LLM.generate`, or a stepped LLM's `step`): agent Python,
  parsing, search, writing. `llm_batches` counts those calls and
  `max_llm_batch` the most requests one of them had (stepped: in flight).
  """
  trajectories: int = 0
  ok: int = 0
  failed: int = 0
  skipped: int = 0
  llm_batches: int = 0
  llm_requests: int = 0
  samples: int = 0
  generated_tokens: int = 0
  searches: int = 0
  max_llm_batch: int = 0
  wall_s: float = 0.0
  llm_s: float = 0.0
  search_s: float = 0.0

  @property
  def outside_engine_s(self) -> float:
    return max(0.0, self.wall_s - self.llm_s)

  @property
  def outside_engine_fraction(self) -> float:
    return self.outside_engine_s / self.wall_s if self.wall_s > 0 else 0.0

  def to_json(self) -> dict[str, Any]:
    out = dataclasses.asdict(self)
    out['outside_engine_s'] = self.outside_engine_s
    out['outside_engine_fraction'] = self.outside_engine_fraction
    out['tokens_per_s'] = self.generated_tokens / self.llm_s if self.llm_s > 0 else 0.0
    return out


def run_pool(llm: LLM, search_tool: SearchTool | None, agents: Iterable[Agent], *,
             on_finished: Callable[[Trajectory], None], max_concurrent: int = 512,
             stats: RolloutStats | None = None,
             progress: tqdm.tqdm | None = None, stepped: bool | None = None) -> RolloutStats:
  """Drives agents to completion, pooling their requests.

  Each turn finishes what is done, admits new agents, runs the pending
  searches (batched per `k`) and hands the LLM calls over. With a stepped LLM
  (`llm.can_step`, the engine) each call is submitted as soon as its agent
  has it and the turn ends with one `step` of the engine, so an agent goes on
  as soon as its own samples are done; otherwise the turn's calls go to one
  `generate` and every agent waits for the slowest of the round. Both give
  the same trajectories, finished in a different order: seeds come from the
  trajectory's coordinates and a sample does not depend on its batch, up to
  float rounding (on the demo's test rollouts every candidate's text was the
  same and its logprobs within 2e-5).

  Args:
    llm: the model.
    search_tool: the tool (may be None only if no agent searches).
    agents: fresh agents; taken lazily, at most `max_concurrent` alive.
    on_finished: called with each finished trajectory, in finishing order.
    max_concurrent: live agents at most.
    stats: accumulated into (a new one if None).
    progress: a tqdm bar to advance per finished trajectory.
    stepped: submit-and-step (True) or round by round (False); default
      whichever the LLM supports.

  Returns:
    The stats.
  """
  stats = stats if stats is not None else RolloutStats()
  stepped = llm_lib.can_step(llm) if stepped is None else stepped
  source: Iterator[Agent] = iter(agents)
  live: dict[int, tuple[Agent, Any]] = {}
  in_flight: dict[int, tuple[Any, float]] = {}  # stepped: slot -> (future, submitted at)
  next_slot = 0
  exhausted = False
  start = time.perf_counter()

  def advance(slot: int, result: Any, elapsed_s: float) -> None:
    agent = live[slot][0]
    live[slot] = (agent, agent.next(result, elapsed_s))

  def took(samples: Sequence[Any]) -> None:
    stats.samples += len(samples)
    stats.generated_tokens += sum(len(s.logprobs) for s in samples)

  while True:
    for slot in [s for s, (_, req) in live.items() if isinstance(req, Finished)]:
      traj = live.pop(slot)[1].trajectory
      stats.trajectories += 1
      if traj.status == 'ok':
        stats.ok += 1
      else:
        stats.failed += 1
      on_finished(traj)
      if progress is not None:
        progress.update(1)
    while not exhausted and len(live) < max_concurrent:
      agent = next(source, None)
      if agent is None:
        exhausted = True
        break
      live[next_slot] = (agent, agent.next(None))
      next_slot += 1
    if not live:
      break

    # Searches first: the summaries they unlock join this turn's LLM calls.
    by_k: dict[int, list[int]] = collections.defaultdict(list)
    for slot, (_, req) in live.items():
      if isinstance(req, SearchCall):
        by_k[req.k].append(slot)
    for k, slots in by_k.items():
      if search_tool is None:
        raise errors.UserError('an agent asked to search but the rollout has no search tool')
      t0 = time.perf_counter()
      hits = search_tool.search([live[s][1].query for s in slots], k)
      dt = time.perf_counter() - t0
      stats.search_s += dt
      stats.searches += len(slots)
      for slot, slot_hits in zip(slots, hits):
        advance(slot, slot_hits, dt)

    llm_slots = [s for s, (_, req) in live.items()
                 if isinstance(req, LLMCall) and s not in in_flight]
    stats.llm_requests += len(llm_slots)
    if stepped:
      now = time.perf_counter()
      for slot in llm_slots:
        in_flight[slot] = (llm.submit(live[slot][1].request), now)
      if not in_flight:
        continue
      stats.max_llm_batch = max(stats.max_llm_batch, len(in_flight))
      t0 = time.perf_counter()
      llm.step()
      now = time.perf_counter()
      stats.llm_s += now - t0
      stats.llm_batches += 1
      for slot in [s for s, (f, _) in in_flight.items() if f.done()]:
        future, submitted = in_flight.pop(slot)
        samples = future.result()
        took(samples)
        advance(slot, samples, now - submitted)
    elif llm_slots:
      batch = [live[s][1].request for s in llm_slots]
      t0 = time.perf_counter()
      outputs = llm.generate(batch)
      dt = time.perf_counter() - t0
      stats.llm_s += dt
      stats.llm_batches += 1
      stats.max_llm_batch = max(stats.max_llm_batch, len(batch))
      for slot, samples in zip(llm_slots, outputs):
        took(samples)
        advance(slot, samples, dt)
    if progress is not None and stats.llm_s > 0:
      progress.set_postfix(tok_s=f'{stats.generated_tokens / stats.llm_s:.0f}',
                           live=len(live), refresh=False)

  stats.wall_s += time.perf_counter() - start
  return stats


def rollout(llm: LLM, search_tool: SearchTool | None, questions: Sequence[Any], *,
            out_dir: str | os.PathLike[str] | None, prompter: prompts.Prompter,
            config: AgentConfig = AgentConfig(), repeats: int = 1, process_index: int = 0,
            process_count: int = 1, max_concurrent: int = 512, show_progress: bool = True,
            collect: list[Trajectory] | None = None,
            chooser: Chooser | None = None, stepped: bool | None = None,
            desc: str = 'rollout') -> RolloutStats:
  """Rolls out `repeats` trajectories per question of this process's shard.

  Args:
    llm: the policy.
    search_tool: the tool.
    questions: `QuestionItem`s (or anything `as_question` reads), all processes'.
    out_dir: where the shard goes (None: write nothing).
    prompter: prompt renderer.
    config: agent settings (seed, samples, budget).
    repeats: trajectories per question (R).
    process_index: this process (0-based).
    process_count: number of processes.
    max_concurrent: live agents at most.
    show_progress: draw a tqdm bar.
    collect: if given, finished trajectories are appended to it too.
    chooser: which candidate each step continues with (default: the lowest
      perplexity; `feedback.guided.RankerChooser` for a ranker's pick).
    stepped: see `run_pool` (default: stepped when the LLM can be).
    desc: the progress bar's label (the process index is added).

  Returns:
    `RolloutStats` of this run (skipped = already in the shard).

  Raises:
    UserError: bad arguments, or a corrupt shard.
  """
  if not 0 <= process_index < process_count:
    raise errors.UserError(
        f'rollout: process_index {process_index} not in [0, {process_count})')
  if repeats < 1:
    raise errors.UserError(f'rollout: repeats must be >= 1, got {repeats}')
  config.validate()
  items = [as_question(q) for q in questions]
  ids = [q.id for q in items]
  if len(set(ids)) != len(ids):
    dup = next(i for i in ids if ids.count(i) > 1)
    raise errors.UserError(f'rollout: question id {dup!r} appears more than once')
  mine = items[process_index::process_count]

  done: set[tuple[str, int]] = set()
  shard = None
  if out_dir is not None:
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / shard_name(process_index, process_count)
    done = repair_and_read_keys(path)
    shard = path.open('a', encoding='utf-8')
  work = [(q, r) for q in mine for r in range(repeats) if (q.id, r) not in done]
  stats = RolloutStats(skipped=len(mine) * repeats - len(work))

  def agents() -> Iterator[Agent]:
    for q, r in work:
      yield Agent(q.question, prompter=prompter, config=config, question_id=q.id, repeat=r,
                  chooser=chooser)

  def on_finished(traj: Trajectory) -> None:
    if shard is not None:
      shard.write(traj.dumps() + '\n')
      shard.flush()  # a crash loses at most the line being written
    if collect is not None:
      collect.append(traj)

  bar = tqdm.tqdm(total=len(work), desc=f'{desc} p{process_index}', unit='traj',
                  disable=not show_progress, dynamic_ncols=True)
  try:
    run_pool(llm, search_tool, agents(), on_finished=on_finished,
             max_concurrent=max_concurrent, stats=stats, progress=bar, stepped=stepped)
  finally:
    bar.close()
    if shard is not None:
      shard.flush()
      os.fsync(shard.fileno())
      shard.close()
  return stats
