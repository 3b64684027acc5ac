"""Trajectory records and their JSON form (one JSON object per line in shards).

Schema (version `SCHEMA_VERSION`)::

  {"schema_version": 1, "question_id": str, "question": str, "repeat": int,
   "seed": int, "policy": str,
   "steps": [{"step_type": str, "prompt": str, "prefix_len": int,
              "candidates": [{"text", "logprobs", "perplexity", "finish_reason",
                              "parse": {"ok", "action", "error"}}],
              "chosen": int | null, "attempts": int,
              "parse_events": [{"attempt", "seed", "errors"}],
              "tool": {"query", "results": [{"link_id", "link_text",
                                             "snippet", "doc_id"}]}
                      | {"name": "calculator", "query", "results": [],
                         "result"} | null,
              "timings": {...}}],
   "answer_generation": str | null, "final_answer": str | null,
   "status": "ok" | "failed", "failure": str | null, "num_searches": int}

`prompt[:prefix_len]` is the step type's shared preamble. `candidates` are the
N samples of the attempt that decided the step (the ranker ranks these);
`chosen` indexes the min-perplexity parseable one (null when none parsed).
`parse_events` records every attempt whose candidates all failed to parse,
with each candidate's error. `tool` is the search that followed a decision
step choosing `Search`, or the calculation of one choosing `Calculate`: then
`name` is "calculator", `query` the expression, `results` empty and `result`
the calculator's text (a number or `error: ...`). A search's `tool` has no
`name` key, as before tools existed, so old readers read both kinds. A
perplexity of infinity (no tokens) is stored as null.
`timings` holds `llm_s` (wall time of the pooled `generate` calls that served
the step, summed over attempts; shared with the rest of the batch) and, on a
decision step that searched, `search_s`. `seed` is the rollout's base seed;
per-step seeds derive from it (`agent.derive_seed`) and failed attempts record
theirs in `parse_events`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from typing import Any

from restreact_jax import errors
from restreact_jax.search.types import ResultItem

SCHEMA_VERSION = 1


@dataclasses.dataclass
class Candidate:
  """One sample of a step with its parse."""
  text: str
  logprobs: list[float]
  perplexity: float
  finish_reason: str
  parse: dict[str, Any]  # {"ok", "action", "error"}

  def to_json(self) -> dict[str, Any]:
    return {
        'text': self.text,
        'logprobs': list(self.logprobs),
        'perplexity': self.perplexity if math.isfinite(self.perplexity) else None,
        'finish_reason': self.finish_reason,
        'parse': dict(self.parse),
    }

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> Candidate:
    ppl = d['perplexity']
    return cls(text=d['text'], logprobs=list(d['logprobs']),
               perplexity=float('inf') if ppl is None else float(ppl),
               finish_reason=d['finish_reason'], parse=dict(d['parse']))


@dataclasses.dataclass
class ToolCall:
  """A tool call the agent made and what came back.

  Attributes:
    query: the search query, or the calculator's expression.
    results: the search hits (ids already trajectory-unique); empty for a
      calculation.
    name: 'search' or 'calculator'.
    result: the calculator's text (None for a search).
  """
  query: str
  results: list[ResultItem]
  name: str = 'search'
  result: str | None = None

  def to_json(self) -> dict[str, Any]:
    out: dict[str, Any] = {'query': self.query,
                           'results': [dataclasses.asdict(r) for r in self.results]}
    if self.name != 'search':
      # Searches keep their original two keys (byte-identical shards).
      out['name'] = self.name
      out['result'] = self.result
    return out

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> ToolCall:
    return cls(query=d['query'], results=[ResultItem(**r) for r in d['results']],
               name=d.get('name', 'search'), result=d.get('result'))


@dataclasses.dataclass
class Step:
  """One LLM step of a trajectory."""
  step_type: str
  prompt: str
  prefix_len: int
  candidates: list[Candidate] = dataclasses.field(default_factory=list)
  chosen: int | None = None
  attempts: int = 0
  parse_events: list[dict[str, Any]] = dataclasses.field(default_factory=list)
  tool: ToolCall | None = None
  timings: dict[str, float] = dataclasses.field(default_factory=dict)

  @property
  def action(self) -> dict[str, Any] | None:
    """The chosen candidate's action, or None."""
    if self.chosen is None:
      return None
    return self.candidates[self.chosen].parse['action']

  def to_json(self) -> dict[str, Any]:
    return {
        'step_type': self.step_type,
        'prompt': self.prompt,
        'prefix_len': self.prefix_len,
        'candidates': [c.to_json() for c in self.candidates],
        'chosen': self.chosen,
        'attempts': self.attempts,
        'parse_events': list(self.parse_events),
        'tool': self.tool.to_json() if self.tool is not None else None,
        'timings': dict(self.timings),
    }

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> Step:
    return cls(step_type=d['step_type'], prompt=d['prompt'], prefix_len=d['prefix_len'],
               candidates=[Candidate.from_json(c) for c in d['candidates']],
               chosen=d['chosen'], attempts=d['attempts'],
               parse_events=list(d['parse_events']),
               tool=ToolCall.from_json(d['tool']) if d['tool'] is not None else None,
               timings=dict(d['timings']))


@dataclasses.dataclass
class Trajectory:
  """A whole rollout of one question (one repeat)."""
  question_id: str
  question: str
  repeat: int = 0
  seed: int = 0
  policy: str = ''
  steps: list[Step] = dataclasses.field(default_factory=list)
  answer_generation: str | None = None
  final_answer: str | None = None
  status: str = 'ok'
  failure: str | None = None
  num_searches: int = 0

  @property
  def num_calculations(self) -> int:
    """Calculator calls (each also used one unit of the search budget)."""
    return sum(s.tool is not None and s.tool.name == 'calculator' for s in self.steps)

  @property
  def key(self) -> tuple[str, int]:
    """Identifies the trajectory within a rollout (for resuming)."""
    return (self.question_id, self.repeat)

  def to_json(self) -> dict[str, Any]:
    return {
        'schema_version': SCHEMA_VERSION,
        'question_id': self.question_id,
        'question': self.question,
        'repeat': self.repeat,
        'seed': self.seed,
        'policy': self.policy,
        'steps': [s.to_json() for s in self.steps],
        'answer_generation': self.answer_generation,
        'final_answer': self.final_answer,
        'status': self.status,
        'failure': self.failure,
        'num_searches': self.num_searches,
    }

  def dumps(self) -> str:
    """One JSON line (no newline); strict JSON, no NaN/Infinity.

    ASCII-escaped so that any text (even lone surrogates from a remote model)
    round-trips through a UTF-8 file.
    """
    return json.dumps(self.to_json(), ensure_ascii=True, allow_nan=False)

  @classmethod
  def from_json(cls, d: dict[str, Any]) -> Trajectory:
    version = d.get('schema_version')
    if version != SCHEMA_VERSION:
      raise errors.UserError(
          f'trajectory {d.get("question_id")!r}: schema_version {version!r}, '
          f'expected {SCHEMA_VERSION}')
    return cls(question_id=d['question_id'], question=d['question'], repeat=d['repeat'],
               seed=d['seed'], policy=d['policy'],
               steps=[Step.from_json(s) for s in d['steps']],
               answer_generation=d['answer_generation'], final_answer=d['final_answer'],
               status=d['status'], failure=d['failure'], num_searches=d['num_searches'])

  @classmethod
  def loads(cls, line: str) -> Trajectory:
    return cls.from_json(json.loads(line))


def read_jsonl(path: str) -> list[Trajectory]:
  """Reads every trajectory of a shard file.

  Raises:
    UserError: a line is not a valid trajectory (names file and line).
  """
  out = []
  with open(path, encoding='utf-8') as f:
    for lineno, line in enumerate(f, start=1):
      if not line.strip():
        continue
      try:
        out.append(Trajectory.loads(line))
      except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise errors.UserError(f'{path}:{lineno}: not a trajectory ({e})') from None
  return out
