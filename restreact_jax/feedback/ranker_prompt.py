"""The LLM ranker's prompt (0-shot, plain text) and a forgiving output parser.

The layout follows the paper's ranking "reward model" prompt (PAPER_NOTES §4):
rater instructions, `*** Model Can See:` with the step's inputs, one
`*** Model Output #k:` block per candidate, "Your Instructions", and a required
three-line answer `Explanation: ...` / `Answer: #X` / `Ranking: #X > #Y > ...`.
It targets an instruction-following model, so it is not code-formatted.

Rater outputs are messy: extra prose, missing lines, `#2>#1`, `Output 2`,
duplicates, ids out of range, only an `Answer:` line. `parse_ranking_output`
salvages what it can, fills the rest from a fallback order and records what it
repaired in `status`.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Sequence

STEP_NAMES = {
    'decision': 'deciding whether to search again (Search with a query) or to stop (Terminate)',
    'summarize': 'selecting relevant search results and summarizing them with [link_id=N] citations',
    'answer': 'writing the answer from the collected summaries, citing [link_id=N]',
    'relevance': 'checking that the answer addresses the question (pass it, or revise it)',
    'grounding': 'checking that the answer is supported by the selected links (pass it, or revise it)',
}

_INSTRUCTIONS = """\
Rater Instructions:
You are rating the actions of a search agent. The agent answers a question by
searching, selecting and summarizing relevant search results, writing an answer
that cites its sources, and checking that answer. Your ratings decide which
actions are kept as training data and which are filtered out as bad actions.
We want the agent to produce relevant and grounded answers with minimal steps.
- An action with any empty element (empty thoughts, query, summary, answer,
  comments or selection reasons) is automatically bad.
- An action that is cut off or not well formed is bad.
- A search query should follow from the question and from what was found so
  far; repeating an earlier query wastes a step.
- A summary may only state what the selected results say, citing them as
  [link_id=N]; selecting irrelevant results is bad.
- An answer must address the question, be supported by the selected results,
  and cite them.
- Stopping is good once the collected information answers the question; more
  searching is needed only when it does not.

The step being rated: {step_name}.
"""

_YOUR_INSTRUCTIONS = """\
Your Instructions:
Pick the best of the {n} model outputs above for this step. Do not assume the
model knows anything outside "Model Can See". Be specific: name the facts,
queries or link ids that make an output better or worse than the others.
Reply in exactly three lines:
Explanation: <why the best output beats the others>
Answer: #<number of the best output>
Ranking: #<best> > #<next> > ... (every output number exactly once)
"""


def render_ranker_prompt(step_type: str, inputs: str, outputs: Sequence[str]) -> str:
  """The rater prompt for one step.

  Args:
    step_type: one of the five step types.
    inputs: what the model could see (its prompt without the exemplars).
    outputs: the candidate actions, in candidate order (#1 is index 0).

  Returns:
    The prompt text.
  """
  parts = [_INSTRUCTIONS.format(step_name=STEP_NAMES.get(step_type, step_type)),
           '*** Model Can See:\n', inputs.rstrip('\n'), '\n\n']
  for k, text in enumerate(outputs, 1):
    body = text.strip('\n') if text.strip() else '(empty output)'
    parts.append(f'*** Model Output #{k}:\n{body}\n\n')
  parts.append(_YOUR_INSTRUCTIONS.format(n=len(outputs)))
  return ''.join(parts)


@dataclasses.dataclass(frozen=True)
class ParsedRanking:
  """What could be read from a rater's output.

  Attributes:
    order: a full permutation of range(n), best first.
    explanation: the explanation text ('' if absent).
    answer: the 0-based `Answer:` pick, or None.
    status: 'ok', 'fallback' (nothing usable), or 'partial:' followed by the
      repairs made (missing_answer, missing_ranking, duplicates, out_of_range,
      incomplete, conflict).
  """
  order: list[int]
  explanation: str
  answer: int | None
  status: str


_LINE_START = r'(?im)^[\s>*_`#-]*'
_EXPLANATION_RE = re.compile(_LINE_START + r'explanation[\s*_`]*:\s*(.*?)(?=^[\s>*_`#-]*(?:answer|ranking)[\s*_`]*:|\Z)',
                             re.DOTALL)
_ANSWER_RE = re.compile(_LINE_START + r'(?:best\s+)?answer[\s*_`]*:[\s*_`]*(.*)$')
_RANKING_RE = re.compile(_LINE_START + r'ranking[\s*_`]*:[\s*_`]*(.*)$')
_HASH_NUM_RE = re.compile(r'#\s*(\d+)')
_OUTPUT_NUM_RE = re.compile(r'(?:output|#)\s*#?\s*(\d+)', re.IGNORECASE)
_NUM_RE = re.compile(r'\b(\d+)\b')


def _numbers(text: str) -> list[int]:
  found = _OUTPUT_NUM_RE.findall(text)
  return [int(x) for x in (found or _NUM_RE.findall(text))]


def parse_ranking_output(text: str, n: int, fallback: Sequence[int] | None = None) -> ParsedRanking:
  """Reads `Explanation / Answer / Ranking` from a rater's reply.

  Args:
    text: the reply.
    n: the number of candidates (outputs are numbered 1..n).
    fallback: the order used for whatever the reply does not rank
      (default: candidate order).

  Returns:
    The parsed ranking; `order` is always a permutation of range(n).
  """
  fallback = list(fallback) if fallback is not None else list(range(n))
  repairs: list[str] = []
  m = _EXPLANATION_RE.search(text)
  explanation = ' '.join(m.group(1).split()) if m else ''

  answer = None
  am = _ANSWER_RE.search(text)
  if am:
    nums = _numbers(am.group(1))
    if nums and 1 <= nums[0] <= n:
      answer = nums[0] - 1
    elif nums:
      repairs.append('out_of_range')
  if answer is None:
    repairs.append('missing_answer')

  ranked: list[int] = []
  rm = _RANKING_RE.search(text)
  if rm:
    raw = _numbers(rm.group(1))
    if any(not 1 <= x <= n for x in raw):
      repairs.append('out_of_range')
    valid = [x - 1 for x in raw if 1 <= x <= n]
    for x in valid:
      if x not in ranked:
        ranked.append(x)
    if len(ranked) < len(valid):
      repairs.append('duplicates')
    if ranked and answer is not None and ranked[0] != answer:
      repairs.append('conflict')  # the explicit best pick wins
    if ranked and len(ranked) < n:
      repairs.append('incomplete')
  if not ranked:
    repairs.append('missing_ranking')

  if answer is None and not ranked:
    order = [i for i in dict.fromkeys(fallback) if 0 <= i < n]
    order += [i for i in range(n) if i not in order]
    return ParsedRanking(order, explanation, None, 'fallback')
  order = ([answer] if answer is not None else [])
  order += [i for i in ranked if i not in order]
  order += [i for i in fallback if 0 <= i < n and i not in order]
  order += [i for i in range(n) if i not in order]
  # A lone missing line is not worth a repair note when n == 1.
  if n == 1:
    repairs = []
  status = 'ok' if not repairs else 'partial:' + ','.join(dict.fromkeys(repairs))
  return ParsedRanking(order, explanation, answer, status)
