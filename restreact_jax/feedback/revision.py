"""Grounded revision: a rater that restates a summary the way its source does.

A ranker can only pick among the policy's candidates. With a small policy the
candidates of a summarize step often name the right entities and get the
relation wrong: for the snippet "The film X was produced by the company B."
they write "X is a novel written by B [link_id=1]." A rater reading the
snippet would correct that, not only reject it. `revise_summary` does that
correction, label-free: every claim sentence of the candidate is replaced by
the sentence on screen that shares the most names and relation words with it
(`claims.read`; the links the candidate selected win ties), cited to its link,
and the revision selects the links it cites. It keeps the policy's choice of
the fact to report (the names and words it wrote); it only restates that fact
as a source states it and cites the source that does. It never sees a gold
answer.

The answer step gets the same treatment (`revise_answer`): a small policy
often has the answer in its summaries and still writes a garbled or
unparseable `Answer(...)`. The rater writes the answer a reader of the
trajectory would: the fact of the summary that completes the question's
chain (the first after which every relation the question asks for is
stated; the last one otherwise) restated as its source states it, cited,
and "The answer is X." with X the one name of that sentence the question
and the earlier summaries do not already name (a year where the question
asks "when", a name otherwise) — the pilot demonstrations' format.
It reads only what the policy's summaries selected and never a gold answer;
questions that offer their answers ("A or B?") are left to the policy unless
the rater compares (`compare`): then, where the summaries' years decide it
(`comparison.expected`), it writes the sentences of the selected links that
state each option's year, cited, and "The answer is" the right option. One
that asks for a computed quantity is answered only after the policy has
calculated (the calculator tool): the sentences of its selected links that
state the calculation's numbers, cited, and "The answer is R." with R the
last calculation's result.

A revision is one more candidate of the step (`Candidate.finish_reason`
`'revision'`, no perplexity): the ranker rates it like the samples, so it is
taken only when the rules prefer it, and a mixture built from the step trains
on it only then.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from restreact_jax.agent import demonstrations
from restreact_jax.agent import prompts
from restreact_jax.evaluation import matcher
from restreact_jax.feedback import claims as cl
from restreact_jax.feedback import comparison
from restreact_jax.feedback import rule_ranker
from restreact_jax.feedback import text_overlap as ov
from restreact_jax.feedback.step_context import StepContext
from restreact_jax.search.types import ResultItem

REVISION = 'revision'


def _closest(claim: str, sources: Sequence[tuple[int, str]]) -> tuple[int, str] | None:
  """The (link id, sentence) sharing the most names and relation words with `claim`.

  The first of equals wins, so sources listed first are preferred.
  """
  names, relations = cl.read(claim)
  best, best_score = None, 0
  for link_id, sentence in sources:
    src_names, src_relations = cl.read(sentence)
    score = len(names & src_names) + len(relations & src_relations)
    if score > best_score:
      best, best_score = (link_id, sentence), score
  return best


def revise_summary(action: Mapping[str, Any],
                   results: Sequence[ResultItem]) -> dict[str, Any] | None:
  """A summarize action restated with the shown links' own sentences.

  Args:
    action: a parsed `LinkSelection` action (`grounded_summarization`,
      `selected_link_ids`, `thoughts`).
    results: the search results the step showed.

  Returns:
    The revised action (summary built from source sentences, selecting the
    links it cites), or None when nothing can be revised: no claim shares a
    word with a shown sentence, or the summary already reads so.
  """
  shown = {r.link_id: r for r in results}
  selected = [i for i in action.get('selected_link_ids') or [] if i in shown]
  ids = selected + [i for i in shown if i not in selected]
  sources = [(i, s) for i in ids for s in cl.sentences(shown[i].snippet)]
  pieces: list[str] = []
  cited: list[int] = []
  for claim in cl.claims(str(action.get('grounded_summarization', ''))):
    found = _closest(claim, sources)
    if found is None:
      continue
    link_id, sentence = found
    piece = _cite(sentence, link_id)
    if piece not in pieces:
      pieces.append(piece)
      cited.append(link_id)
  summary = ' '.join(pieces)
  if not pieces or summary == str(action.get('grounded_summarization', '')).strip():
    return None
  ids = list(dict.fromkeys(cited))
  thoughts = (f'Link {ids[0]} states it.' if len(ids) == 1 else
              f'Links {", ".join(map(str, ids))} state it.')
  return {'type': 'LinkSelection', 'grounded_summarization': summary, 'thoughts': thoughts,
          'selected_link_ids': ids}


def _cite(sentence: str, link_id: int) -> str:
  return f'{sentence.strip().rstrip(".!? ")} [link_id={link_id}].'


def name_spans(sentence: str, question: str = '') -> list[str]:
  """The sentence's names: runs of capitalised or numeric words, as written.

  A one-word run that opens the sentence is a name only when it is not a
  stop word or a relation word of the question ("Born in X, ..." for "where
  was ... born").
  """
  words = list(cl.WORD_RE.finditer(sentence))
  asked = cl.read(question)[1]
  runs: list[list[re.Match[str]]] = []
  for w in words:
    if not (w.group()[0].isupper() or w.group()[0].isdigit()):
      continue
    if runs and sentence[runs[-1][-1].end():w.start()].strip() == '':
      runs[-1].append(w)
    else:
      runs.append([w])
  spans = []
  for run in runs:
    tokens = [t for w in run for t in matcher.normalize_tokens(w.group())]
    if all(t in ov.STOPWORDS for t in tokens):
      continue
    if len(run) == 1 and run[0].start() == words[0].start() and (
        {cl.stem(t) for t in tokens} & asked):
      continue
    spans.append(sentence[run[0].start():run[-1].end()])
  return spans


def _completing_selection(ctx: StepContext) -> tuple[Mapping[str, Any], list[str]] | None:
  """The summary that completes the question's chain, and the summaries before it.

  The first summary after which the summaries state (nearly) every relation
  the question asks for (`claims.complete`): a trajectory that searched on
  past the answer ("Who directed X?", then the director's other films) is
  answered from the hop that answered it. Without one, the last summary.
  """
  selections = [a for a in ctx.past_actions if a.get('type') == 'LinkSelection']
  if not selections:
    return None
  texts = [str(a.get('grounded_summarization', '')) for a in selections]
  for k in range(len(selections)):
    if cl.complete(ctx.question, texts[:k + 1]):
      return selections[k], texts[:k]
  return selections[-1], texts[:-1]


def _calculated_answer(ctx: StepContext) -> dict[str, Any] | None:
  """The answer to a quantity question: its numbers' sources, then the last result.

  None without a successful calculation, or when a number of its expression
  is stated by no sentence of the selected links.
  """
  calculations = [c for c in rule_ranker.past_calculations(ctx) if c.ok]
  if not calculations:
    return None
  last = calculations[-1]
  numbers = set(rule_ranker.expression_numbers(last.expression))
  stated: set[float] = set()
  cited: list[str] = []
  for r in ctx.selected_links:
    for sentence in cl.sentences(r.snippet):
      found = rule_ranker.numbers_in(sentence) & numbers
      if found - stated:
        stated |= found
        cited.append(_cite(sentence, r.link_id))
  if not numbers or stated != numbers:
    return None
  return {'type': 'Answer', 'thoughts': demonstrations.CALCULATED_THOUGHTS,
          'answer': f'{" ".join(cited)} The answer is {last.text}.'}


def _choice_answer(ctx: StepContext) -> dict[str, Any] | None:
  """The answer to "A or B?": each option's year as a selected link states it.

  None unless the summaries decide the question and a selected link's
  sentence states each option's year as the summaries do.
  """
  question = ctx.question
  right, found = comparison.expected(question, ctx.summaries), comparison.options(question)
  if right is None or found is None:
    return None
  cited = []
  for option, other in (found, found[::-1]):
    year = comparison.option_years(option, other, ctx.summaries)
    stating = [(r.link_id, s) for r in ctx.selected_links for s in cl.sentences(r.snippet)
               if comparison.option_years(option, other, [s]) == year]
    if not stating:
      return None
    cited.append(_cite(stating[0][1], stating[0][0]))
  return {'type': 'Answer', 'thoughts': demonstrations.ANSWER_THOUGHTS,
          'answer': f'{" ".join(cited)} The answer is {right}.'}


def revise_answer(ctx: StepContext, compare: bool = False) -> dict[str, Any] | None:
  """The answer a rater reads off the summary that completes the chain.

  Args:
    ctx: an answer step's visible state.
    compare: answer a choice question ("Who was born first, A or B?") from
      the years the summaries state (`_choice_answer`).

  Returns:
    An `Answer` action — that summary's claim restated by the sentence of its
    selected links that states it, cited, then "The answer is X." (for a
    quantity: the sentences stating the last calculation's numbers and its
    result) — or None: no summary, a question that offers its answers (with
    `compare`: whose summaries do not decide it), a quantity not calculated,
    or no claim sentence with exactly one new name of the kind asked.
  """
  question = ctx.question
  found_selection = _completing_selection(ctx)
  if found_selection is None:
    return None
  if cl.offers_choice(question):
    return _choice_answer(ctx) if compare else None
  if rule_ranker.asks_quantity(question):
    return _calculated_answer(ctx)
  selection, earlier = found_selection
  links = list(selection.get('selected_links') or ())
  sources = [(r.link_id, s) for r in links for s in cl.sentences(r.snippet)]
  known = cl.known_names(question, earlier)
  number = ov.asks_number(question)
  found: list[tuple[str, str]] = []  # (cited sentence, answer)
  for claim in cl.claims(str(selection.get('grounded_summarization', ''))):
    source = _closest(claim, sources)
    if source is None:
      continue
    link_id, sentence = source
    new = [span for span in name_spans(sentence, question)
           if not set(matcher.normalize_tokens(span)) & known
           and any(ch.isdigit() for ch in span) == number]
    if len(new) == 1:
      found.append((_cite(sentence, link_id), new[0]))
  if len({name for _, name in found}) != 1:
    return None
  sentence, name = found[-1]
  return {'type': 'Answer', 'thoughts': demonstrations.ANSWER_THOUGHTS,
          'answer': f'{sentence} The answer is {name}.'}


def revise_decision(ctx: StepContext, candidates: Sequence[Any],
                    calculator: bool = False, compare: bool = False) -> dict[str, Any] | None:
  """`Terminate` where the summaries answer the question and no sample stops.

  Args:
    ctx: a decision step's visible state.
    candidates: the step's candidates (`Candidate`s with their `parse`).
    calculator: the agent has the calculator (`rule_ranker.answer_ready`).
    compare: the rater decides choice questions (`rule_ranker.answer_ready`).

  Returns:
    A `Terminate` action with the pilot demonstrations' thoughts, or None:
    the summaries do not yet answer the question (`rule_ranker.answer_ready`),
    or a parseable sample already stops.
  """
  if not rule_ranker.answer_ready(ctx, calculator, compare):
    return None
  if any(c.parse['ok'] and (c.parse.get('action') or {}).get('type') == 'Terminate'
         for c in candidates):
    return None
  return {'type': 'Terminate', 'thoughts': demonstrations.TERMINATE_THOUGHTS}


def as_text(action: Mapping[str, Any], step_type: str = 'summarize') -> str:
  """The revision written as the policy writes its step (before `# [END]`)."""
  return prompts.render_target(step_type, action) + '  '
