"""Code-as-prompt rendering of the agent's five step types.

Every prompt is Python source (arXiv 2312.10003 §3.1). A prompt is

  preamble  = module docstring + dataclass definitions + `# Example N:`
              exemplars (each ends with `# [END]`) + the open example's banner
  state     = ORIGINAL_QUESTION, PAST_ACTIONS, the step's own globals
              (REMAINING_SEARCHES / CURRENT_SEARCH_RESULTS / ANSWER) and the
              question repeated

and the model continues it with optional `# comment` lines followed by
`ACTION_SELECTED[: Type] = Ctor(...)` and the stop marker `# [END]`. The
preamble is identical for every request of a step type, so it is passed as
`SamplingRequest.prefix` for the engine to prefill once.

With no exemplars (fine-tuned policies, whose contexts are short) the preamble
shrinks to the step's one-line docstring, which still tells the step types
apart.

Untrusted text (questions, titles, snippets, the model's own thoughts, queries,
summaries and answers) only ever enters the code through `py_str` (one valid
string literal with the same value, `# [END]` neutralised) or `py_comment` (one
comment line), so it can neither close a literal, add code, nor fake the stop
marker.

Revisions: when the relevance check returns `Revise_Answer`, the grounding
prompt shows it as the last entry of PAST_ACTIONS,
`Revise_Answer(revised_answer='...')`, and ANSWER holds the revised text.

When the search budget is used up the agent skips the decision step; the
answer prompt then shows `Terminate(thoughts='No searches remain.')` as the
last past action (`FORCED_TERMINATE_THOUGHTS`).

Tools: with `tools=('search', 'calculator')` the decision step may also write
`ActionWrapper(thoughts=..., action=Calculate(expression='1974 - 1931'))`. The
decision docstring then says so (`TOOL_DOCSTRINGS`), full preambles define
`Calculate`, and a calculation shows in PAST_ACTIONS with its result,
`Calculate(expression='1974 - 1931', result='43')`. With the default tools
every prompt is exactly what it was before tools existed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from typing import Any, Mapping, Sequence

from restreact_jax import errors
from restreact_jax.llm import END_MARKER
from restreact_jax.search.types import ResultItem

STEP_TYPES = ('decision', 'summarize', 'answer', 'relevance', 'grounding')

# The paper's shot counts (Appendix A.1), used when `num_exemplars` is None.
PAPER_SHOTS = {'decision': 9, 'summarize': 6, 'answer': 5, 'relevance': 6, 'grounding': 5}

EXEMPLAR_SETS = ('world', 'open_domain', 'world_tools')
EXEMPLAR_DIR = pathlib.Path(__file__).resolve().parent / 'exemplars'
# A set built on others: its files are theirs plus those of its own directory.
_SET_PARTS = {'world_tools': ('world', 'world_tools')}

# The agent's tools; search is always on, the calculator is opt-in.
TOOLS = ('search', 'calculator')
DEFAULT_TOOLS = ('search',)

# The fixed start of the statement each step type's completion is: the
# variable, the type the step's code declares and, where the type has a
# single constructor, the call up to its first field's value (the checks
# choose between two commands). `render_target` writes it; with
# `AgentConfig.action_head` the model is given it and writes the rest. Each
# ends where the project's vocabularies split a target (tests/test_prompts.py),
# so the model reads the very tokens it was trained to write.
ACTION_HEADS = {
    'decision': 'ACTION_SELECTED = ActionWrapper(thoughts=',
    'summarize': 'ACTION_SELECTED: LinkSelection = LinkSelection(grounded_summarization=',
    'answer': 'ACTION_SELECTED: Answer = Answer(thoughts=',
    'relevance': 'ACTION_SELECTED: Command =',
    'grounding': 'ACTION_SELECTED: Command =',
}

FORCED_TERMINATE_THOUGHTS = 'No searches remain.'
INDENT = '  '

DOCSTRINGS = {
    'decision': ('Implement an agent that answers complex questions by '
                 'searching, possibly several times.'),
    'summarize': ('Step 2 of the search-and-answer procedure: filter the '
                  'search results and summarize the relevant ones.'),
    'answer': ('Step 3 of the multi-round search agent: write the answer from '
               'all the collected search results.'),
    'relevance': ('Self-check 1: does the ANSWER address the '
                  'ORIGINAL_QUESTION? Revise it if it does not.'),
    'grounding': ('Self-check 2: is every claim of the ANSWER supported by the '
                  'SelectLinks in PAST_ACTIONS? Revise it if it is not.'),
}

# The decision docstring when the calculator is on (the other steps keep theirs).
TOOL_DOCSTRINGS = {
    'decision': ('Implement an agent that answers complex questions by '
                 'searching, possibly several times, and by calculating with the '
                 'numbers it finds.'),
}

_ACTION_DEFS = '''import dataclasses
from typing import List


class Action:
  """Base class of all actions."""


@dataclasses.dataclass
class ResultItem:
  link_id: int  # Unique across the whole trajectory; cite as [link_id=N].
  link_text: str  # The page title.
  snippet: str


@dataclasses.dataclass
class SearchResult:
  links: List[ResultItem]


@dataclasses.dataclass
class Search(Action):
  query: str  # The query sent to the search engine.
  thoughts: str = ''  # Why this search.


@dataclasses.dataclass
class SelectLink(Action):
  selected_links: List[ResultItem]
  grounded_summarization: str  # Cites the links it uses: [link_id=N].
  thoughts: str = ''


@dataclasses.dataclass
class Terminate(Action):
  thoughts: str = ''  # Why the collected results are enough.


@dataclasses.dataclass
class Answer(Action):
  thoughts: str
  answer: str  # Cites the links it uses: [link_id=N].
'''

_CALCULATE_DEF = '''

@dataclasses.dataclass
class Calculate(Action):
  expression: str  # Numbers with + - * / // % and parentheses only.
  thoughts: str = ''  # Why this calculation.
  result: str = ''  # Filled in by the calculator.
'''

_STEP_DEFS = {
    'decision': '''

@dataclasses.dataclass
class ActionWrapper:
  """The reasoning together with the selected action."""
  thoughts: str  # Record your thoughts on why we should do this action.
  action: Action  # Search(query=...) or Terminate().
''',
    'summarize': '''

@dataclasses.dataclass
class LinkSelection:
  """Comment first on every link that is not selected."""
  grounded_summarization: str  # 'Nothing is selected.' if none is.
  thoughts: str
  selected_link_ids: List[int]
''',
    'answer': '',
    'relevance': '''

class Command:
  """The outcome of a self-check."""


@dataclasses.dataclass
class Check_Answer(Command):
  passed: bool


@dataclasses.dataclass
class Revise_Answer(Command):
  """Revise the answer if it did not pass the check, based on information
  from SelectLinks in PAST_ACTIONS."""
  revised_answer: str
''',
}
_STEP_DEFS['grounding'] = _STEP_DEFS['relevance']
_TOOL_DECISION_DEF = _STEP_DEFS['decision'].replace(
    'Search(query=...) or Terminate().',
    'Search(query=...), Calculate(expression=...) or Terminate().')

_BANNER = '#########################'


# ---------------------------------------------------------------------------
# Tools.


def normalize_tools(tools: Sequence[str] | str | None) -> tuple[str, ...]:
  """The tools in canonical order (that of `TOOLS`), checked.

  Args:
    tools: tool names (any order, repeats allowed), a comma-separated string,
      or None for `DEFAULT_TOOLS`.

  Returns:
    A tuple in `TOOLS` order.

  Raises:
    UserError: an unknown tool, or no 'search' (the agent is a search agent).
  """
  if tools is None:
    return DEFAULT_TOOLS
  if isinstance(tools, str):
    tools = [t.strip() for t in tools.split(',') if t.strip()]
  names = [str(t) for t in tools]
  unknown = [t for t in names if t not in TOOLS]
  if unknown:
    raise errors.UserError(
        f'unknown tool {unknown[0]!r} in tools {tuple(names)}; choose from {", ".join(TOOLS)}')
  if 'search' not in names:
    raise errors.UserError(f"tools {tuple(names)} must include 'search'")
  return tuple(t for t in TOOLS if t in names)


def has_calculator(tools: Sequence[str] | None) -> bool:
  """Whether `tools` turn the calculator on."""
  return tools is not None and 'calculator' in tools


# ---------------------------------------------------------------------------
# Safe literals and comments.


def py_str(text: str) -> str:
  """Returns one Python string literal whose value is exactly `text`.

  `repr` always yields a single valid literal; every `#` it emits is a literal
  character (never part of an escape), so rewriting `# [END]` as `\\x23 [END]`
  keeps the value while the stop marker cannot appear in the source.

  Args:
    text: any string (untrusted).

  Returns:
    The literal's source text.
  """
  if not isinstance(text, str):
    text = str(text)
  return repr(text).replace(END_MARKER, '\\x23 [END]')


def py_comment(text: str) -> str:
  """Returns `# text` as one comment line that cannot break the code.

  Line breaks and other non-printable characters become spaces and `[END]`
  becomes `(END)`, so the comment neither ends early nor fakes the stop marker.

  Args:
    text: any string (untrusted).

  Returns:
    A single line starting with `# `.
  """
  clean = ''.join(ch if ch.isprintable() else ' ' for ch in str(text))
  return '# ' + clean.replace('[END]', '(END)').strip()


# ---------------------------------------------------------------------------
# State rendering.


def render_result_item(item: ResultItem) -> str:
  return (f'ResultItem(link_id={int(item.link_id)}, link_text={py_str(item.link_text)}, '
          f'snippet={py_str(item.snippet)})')


def _render_items(items: Sequence[ResultItem], depth: int) -> str:
  if not items:
    return '[]'
  pad = INDENT * (depth + 1)
  body = ''.join(f'{pad}{render_result_item(it)},\n' for it in items)
  return '[\n' + body + INDENT * depth + ']'


def render_action(action: Mapping[str, Any], depth: int = 1) -> str:
  """Renders one PAST_ACTIONS entry.

  Args:
    action: a dict with `type` in {Search, Calculate, SelectLink, Terminate,
      Answer, Revise_Answer} and that type's fields (`selected_links` holds
      `ResultItem`s; a Calculate carries the calculator's `result`).
    depth: indentation level of the entry.

  Returns:
    The constructor call's source (no trailing comma).
  """
  kind = action['type']
  if kind == 'Search':
    return f'Search(query={py_str(action["query"])}, thoughts={py_str(action["thoughts"])})'
  if kind == 'Calculate':
    return (f'Calculate(expression={py_str(action["expression"])}, '
            f'result={py_str(action["result"])})')
  if kind == 'SelectLink':
    return (f'SelectLink(selected_links={_render_items(action["selected_links"], depth)}, '
            f'grounded_summarization={py_str(action["grounded_summarization"])}, '
            f'thoughts={py_str(action["thoughts"])})')
  if kind == 'Terminate':
    return f'Terminate(thoughts={py_str(action["thoughts"])})'
  if kind == 'Answer':
    return f'Answer(thoughts={py_str(action["thoughts"])}, answer={py_str(action["answer"])})'
  if kind == 'Revise_Answer':
    return f'Revise_Answer(revised_answer={py_str(action["revised_answer"])})'
  raise ValueError(f'cannot render past action of type {kind!r}')


@dataclasses.dataclass(frozen=True)
class PromptState:
  """What a step's prompt shows besides the preamble.

  Attributes:
    question: the original question.
    past_actions: PAST_ACTIONS entries (see `render_action`).
    remaining_searches: REMAINING_SEARCHES (decision step).
    current_results: CURRENT_SEARCH_RESULTS (summarize step).
    answer: ANSWER (self-check steps).
  """
  question: str
  past_actions: tuple[Mapping[str, Any], ...] = ()
  remaining_searches: int = 0
  current_results: tuple[ResultItem, ...] = ()
  answer: str = ''


def render_state(step_type: str, state: PromptState) -> str:
  """Renders the state globals of one step, ending with the repeated question.

  Args:
    step_type: one of `STEP_TYPES`.
    state: what to show.

  Returns:
    Source text ending in a newline; the model continues after it.
  """
  q = f'ORIGINAL_QUESTION: str = {py_str(state.question)}\n'
  lines = [q]
  if state.past_actions:
    body = ''.join(f'{INDENT}{render_action(a)},\n' for a in state.past_actions)
    lines.append(f'PAST_ACTIONS: List[Action] = [\n{body}]\n')
  else:
    lines.append('PAST_ACTIONS: List[Action] = []\n')
  if step_type == 'decision':
    lines.append(f'REMAINING_SEARCHES: int = {int(state.remaining_searches)}\n')
  elif step_type == 'summarize':
    lines.append('CURRENT_SEARCH_RESULTS = SearchResult(links='
                 f'{_render_items(state.current_results, 0)})\n')
  elif step_type in ('relevance', 'grounding'):
    lines.append(f'ANSWER: str = {py_str(state.answer)}\n')
  elif step_type != 'answer':
    raise ValueError(f'unknown step type {step_type!r}')
  lines.append(q)
  return ''.join(lines)


def render_target(step_type: str, action: Mapping[str, Any],
                  comments: Sequence[str] = ()) -> str:
  """Renders a chosen action the way the model is meant to write it.

  The inverse of `parsing.parse_step` (for canonical outputs); used for
  exemplars and by anyone building targets from structured actions.

  Args:
    step_type: one of `STEP_TYPES`.
    action: an action dict as `parsing.ParseResult.action` returns.
    comments: reasoning lines written before the action.

  Returns:
    The completion text, without the `# [END]` stop marker.
  """
  if step_type not in ACTION_HEADS:
    raise ValueError(f'unknown step type {step_type!r}')
  head = ''.join(py_comment(c) + '\n' for c in comments) + ACTION_HEADS[step_type]
  kind = action['type']
  if step_type == 'decision':
    if kind == 'Search':
      inner = f'Search(query={py_str(action["query"])})'
    elif kind == 'Calculate':
      inner = f'Calculate(expression={py_str(action["expression"])})'
    else:
      inner = 'Terminate()'
    return head + f'{py_str(action["thoughts"])}, action={inner})'
  if step_type == 'summarize':
    ids = ', '.join(str(int(i)) for i in action['selected_link_ids'])
    return head + (f'{py_str(action["grounded_summarization"])}, '
                   f'thoughts={py_str(action["thoughts"])}, selected_link_ids=[{ids}])')
  if step_type == 'answer':
    return head + f'{py_str(action["thoughts"])}, answer={py_str(action["answer"])})'
  if kind == 'Check_Answer':
    return head + f' Check_Answer(passed={bool(action["passed"])})'
  return head + f' Revise_Answer(revised_answer={py_str(action["revised_answer"])})'


# ---------------------------------------------------------------------------
# Preambles and exemplars.


def banner(n: int) -> str:
  return f'{_BANNER}\n# Example {n}:\n{_BANNER}\n'


def docstring(step_type: str, tools: Sequence[str] = DEFAULT_TOOLS) -> str:
  """The step's one-line docstring; the decision's names the calculator when on."""
  if has_calculator(tools) and step_type in TOOL_DOCSTRINGS:
    return TOOL_DOCSTRINGS[step_type]
  return DOCSTRINGS[step_type]


def compact_preamble(step_type: str, tools: Sequence[str] = DEFAULT_TOOLS) -> str:
  """The no-exemplar preamble: the step's docstring only (short contexts)."""
  return f'"""{docstring(step_type, tools)}"""\n\n'


def full_preamble(step_type: str, exemplars: Sequence[tuple[str, str]],
                  tools: Sequence[str] = DEFAULT_TOOLS) -> str:
  """Docstring, definitions, the exemplars and the open example's banner.

  Args:
    step_type: one of `STEP_TYPES`.
    exemplars: `(state, target)` pairs, rendered as `# Example N:` blocks.
    tools: with the calculator, `Calculate` is defined (every step: any
      step's PAST_ACTIONS may hold one) and the decision docstring and
      `ActionWrapper` name it.

  Returns:
    The preamble text; the state follows it directly.
  """
  calc = has_calculator(tools)
  defs = _ACTION_DEFS + (_CALCULATE_DEF if calc else '')
  step_defs = _TOOL_DECISION_DEF if calc and step_type == 'decision' else _STEP_DEFS[step_type]
  parts = [f'"""{docstring(step_type, tools)}"""\n\n', defs, step_defs, '\n\n']
  for i, (state, target) in enumerate(exemplars, start=1):
    parts.append(banner(i))
    parts.append(state)
    parts.append(f'{target}  {END_MARKER}\n\n\n')
  parts.append(banner(len(exemplars) + 1))
  return ''.join(parts)


def detect_step_type(prompt: str) -> str | None:
  """Which step a prompt belongs to (from its docstring, any tools), or None."""
  for step_type, doc in [*DOCSTRINGS.items(), *TOOL_DOCSTRINGS.items()]:
    if prompt.startswith(f'"""{doc}"""'):
      return step_type
  return None


@dataclasses.dataclass(frozen=True)
class ExemplarTrajectory:
  """One hand-written trajectory from `exemplars/<set>/*.json` (see README there)."""
  name: str
  question: str
  searches: tuple[Mapping[str, Any], ...]
  terminate_thoughts: str
  answer: Mapping[str, Any]
  relevance: Mapping[str, Any]
  grounding: Mapping[str, Any]
  entities: tuple[str, ...] = ()
  template_id: str = ''

  @property
  def uses_calculator(self) -> bool:
    """Whether a `searches` entry is a calculation (`{"thoughts", "calculate"}`)."""
    return any('calculate' in s for s in self.searches)

  @property
  def tools(self) -> tuple[str, ...]:
    """The tools the trajectory needs."""
    return TOOLS if self.uses_calculator else DEFAULT_TOOLS


_REQUIRED_KEYS = ('question', 'searches', 'terminate_thoughts', 'answer', 'relevance', 'grounding')


def load_exemplar_file(path: str | pathlib.Path) -> ExemplarTrajectory:
  """Reads and checks one exemplar trajectory file.

  Raises:
    UserError: the file is not valid JSON or misses a field (names the file).
  """
  path = pathlib.Path(path)
  try:
    raw = json.loads(path.read_text(encoding='utf-8'))
  except (OSError, json.JSONDecodeError) as e:
    raise errors.UserError(f'exemplar file {path}: cannot read JSON ({e})') from None
  missing = [k for k in _REQUIRED_KEYS if k not in raw]
  if missing:
    raise errors.UserError(f'exemplar file {path}: missing {", ".join(missing)}')
  for i, s in enumerate(raw['searches']):
    # A tool call is a search (query, results, summary) or a calculation.
    keys = ('thoughts', 'calculate') if 'calculate' in s else (
        'thoughts', 'query', 'results', 'summary')
    for key in keys:
      if key not in s:
        raise errors.UserError(f'exemplar file {path}: searches[{i}] lacks {key!r}')
  return ExemplarTrajectory(
      name=path.stem, question=raw['question'], searches=tuple(raw['searches']),
      terminate_thoughts=raw['terminate_thoughts'], answer=raw['answer'],
      relevance=raw['relevance'], grounding=raw['grounding'],
      entities=tuple(raw.get('entities', ())), template_id=raw.get('template_id', ''))


@functools.lru_cache(maxsize=None)
def load_exemplar_set(name: str) -> tuple[ExemplarTrajectory, ...]:
  """All trajectories of one exemplar set, in file-name order.

  A set listed in `_SET_PARTS` holds the files of its parts, part by part
  ('world_tools' = the 'world' files, then its own).
  """
  if name not in EXEMPLAR_SETS:
    raise errors.UserError(
        f'unknown exemplar set {name!r}; choose one of {", ".join(EXEMPLAR_SETS)}')
  out = []
  for part in _SET_PARTS.get(name, (name,)):
    directory = EXEMPLAR_DIR / part
    if not directory.is_dir():
      raise errors.UserError(f'exemplar set {name!r}: directory {part!r} is missing')
    out.extend(load_exemplar_file(p) for p in sorted(directory.glob('*.json')))
  return tuple(out)


def exemplar_set_tools(name: str | None) -> tuple[str, ...]:
  """The tools an exemplar set's trajectories use (a policy seeded on it needs them)."""
  if not name:
    return DEFAULT_TOOLS
  needed = {t for traj in load_exemplar_set(name) for t in traj.tools}
  return normalize_tools(sorted(needed))


def exemplar_steps(trajectory: ExemplarTrajectory,
                   max_searches: int = 10) -> dict[str, list[tuple[str, str]]]:
  """Replays an exemplar through the agent, giving `(state, target)` per step.

  The replay uses the agent's own state machine and renderer, so exemplars
  show exactly the layout that live prompts have.

  Args:
    trajectory: the exemplar.
    max_searches: the search budget its prompts show.

  Returns:
    step type -> the `(state, target)` pairs of that type, in order.

  Raises:
    UserError: the exemplar's outputs do not parse (names the file).
  """
  from restreact_jax.agent import agent as agent_lib  # pylint: disable=g-import-not-at-top
  return agent_lib.replay_exemplar(trajectory, max_searches)


def select_exemplars(step_type: str, trajectories: Sequence[ExemplarTrajectory],
                     k: int) -> list[tuple[str, str]]:
  """Picks `k` exemplars of `step_type`: one per trajectory, in file order.

  Trajectory i contributes its decision step `i mod (#decisions)` and its
  summarize step `i mod (#searches)`, so a set mixes `Search` and `Terminate`
  decisions and early and late summaries. A trajectory that calculates
  contributes its first calculation as its decision: showing the tool is what
  it is there for.
  """
  out = []
  for i, traj in enumerate(trajectories):
    if len(out) >= k:
      break
    steps = exemplar_steps(traj)[step_type]
    if not steps:
      continue
    if step_type == 'decision' and traj.uses_calculator:
      # Decisions follow `searches` one to one, then the Terminate.
      out.append(steps[next(j for j, s in enumerate(traj.searches) if 'calculate' in s)])
    else:
      out.append(steps[i % len(steps)])
  return out


class Prompter:
  """Renders full prompts for the five step types with fixed preambles.

  Preambles depend on the agent's tools; `preambles` holds those of the
  default tools and `preambles_for(tools)` any others (built once, on first
  use). Exemplars that calculate are left out of prompts without the
  calculator, so 'world_tools' without it shows exactly the 'world' prompts.

  Args:
    exemplar_set: 'world', 'open_domain', 'world_tools', or None for no
      exemplars.
    num_exemplars: shots per step type; None = the paper's counts (capped by
      what the set holds); 0 = the compact preamble.
  """

  def __init__(self, exemplar_set: str | None = None, num_exemplars: int | None = 0):
    self.exemplar_set = exemplar_set
    self.num_exemplars = num_exemplars
    self._trajectories = load_exemplar_set(exemplar_set) if exemplar_set else ()
    self._by_tools: dict[tuple[str, ...], dict[str, str]] = {}
    self.preambles: dict[str, str] = self.preambles_for(DEFAULT_TOOLS)

  def preambles_for(self, tools: Sequence[str]) -> dict[str, str]:
    """step type -> preamble for an agent with `tools`."""
    key = normalize_tools(tools)
    if key not in self._by_tools:
      calc = has_calculator(key)
      trajectories = [t for t in self._trajectories if calc or not t.uses_calculator]
      preambles = {}
      for step_type in STEP_TYPES:
        k = PAPER_SHOTS[step_type] if self.num_exemplars is None else self.num_exemplars
        if not trajectories or k <= 0:
          preambles[step_type] = compact_preamble(step_type, key)
        else:
          preambles[step_type] = full_preamble(
              step_type, select_exemplars(step_type, trajectories, k), key)
      self._by_tools[key] = preambles
    return self._by_tools[key]

  def render(self, step_type: str, state: PromptState,
             tools: Sequence[str] = DEFAULT_TOOLS) -> tuple[str, int]:
    """Returns `(prompt, prefix_len)`; `prompt[:prefix_len]` is the preamble.

    Args:
      step_type: one of `STEP_TYPES`.
      state: what the prompt shows.
      tools: the agent's tools (they change the decision docstring and the
        definitions).
    """
    preamble = self.preambles_for(tools)[step_type]
    return preamble + render_state(step_type, state), len(preamble)
