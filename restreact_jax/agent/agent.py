"""The search agent: the paper's five-step state machine (Figure 2).

  decision --Search--> search tool --> summarize --> decision ...
  decision --Terminate (or no searches left)--> answer --> relevance check
  --> grounding check --> final answer

`Agent.next(last_result)` is the whole interface: given the result of the
previous request (None at the start, the samples of an `LLMCall`, the hits of a
`SearchCall`) it returns the next request or `Finished(trajectory)`. The agent
never calls a model or a tool itself, so a rollout can pool thousands of them
onto one engine.

Every LLM step samples `num_samples` candidates and continues with the
parseable one of lowest perplexity (ties: the earlier candidate), or with the
one a `Chooser` picks (a label-free ranker's pick, for training rollouts that
should stay on sound ground for more hops: `feedback/guided.py`). When no
candidate parses, the step resamples with a new seed up to `max_attempts`
times, then the trajectory ends with status 'failed'. Model output never makes
`next` raise. Seeds derive from (base seed, question id, repeat, step index,
attempt) only, so a trajectory does not depend on what else shares the batch.

Link ids are unique across the trajectory: the tool's hits are renumbered
1, 2, 3, then 4, 5, 6, ...; `SelectLink` entries in PAST_ACTIONS carry the full
selected items.

With `tools=('search', 'calculator')` a decision may also choose
`Calculate(expression=...)`. The agent evaluates it itself (`calculator`, from
the `ast`, never executed; no request goes out), records it on the decision
step as a `ToolCall(name='calculator')`, shows it in PAST_ACTIONS as
`Calculate(expression=..., result=...)` and returns to the decision step. A
bad expression is recorded with its `error: ...` result and the agent goes
on. A calculation is a tool call: it uses one unit of REMAINING_SEARCHES
like a search, which bounds calculation loops by the same budget.
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import Any, Callable, Optional, Sequence, Union

from restreact_jax import errors
from restreact_jax.agent import calculator
from restreact_jax.agent import parsing
from restreact_jax.agent import prompts
from restreact_jax.agent import step_grammars
from restreact_jax.agent.trajectory import Candidate, Step, ToolCall, Trajectory
from restreact_jax.llm import END_MARKER, Sample, SamplingRequest
from restreact_jax.search.types import ResultItem


@dataclasses.dataclass(frozen=True)
class AgentConfig:
  """How an agent samples and how long it may search.

  Attributes:
    num_samples: candidates per step (paper: 4; 16 for the smallest model).
    temperature: sampling temperature (paper: 0.5).
    top_p: nucleus mass (1.0 = off).
    max_tokens: new-token budget of one candidate.
    max_searches: REMAINING_SEARCHES at the start (paper: at most 10); every
      tool call (search or calculation) uses one.
    results_per_search: hits asked of the search tool (paper: top-3).
    max_attempts: sampling rounds per step before the trajectory fails.
    base_seed: the root of every sampling seed.
    policy: a label of the policy, stored in the trajectory.
    tools: 'search', plus 'calculator' to allow `Calculate` decisions.
    action_head: give the model each step's statement head after the prompt
      (`prompts.ACTION_HEADS`, e.g. `ACTION_SELECTED: Answer =
      Answer(thoughts=`), so it writes the statement its step type declares
      instead of choosing one (a small model trained mostly on summaries
      writes `LinkSelection(` in answer steps). Completions keep the head.
    constrain: decode every step inside its statement's grammar
      (`step_grammars`: the fields of the step's type in order, string
      literals, a summary's ids among the current results), so model output
      always has the step's shape; backends that cannot constrain ignore it.
  """
  num_samples: int = 4
  temperature: float = 0.5
  top_p: float = 1.0
  max_tokens: int = 256
  max_searches: int = 10
  results_per_search: int = 3
  max_attempts: int = 3
  base_seed: int = 0
  policy: str = ''
  tools: tuple[str, ...] = prompts.DEFAULT_TOOLS
  action_head: bool = False
  constrain: bool = False

  def validate(self) -> None:
    for name in ('num_samples', 'max_attempts', 'results_per_search'):
      if getattr(self, name) < 1:
        raise errors.UserError(f'AgentConfig.{name} must be >= 1, got {getattr(self, name)}')
    if self.max_searches < 0:
      raise errors.UserError(f'AgentConfig.max_searches must be >= 0, got {self.max_searches}')
    prompts.normalize_tools(self.tools)


@dataclasses.dataclass(frozen=True)
class LLMCall:
  """Sample the request; give the agent its samples (one list of `n`)."""
  request: SamplingRequest
  step_type: str


@dataclasses.dataclass(frozen=True)
class SearchCall:
  """Search `query` for `k` hits; give the agent the list of `ResultItem`s."""
  query: str
  k: int


@dataclasses.dataclass(frozen=True)
class Finished:
  """The trajectory is complete (status 'ok' or 'failed')."""
  trajectory: Trajectory


Request = Union[LLMCall, SearchCall, Finished]


def derive_seed(base_seed: int, question_id: str, repeat: int, step_index: int,
                attempt: int) -> int:
  """A 31-bit sampling seed from the trajectory coordinates (stable across runs)."""
  key = f'{base_seed}|{question_id}|{repeat}|{step_index}|{attempt}'.encode('utf-8', 'replace')
  return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), 'little') & 0x7FFFFFFF


def choose_min_perplexity(candidates: Sequence[Candidate]) -> int | None:
  """Index of the parseable candidate with the lowest perplexity, or None."""
  best, best_ppl = None, float('inf')
  for i, c in enumerate(candidates):
    if c.parse['ok'] and (best is None or c.perplexity < best_ppl):
      best, best_ppl = i, c.perplexity
  return best


# Picks the candidate a step continues with: (trajectory so far, the step with
# its candidates, not yet appended) -> a parseable candidate's index, or None
# when none parses. It may append candidates of its own to `step.candidates`
# first (a rater's revision); they are recorded with the step.
Chooser = Callable[[Trajectory, Step], Optional[int]]


class Agent:
  """One question's trajectory as a state machine (see module docstring).

  Args:
    question: the question text.
    prompter: renders prompts (shared by all agents of a rollout).
    config: sampling and budget settings.
    question_id: stable id of the question (seeds and resuming use it).
    repeat: which of the R rollouts of this question.
    chooser: picks the candidate each step continues with (default: lowest
      perplexity). Its pick must parse; anything else falls back to the
      lowest perplexity.
  """

  def __init__(self, question: str, *, prompter: prompts.Prompter,
               config: AgentConfig = AgentConfig(), question_id: str = '', repeat: int = 0,
               chooser: Chooser | None = None):
    self.prompter = prompter
    self.config = config
    self.chooser = chooser
    self.trajectory = Trajectory(question_id=question_id, question=question, repeat=repeat,
                                 seed=config.base_seed, policy=config.policy)
    self._past: list[dict[str, Any]] = []
    self._remaining = config.max_searches
    self._next_link_id = 1
    self._answer = ''
    self._step: Step | None = None  # the LLM step awaiting samples
    self._results: tuple[ResultItem, ...] = ()  # CURRENT_SEARCH_RESULTS
    self._waiting_search = False
    self._finished: Finished | None = None

  # -- the door -------------------------------------------------------------

  def next(self, last_result: Any = None, elapsed_s: float = 0.0) -> Request:
    """Consumes the previous request's result and returns the next request.

    Args:
      last_result: None at the start; `list[Sample]` after an `LLMCall`;
        `list[ResultItem]` after a `SearchCall`.
      elapsed_s: wall time of the call that produced `last_result` (recorded
        in the step's timings).

    Returns:
      An `LLMCall`, a `SearchCall`, or `Finished`.
    """
    if self._finished is not None:
      return self._finished
    try:
      if self._waiting_search:
        return self._on_search(last_result, elapsed_s)
      if self._step is not None:
        return self._on_samples(last_result, elapsed_s)
      return self._start_step('decision' if self._remaining > 0 else 'answer')
    except Exception as e:  # pylint: disable=broad-except
      # A rollout of thousands must not die on one odd result; the failure is
      # recorded where the ranker and the report will see it.
      return self._fail(f'agent_error: {type(e).__name__}: {e}')

  # -- steps ----------------------------------------------------------------

  def _state(self, step_type: str, results: Sequence[ResultItem] = ()) -> prompts.PromptState:
    return prompts.PromptState(
        question=self.trajectory.question, past_actions=tuple(self._past),
        remaining_searches=self._remaining, current_results=tuple(results),
        answer=self._answer)

  def _start_step(self, step_type: str, results: Sequence[ResultItem] = ()) -> LLMCall:
    if step_type == 'answer' and not (self._past and self._past[-1]['type'] == 'Terminate'):
      self._past.append({'type': 'Terminate', 'thoughts': prompts.FORCED_TERMINATE_THOUGHTS})
    prompt, prefix_len = self.prompter.render(step_type, self._state(step_type, results),
                                              tools=self.config.tools)
    self._step = Step(step_type=step_type, prompt=prompt, prefix_len=prefix_len)
    self._results = tuple(results)
    return self._llm_call()

  def _llm_call(self) -> LLMCall:
    step = self._step
    seed = derive_seed(self.config.base_seed, self.trajectory.question_id,
                       self.trajectory.repeat, len(self.trajectory.steps), step.attempts)
    pattern = None
    if self.config.constrain:
      pattern = step_grammars.step_grammar(step.step_type, self.config.tools,
                                           [r.link_id for r in self._results])
    request = SamplingRequest(
        prompt=step.prompt, n=self.config.num_samples, temperature=self.config.temperature,
        top_p=self.config.top_p, max_tokens=self.config.max_tokens, stop=(END_MARKER,),
        seed=seed, prefix=step.prompt[:step.prefix_len],
        response_prefix=prompts.ACTION_HEADS[step.step_type] if self.config.action_head else '',
        grammar=pattern)
    return LLMCall(request=request, step_type=step.step_type)

  def _on_samples(self, samples: Sequence[Sample] | None, elapsed_s: float) -> Request:
    step = self._step
    seed = derive_seed(self.config.base_seed, self.trajectory.question_id,
                       self.trajectory.repeat, len(self.trajectory.steps), step.attempts)
    step.attempts += 1
    step.timings['llm_s'] = step.timings.get('llm_s', 0.0) + float(elapsed_s)
    valid = [r.link_id for r in self._results] if step.step_type == 'summarize' else None
    step.candidates = [self._candidate(step.step_type, s, valid, self.config.tools)
                       for s in samples or ()]
    step.chosen = self._choose(step)
    if step.chosen is None:
      step.parse_events.append({
          'attempt': step.attempts - 1, 'seed': seed,
          'errors': [c.parse['error'] for c in step.candidates]})
      if step.attempts < self.config.max_attempts:
        return self._llm_call()
      self.trajectory.steps.append(step)
      self._step = None
      return self._fail(f'parse_failed: {step.step_type} after {step.attempts} attempts')
    self.trajectory.steps.append(step)
    self._step = None
    return self._apply(step, step.action)

  def _choose(self, step: Step) -> int | None:
    fallback = choose_min_perplexity(step.candidates)
    if self.chooser is None:
      return fallback
    # Asked even when nothing parses: a chooser may add a candidate of its own.
    pick = self.chooser(self.trajectory, step)
    if isinstance(pick, int) and 0 <= pick < len(step.candidates) and (
        step.candidates[pick].parse['ok']):
      return pick
    return fallback

  @staticmethod
  def _candidate(step_type: str, sample: Sample, valid: Sequence[int] | None,
                 tools: Sequence[str]) -> Candidate:
    result = parsing.parse_step(step_type, sample.text, valid_link_ids=valid, tools=tools)
    return Candidate(
        text=sample.text, logprobs=[float(x) for x in sample.logprobs],
        perplexity=sample.perplexity, finish_reason=sample.finish_reason,
        parse={'ok': result.ok, 'action': result.action, 'error': result.error})

  def _apply(self, step: Step, action: dict[str, Any]) -> Request:
    kind = step.step_type
    if kind == 'decision':
      if action['type'] == 'Search':
        self._past.append(dict(action))
        self._waiting_search = True
        return SearchCall(query=action['query'], k=self.config.results_per_search)
      if action['type'] == 'Calculate':
        return self._calculate(step, action['expression'])
      self._past.append({'type': 'Terminate', 'thoughts': action['thoughts']})
      return self._start_step('answer')
    if kind == 'summarize':
      by_id = {r.link_id: r for r in self._results}
      selected = [by_id[i] for i in action['selected_link_ids']]
      self._past.append({
          'type': 'SelectLink', 'selected_links': selected,
          'grounded_summarization': action['grounded_summarization'],
          'thoughts': action['thoughts']})
      return self._start_step('decision' if self._remaining > 0 else 'answer')
    if kind == 'answer':
      self._answer = action['answer']
      self.trajectory.answer_generation = self._answer
      self._past.append(dict(action))
      return self._start_step('relevance')
    if action['type'] == 'Revise_Answer':
      self._answer = action['revised_answer']
      self._past.append(dict(action))
    if kind == 'relevance':
      return self._start_step('grounding')
    self.trajectory.final_answer = self._answer
    self.trajectory.status = 'ok'
    self._finished = Finished(self.trajectory)
    return self._finished

  def _on_search(self, hits: Sequence[ResultItem] | None, elapsed_s: float) -> Request:
    self._waiting_search = False
    decision = self.trajectory.steps[-1]
    results = []
    for hit in hits or ():
      results.append(ResultItem(link_id=self._next_link_id, link_text=str(hit.link_text),
                                snippet=str(hit.snippet), doc_id=str(hit.doc_id)))
      self._next_link_id += 1
    decision.tool = ToolCall(query=decision.action['query'], results=results)
    decision.timings['search_s'] = float(elapsed_s)
    self._remaining -= 1
    self.trajectory.num_searches += 1
    return self._start_step('summarize', results)

  def _calculate(self, step: Step, expression: str) -> Request:
    result = calculator.calculate(expression)
    step.tool = ToolCall(query=expression, results=[], name='calculator', result=result)
    self._past.append({'type': 'Calculate', 'expression': expression, 'result': result})
    self._remaining -= 1
    return self._start_step('decision' if self._remaining > 0 else 'answer')

  def _fail(self, reason: str) -> Finished:
    self.trajectory.status = 'failed'
    self.trajectory.failure = reason
    self.trajectory.final_answer = None
    self._step = None
    self._finished = Finished(self.trajectory)
    return self._finished


# ---------------------------------------------------------------------------
# Exemplar replay (prompts.exemplar_steps calls this).


def replay_exemplar(exemplar: prompts.ExemplarTrajectory,
                    max_searches: int = 10) -> dict[str, list[tuple[str, str]]]:
  """Runs a hand-written trajectory through the agent to render its steps.

  Args:
    exemplar: the trajectory to replay.
    max_searches: the search budget the prompts show (REMAINING_SEARCHES
      starts here; raised to one more than the trajectory's searches so
      that its Terminate decision is shown).

  Returns:
    step type -> `(state, target)` pairs in trajectory order.

  Raises:
    UserError: an output of the exemplar does not parse, or its link ids do
      not follow the trajectory numbering (names the exemplar).
  """
  targets: list[str] = []
  hits: list[list[ResultItem]] = []
  link_id = 1
  for i, search in enumerate(exemplar.searches):
    if 'calculate' in search:
      # Evaluated by the agent itself: no hits, no summary step.
      targets.append(prompts.render_target('decision', {
          'type': 'Calculate', 'expression': search['calculate'],
          'thoughts': search['thoughts']}))
      continue
    targets.append(prompts.render_target(
        'decision', {'type': 'Search', 'query': search['query'], 'thoughts': search['thoughts']}))
    items = []
    for r in search['results']:
      if 'link_id' in r and r['link_id'] != link_id:
        raise errors.UserError(
            f'exemplar {exemplar.name}: searches[{i}] link_id {r["link_id"]} should be {link_id} '
            '(ids run on across the trajectory)')
      items.append(ResultItem(link_id=link_id, link_text=r['link_text'], snippet=r['snippet'],
                              doc_id=r.get('doc_id', '')))
      link_id += 1
    hits.append(items)
    summary = search['summary']
    targets.append(prompts.render_target('summarize', {
        'type': 'LinkSelection', 'grounded_summarization': summary['grounded_summarization'],
        'thoughts': summary['thoughts'], 'selected_link_ids': summary['selected_link_ids']},
        summary.get('comments', ())))
  targets.append(prompts.render_target(
      'decision', {'type': 'Terminate', 'thoughts': exemplar.terminate_thoughts}))
  targets.append(prompts.render_target('answer', {'type': 'Answer', **exemplar.answer}))
  for kind in ('relevance', 'grounding'):
    check = getattr(exemplar, kind)
    action = ({'type': 'Revise_Answer', 'revised_answer': check['revised_answer']}
              if 'revised_answer' in check else {'type': 'Check_Answer', 'passed': True})
    targets.append(prompts.render_target(kind, action, check.get('comments', ())))

  agent = Agent(exemplar.question, prompter=prompts.Prompter(None, 0),
                config=AgentConfig(num_samples=1, max_attempts=1,
                                   max_searches=max(max_searches, len(exemplar.searches) + 1),
                                   tools=exemplar.tools),
                question_id=exemplar.name)
  request = agent.next(None)
  t = h = 0
  while not isinstance(request, Finished):
    if isinstance(request, LLMCall):
      if t >= len(targets):
        raise errors.UserError(f'exemplar {exemplar.name}: the replay asked for more steps')
      text = targets[t]
      t += 1
      request = agent.next([Sample(text=text, tokens=(0,), logprobs=(0.0,),
                                   finish_reason='stop')])
    else:
      request = agent.next(hits[h])
      h += 1
  traj = request.trajectory
  if traj.status != 'ok' or t != len(targets):
    detail = traj.failure or 'unused outputs'
    if traj.steps and traj.steps[-1].chosen is None and traj.steps[-1].parse_events:
      detail += f' ({traj.steps[-1].parse_events[-1]["errors"]})'
    raise errors.UserError(f'exemplar {exemplar.name}: does not replay: {detail}')
  out: dict[str, list[tuple[str, str]]] = {k: [] for k in prompts.STEP_TYPES}
  for step in traj.steps:
    out[step.step_type].append((step.prompt[step.prefix_len:],
                                step.candidates[step.chosen].text))
  return out
