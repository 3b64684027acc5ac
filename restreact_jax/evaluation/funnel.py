"""Where a trajectory loses the answer: search results, summaries, the answer.

Auto-eval says how often the answer is right; the funnel says which step lost
it when it is not. For each judged trajectory, with the reference answers
(read only to evaluate, like the judge):

* `in_results`: some search result the agent saw (title or snippet) mentions a
  reference — the searches reached the fact;
* `in_summaries`: some summary the agent kept (the chosen, parseable summarize
  candidate) mentions one — the summaries carried it to the answer step;
* then the judge's verdicts on the answer generation and the final answer.

"Mentions" is the alias matcher's whole-token span over the whole text (not
only a final "the answer is" clause). Yes/no references mention nothing, so
those questions are left out of the two stages (`None`); comparison
questions, whose answer is one of the question's own entities, reach both
stages almost always, so the funnel speaks mainly of the chain questions.
Rates are percentages of the applicable rows per run, mean ± std over runs,
as auto-eval reports accuracy.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from restreact_jax.evaluation import matcher

STAGES = ('in_results', 'in_summaries')


def mentions(text: str, references: Sequence[str]) -> bool | None:
  """Whether `text` names a reference; None when every reference is yes/no."""
  spans = [matcher.normalize_tokens(r) for r in references]
  spans = [s for s in spans if s and s not in (['yes'], ['no'])]
  if not spans:
    return None
  tokens = matcher.normalize_tokens(text)
  return any(matcher.contains_span(tokens, s) for s in spans)


def _kept_summaries(step: Mapping[str, Any]) -> str:
  chosen = step.get('chosen')
  if step.get('step_type') != 'summarize' or chosen is None:
    return ''
  parse = step['candidates'][chosen].get('parse') or {}
  action = parse.get('action') if parse.get('ok') else None
  return str(action.get('grounded_summarization', '')) if isinstance(action, dict) else ''


def trajectory_stages(trajectory: Mapping[str, Any] | None,
                      references: Sequence[str]) -> dict[str, bool | None]:
  """`{stage: reached}` for one trajectory (a missing one reaches nothing).

  Args:
    trajectory: a trajectory dict (`agent/trajectory.py` schema) or None.
    references: the question's answer and aliases.
  """
  if mentions('', references) is None:
    return {stage: None for stage in STAGES}
  steps = [] if trajectory is None else trajectory.get('steps') or []
  results = ' \n '.join(f'{r.get("link_text", "")} \n {r.get("snippet", "")}'
                        for s in steps for r in ((s.get('tool') or {}).get('results') or []))
  summaries = ' \n '.join(_kept_summaries(s) for s in steps)
  return {'in_results': bool(mentions(results, references)),
          'in_summaries': bool(mentions(summaries, references))}


def per_run_rates(rows: Sequence[Mapping[str, Any]], runs: Sequence[int],
                  field: str) -> list[float]:
  """Percent of each run's applicable rows (field not None) where `field` holds."""
  out = []
  for r in runs:
    values = [row[field] for row in rows if row['run'] == r and row.get(field) is not None]
    if values:
      out.append(100.0 * sum(map(bool, values)) / len(values))
  return out
