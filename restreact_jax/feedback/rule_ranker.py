"""A label-free rater: the paper's rater instructions written as explicit rules.

The ranking prompt (PAPER_NOTES §4) tells the rater to filter bad actions, to
want "relevant and grounded answers with minimal steps", to treat any empty
element as bad, and not to assume knowledge outside what the model could see.
`RuleRanker` applies those instructions with token overlap over the step's
visible state only (question, earlier summaries, results on screen, selected
links, the answer under check):

* every step: unparseable or wrong-type actions and empty elements are bad;
* decision: a query must be grounded in the question or earlier summaries;
  repeated queries are penalised; Terminate is preferred once the summaries
  hold an answer-like span (fewer steps), and penalised before that;
* calculation (a decision with the calculator tool): the expression must
  evaluate, every number in it must be visible (question, summaries, selected
  snippets or an earlier calculation's result), it should compute something
  (an operator, not a bare number), be new, and the question should ask for
  a quantity; earlier results count as evidence for the answer. A rater that
  knows the agent calculates (`RuleRanker(calculator=True)`) reads a
  quantity question for the years its calculation needs ("How old was the
  director of X when ..." asks for the director's birth and the release;
  `claims.as_computed`) and is ready to answer it only once calculated;
* summarize: cited ids ⊆ selected ids ⊆ shown ids; the summary's claim tokens
  must occur in the selected snippets; selected links should be relevant; and
  claim by claim (`claims`): each sentence stated by one snippet sentence,
  one of them about a relation the question asks for, each naming something
  known and something new, none repeating itself;
* answer: supported by the summaries and selected snippets, cites selected
  links, and contains an answer-like span; its claim clauses stated by a
  selected snippet sentence (or a calculation), its "The answer is X" taken
  from such a clause about a relation the question asks for and (unless the
  question offers a choice) not a name of the question; the summaries must
  state (nearly) every relation the question asks for (also what makes
  `Terminate` ready). A rater that compares (`RuleRanker(compare=True)`)
  also rejects the option of a choice question ("Who was born first, A or
  B?") that the summaries' years make wrong (`comparison.expected`); a
  rater that types answers (`RuleRanker(typed=True)`) rejects a conclusion
  of the wrong kind (`answer_kind`): a name where "when" or "what year" asks
  for a number, a bare year where "who", "where" or "which" asks for a name,
  a name the sources call a city where "which country" asks for a country
  (or a company or a person where "where" asks for a place);
* every step: taken after a summary that fails the claim rules, it is
  penalised (the same for all its candidates, so it only filters): the state
  it was taken in is unsound — later queries chase a misstated entity;
* relevance / grounding checks: prefer `Check_Answer(passed=True)` when the
  answer under check is relevant / grounded, `Revise_Answer` (scored by the
  revision's own grounding) when it is not.

Each rule's score per candidate is written into the explanation.
"""

from __future__ import annotations

import ast
import dataclasses
import re
from typing import Any, Sequence

from restreact_jax.agent import calculator
from restreact_jax.feedback import answer_kind
from restreact_jax.feedback import claims as cl
from restreact_jax.feedback import comparison
from restreact_jax.feedback import text_overlap as ov
from restreact_jax.feedback.rankers import Ranking, SequentialRanker, order_by_scores
from restreact_jax.feedback.step_context import Candidate, StepContext

ALLOWED = {
    'decision': ('Search', 'Calculate', 'Terminate'),
    'summarize': ('LinkSelection',),
    'answer': ('Answer',),
    'relevance': ('Check_Answer', 'Revise_Answer'),
    'grounding': ('Check_Answer', 'Revise_Answer'),
}
_TEXT_FIELDS = ('thoughts', 'query', 'expression', 'grounded_summarization', 'answer',
                'revised_answer')
MAX_SEARCHES = 10
_NUMBER = re.compile(r'(?<![\w.])\d+(?:\.\d+)?(?!\w)')
# Questions whose answer is a quantity (what a calculation can be for).
_ASKS_NUMBER = re.compile(
    r'\b(how (old|many|much|long|far)|how many years|difference|sum|total|average|'
    r'older|younger|years (after|before|between))\b', re.IGNORECASE)


@dataclasses.dataclass(frozen=True)
class RuleWeights:
  """Penalties and bonuses (the rules' relative importance)."""
  unparseable: float = -5.0
  wrong_type: float = -4.0
  empty: float = -3.0
  grounding: float = 2.0          # x support fraction
  repeat: float = -1.5
  budget: float = -3.0
  stop_ready: float = 1.5
  stop_early: float = -1.0
  search_when_ready: float = -0.75
  bad_ids: float = -1.5
  missing_citation: float = -1.0
  citation_ok: float = 0.5
  relevance: float = 0.5          # all selected links on topic
  off_topic: float = -1.0         # x fraction of selected links off topic
  missed_relevant: float = -1.0
  answer_like: float = 0.5
  pass_ok: float = 1.5
  pass_bad: float = -1.5
  fail_without_revision: float = -1.0
  needless_revision: float = -0.75
  revise_needed: float = 0.5
  unchanged_revision: float = -1.0
  grounded_threshold: float = 0.7
  calc_error: float = -3.0        # the expression does not evaluate
  calc_ungrounded: float = -2.0   # x fraction of its numbers seen nowhere
  calc_trivial: float = -1.0      # a bare number: nothing computed
  calc_needless: float = -1.0     # the question asks for no quantity
  unstated_claim: float = -2.0    # a claim sentence no single source sentence states
  off_question: float = -1.0      # no claim is about a relation the question asks for
  no_progress: float = -1.0       # a claim names nothing known or nothing new
  unsupported_conclusion: float = -2.0  # "The answer is X" with X not in the evidence
  unsound_history: float = -1.0   # an earlier summary fails the claim rules
  incomplete_chain: float = -1.5  # answering before the summaries state what is asked
  garbled: float = -1.5           # a claim sentence repeats itself
  wrong_choice: float = -2.0      # the option of "A or B?" the summaries' years make wrong
  mistyped_answer: float = -2.0   # "The answer is X" with X not the kind the question asks for


def asks_quantity(question: str) -> bool:
  """Whether the question's answer is a computed quantity (age, difference, ...)."""
  return bool(_ASKS_NUMBER.search(question))


def wrong_choice(question: str, summaries: Sequence[str], concluded: frozenset[str]) -> bool:
  """Whether a conclusion picks the option the summaries' years make wrong."""
  right = comparison.expected(question, summaries)
  found = comparison.options(question)
  if right is None or found is None:
    return False
  other = found[1] if right == found[0] else found[0]
  return (comparison.concludes(other, right, concluded)
          and not comparison.concludes(right, other, concluded))


def past_calculations(ctx: StepContext) -> list[calculator.Calculation]:
  """The calculations taken so far, re-evaluated (the calculator is pure)."""
  return [calculator.evaluate(a.get('expression', '')) for a in ctx.past_actions
          if a.get('type') == 'Calculate']


# The rules that measure grounding, each `grounding` weight x a support fraction.
_SUPPORT_RULES = ('query_grounding', 'claim_support', 'support', 'revised_support')


def _calculations(ctx: StepContext) -> list[str]:
  return [f'{c.expression} = {c.text}' for c in past_calculations(ctx) if c.ok]


def _evidence(ctx: StepContext) -> list[str]:
  return (list(ctx.summaries) + [f'{r.link_text} {r.snippet}' for r in ctx.selected_links]
          + _calculations(ctx))


def _sources(ctx: StepContext) -> list[str]:
  """What an answer's facts must be stated by (not the agent's own summaries)."""
  return [f'{r.link_text}. {r.snippet}' for r in ctx.selected_links] + _calculations(ctx)


def numbers_in(text: str) -> set[float]:
  """The numbers written in a text (digits, optionally with a decimal part)."""
  return {float(m) for m in _NUMBER.findall(text)}


def expression_numbers(expression: str) -> list[float]:
  """The literals of an arithmetic expression (empty if it does not parse)."""
  try:
    tree = ast.parse(expression.strip(), mode='eval')
  except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
    return []
  # `type(...) in` rather than isinstance: bool literals are not numbers here.
  return [float(n.value) for n in ast.walk(tree)
          if isinstance(n, ast.Constant) and type(n.value) in (int, float)]


def stated_question(ctx: StepContext, calculator: bool = False, compare: bool = False) -> str:
  """What the summaries must state: the question; with the calculator a
  quantity question read for the years it is computed from (`claims.as_computed`);
  comparing, a choice question read for the dated relation (`comparison.as_compared`)."""
  if calculator and asks_quantity(ctx.question):
    return cl.as_computed(ctx.question)
  if compare:
    return comparison.as_compared(ctx.question)
  return ctx.question


def answer_ready(ctx: StepContext, calculator: bool = False, compare: bool = False) -> bool:
  """Whether the summaries so far already answer the question (label-free).

  The summaries must cover most of the question's content tokens and state
  (nearly) every relation it asks for, and the latest summary must contain an
  answer-like span. With the calculator, a question that `stated_question`
  reads for its calculation ("How old ...", not "Who is older, A or B?") is
  ready only once a calculation has succeeded. Comparing, a choice question
  is ready once the summaries decide it (`comparison.expected`).
  """
  if not ctx.summaries or not any(s.strip() for s in ctx.summaries):
    return False
  if compare and comparison.compares(ctx.question):
    return comparison.expected(ctx.question, ctx.summaries) is not None
  question = stated_question(ctx, calculator)
  if question != ctx.question and not any(c.ok for c in past_calculations(ctx)):
    return False
  coverage = ov.support(question, ctx.summaries)
  return (coverage >= 0.6 and cl.complete(question, ctx.summaries)
          and ov.answer_like(ctx.question, ctx.summaries[-1]))


def _norm_query(q: str) -> frozenset[str]:
  return frozenset(ov.content_tokens(q))


class RuleRanker(SequentialRanker):
  """Scores candidates with the rater-instruction rules (no labels, no model).

  Args:
    weights: the rules' penalties and bonuses.
    name: the ranker's name in rankings.
    calculator: the agent has the calculator tool: a quantity question ("How
      old was X when ...") asks the summaries for the years it is computed
      from, and is answered from a calculation (`stated_question`).
    compare: a choice question ("Who is older, A or B?") asks the summaries
      for each option's year, is ready to answer once they decide it, and
      its answer must conclude the option they make right (`comparison`).
    typed: an answer's conclusion must be the kind the question asks for
      (`answer_kind.mistyped`).
  """

  def __init__(self, weights: RuleWeights | None = None, name: str = 'rules',
               calculator: bool = False, compare: bool = False, typed: bool = False):
    self.w = weights or RuleWeights()
    self.name = name
    self.calculator = calculator
    self.compare = compare
    self.typed = typed

  # -- per step type -------------------------------------------------------

  def _decision(self, ctx: StepContext, a: dict[str, Any], s: dict[str, float]) -> None:
    ready = answer_ready(ctx, self.calculator, self.compare)
    if a['type'] == 'Search':
      query = str(a.get('query', ''))
      asked = stated_question(ctx, self.calculator, self.compare)
      s['query_grounding'] = self.w.grounding * ov.support(query, [asked, *ctx.summaries])
      qn = _norm_query(query)
      if qn and any(qn == _norm_query(p) or ov.overlap(query, p) >= 0.8 for p in ctx.queries):
        s['repeat'] = self.w.repeat
      # Calculations use the same budget as searches.
      if len(ctx.queries) + len(past_calculations(ctx)) >= MAX_SEARCHES:
        s['budget'] = self.w.budget
      if ready:
        s['search_when_ready'] = self.w.search_when_ready
    else:
      s['terminate'] = self.w.stop_ready if ready else self.w.stop_early

  def _calculate(self, ctx: StepContext, a: dict[str, Any], s: dict[str, float]) -> None:
    expression = str(a.get('expression', ''))
    calc = calculator.evaluate(expression)
    if not calc.ok:
      s['calc_error'] = self.w.calc_error
      return
    literals = expression_numbers(expression)
    past = past_calculations(ctx)
    visible = numbers_in(' '.join([ctx.question, *ctx.summaries,
                                   *(r.snippet for r in ctx.selected_links)]))
    visible |= {float(c.value) for c in past if c.ok}
    grounded = sum(x in visible for x in literals) / len(literals) if literals else 0.0
    s['calc_grounding'] = self.w.grounding * grounded
    if grounded < 1:
      s['calc_ungrounded'] = self.w.calc_ungrounded * (1 - grounded)
    if len(literals) < 2:
      s['calc_trivial'] = self.w.calc_trivial
    if not asks_quantity(ctx.question):
      s['calc_needless'] = self.w.calc_needless
    if any(''.join(c.expression.split()) == ''.join(expression.split()) for c in past):
      s['repeat'] = self.w.repeat
    if len(ctx.queries) + len(past) >= MAX_SEARCHES:
      s['budget'] = self.w.budget

  def _summarize(self, ctx: StepContext, a: dict[str, Any], s: dict[str, float]) -> None:
    summary = str(a.get('grounded_summarization', ''))
    ids = [i for i in a.get('selected_link_ids') or []]
    shown = {r.link_id: r for r in ctx.current_results}
    cited = ov.cited_ids(summary)
    if any(i not in shown for i in ids) or any(i not in ids for i in cited):
      s['ids'] = self.w.bad_ids  # cited ⊆ selected ⊆ shown is violated
    chosen = [shown[i] for i in ids if i in shown]
    if chosen:
      if not cited:
        s['citation'] = self.w.missing_citation
      topic = [ctx.question, *ctx.summaries]
      on_topic = [r for r in chosen if ov.support(f'{r.link_text} {r.snippet}', topic) > 0]
      frac = len(on_topic) / len(chosen)
      # A faithful summary of off-topic links is still a wasted step.
      s['claim_support'] = self.w.grounding * frac * ov.support(
          summary, [f'{r.link_text} {r.snippet}' for r in chosen])
      s['relevance'] = self.w.relevance * frac if frac == 1 else self.w.off_topic * (1 - frac)
      s.update(self._summary_rules(stated_question(ctx, self.calculator, self.compare), summary,
                                   [f'{r.link_text}. {r.snippet}' for r in chosen], ctx.summaries))
    elif cited:
      s['ids'] = self.w.bad_ids
    else:
      # Selecting nothing is right only when nothing shown is on topic.
      q = ov.content_tokens(ctx.question)
      if any(len(q & ov.content_tokens(f'{r.link_text} {r.snippet}')) >= 2 for r in shown.values()):
        s['missed_relevant'] = self.w.missed_relevant

  def _summary_rules(self, question: str, summary: str, sources: Sequence[str],
                     earlier: Sequence[str]) -> dict[str, float]:
    """The claim rules (see `claims`) a summary breaks; empty: it passes them all."""
    s = {}
    if cl.repetitive(summary):
      s['garbled'] = self.w.garbled
    if not cl.entailed(summary, sources):
      s['unstated_claim'] = self.w.unstated_claim
    elif not cl.relevant(summary, question):
      s['off_question'] = self.w.off_question
    if not cl.connected(summary, cl.known_names(question, earlier)):
      s['no_progress'] = self.w.no_progress
    return s

  def sound_history(self, ctx: StepContext) -> bool:
    """Whether every summary taken so far passes the claim rules."""
    earlier: list[str] = []
    for a in ctx.past_actions:
      if a.get('type') != 'LinkSelection':
        continue
      summary = str(a.get('grounded_summarization', ''))
      links = a.get('selected_links') or ()
      sources = [f'{r.link_text}. {r.snippet}' for r in links]
      if links and self._summary_rules(stated_question(ctx, self.calculator, self.compare), summary,
                                       sources, earlier):
        return False
      earlier.append(summary)
    return True

  def _answer_claims(self, ctx: StepContext, answer: str, s: dict[str, float],
                     prefix: str = '') -> None:
    """Claim-level rules of an answer.

    Its claim clauses must be stated by the selected snippets or a
    calculation; "The answer is X" needs X in a stated claim clause about a
    relation the question asks for (or in a calculation's result) and, unless
    the question offers a choice, X must not merely repeat the question.
    """
    sources = _sources(ctx)
    if cl.repetitive(answer):
      s[prefix + 'garbled'] = self.w.garbled
    if cl.claims(answer) and not cl.entailed(answer, sources):
      s[prefix + 'unstated_claim'] = self.w.unstated_claim
    stated = stated_question(ctx, self.calculator, self.compare)
    if self.compare and comparison.compares(ctx.question):
      complete = comparison.expected(ctx.question, ctx.summaries) is not None
    else:
      complete = cl.complete(stated, ctx.summaries)
    if not complete:
      s[prefix + 'incomplete_chain'] = self.w.incomplete_chain
    concluded = cl.conclusion_names(answer)
    if concluded:
      stating = [c for c in cl.claims(answer) if cl.entailed(c, sources)
                 and cl.relevant(c, stated)]
      shown = cl.known_names('', stating + _calculations(ctx))
      new = concluded - cl.read(ctx.question)[0]
      if not concluded <= shown or not (new or cl.offers_choice(ctx.question)):
        s[prefix + 'unsupported_conclusion'] = self.w.unsupported_conclusion
      if self.compare and wrong_choice(ctx.question, ctx.summaries, concluded):
        s[prefix + 'wrong_choice'] = self.w.wrong_choice
      if self.typed and answer_kind.mistyped(ctx.question, answer, sources):
        s[prefix + 'mistyped_answer'] = self.w.mistyped_answer

  def _answer_quality(self, ctx: StepContext, answer: str, s: dict[str, float], prefix: str = '') -> None:
    s[prefix + 'support'] = self.w.grounding * ov.support(answer, _evidence(ctx))
    self._answer_claims(ctx, answer, s, prefix)
    cited = ov.cited_ids(answer)
    selected = {r.link_id for r in ctx.selected_links}
    if not cited:
      s[prefix + 'citation'] = self.w.missing_citation
    elif all(i in selected for i in cited):
      s[prefix + 'citation'] = self.w.citation_ok
    else:
      s[prefix + 'citation'] = self.w.bad_ids
    s[prefix + 'answer_like'] = self.w.answer_like if ov.answer_like(ctx.question, answer) else -self.w.answer_like

  def answer_ok(self, ctx: StepContext) -> bool:
    """Whether the answer under check passes this step's check."""
    answer = ctx.answer or ''
    if not answer.strip():
      return False
    claim_rules: dict[str, float] = {}
    self._answer_claims(ctx, answer, claim_rules)
    grounded = (ov.support(answer, _evidence(ctx)) >= self.w.grounded_threshold
                and not claim_rules)
    if ctx.step_type == 'relevance':
      return grounded and ov.answer_like(ctx.question, answer) and bool(
          ov.content_tokens(answer) & ov.content_tokens(ctx.question))
    cited = ov.cited_ids(answer)
    selected = {r.link_id for r in ctx.selected_links}
    return grounded and bool(cited) and all(i in selected for i in cited)

  def _check(self, ctx: StepContext, a: dict[str, Any], s: dict[str, float]) -> None:
    ok = self.answer_ok(ctx)
    if a['type'] == 'Check_Answer':
      if a.get('passed') is True or a.get('passed') in ('True', 'true'):
        s['pass'] = self.w.pass_ok if ok else self.w.pass_bad
      else:
        s['fail_without_revision'] = self.w.fail_without_revision
      return
    revised = str(a.get('revised_answer', ''))
    if ok:
      s['needless_revision'] = self.w.needless_revision
      return
    s['revise_needed'] = self.w.revise_needed
    if ov.content_tokens(revised) == ov.content_tokens(ctx.answer or ''):
      s['unchanged'] = self.w.unchanged_revision
    self._answer_quality(ctx, revised, s, prefix='revised_')

  # -- the door ------------------------------------------------------------

  def score(self, ctx: StepContext, cand: Candidate) -> dict[str, float]:
    """Per-rule scores of one candidate (their sum is its score)."""
    a = cand.action
    if not cand.ok or not isinstance(a, dict) or 'type' not in a:
      return {'unparseable': self.w.unparseable}
    if a['type'] not in ALLOWED.get(ctx.step_type, ()):
      return {'wrong_type': self.w.wrong_type}
    s: dict[str, float] = {}
    empty_fields = [f for f in _TEXT_FIELDS if f in a and not str(a[f] or '').strip()]
    empty_comment = any(line.strip() == '#' for line in cand.text.splitlines())
    if empty_fields or empty_comment:
      s['empty'] = self.w.empty
    if not self.sound_history(ctx):
      s['unsound_history'] = self.w.unsound_history
    if ctx.step_type == 'decision' and a['type'] == 'Calculate':
      self._calculate(ctx, a, s)
    elif ctx.step_type == 'decision':
      self._decision(ctx, a, s)
    elif ctx.step_type == 'summarize':
      self._summarize(ctx, a, s)
    elif ctx.step_type == 'answer':
      self._answer_quality(ctx, str(a.get('answer', '')), s)
    else:
      self._check(ctx, a, s)
    return s

  def acceptable(self, ctx: StepContext, cand: Candidate, min_support: float = 1.0) -> bool:
    """Whether a candidate is good enough to learn from (no labels involved).

    The rater instructions say to filter bad actions: here that is a
    candidate on which no rule fires against it and whose grounding rules
    (query, summary claim or answer support) reach `min_support` of their
    full weight.
    """
    rules = self.score(ctx, cand)
    if any(v < 0 for v in rules.values()):
      return False
    grounded = [v for k, v in rules.items() if k in _SUPPORT_RULES]
    return all(v >= min_support * self.w.grounding - 1e-9 for v in grounded)

  def rank(self, context: StepContext, candidates: Sequence[Candidate]) -> Ranking:
    per_rule = [self.score(context, c) for c in candidates]
    scores = [sum(r.values()) for r in per_rule]
    lines = []
    for k, (rules, total) in enumerate(zip(per_rule, scores), 1):
      detail = ', '.join(f'{name}={v:+.2f}' for name, v in rules.items()) or 'no rule fired'
      lines.append(f'#{k}: {detail}; total={total:+.2f}')
    return Ranking(order_by_scores(scores, candidates), scores, '\n'.join(lines), self.name)
