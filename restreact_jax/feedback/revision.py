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

A revision is one more candidate of the step (`Candidate.finish_reason`
`'revision'`, no perplexity): the ranker rates it like the samples, so it is
taken only when the rules prefer it, and a mixture built from the step trains
on it only then.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

from restreact_jax.agent import prompts
from restreact_jax.feedback import claims as cl
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
    piece = f'{sentence.strip().rstrip(".!? ")} [link_id={link_id}].'
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


def as_text(action: Mapping[str, Any]) -> str:
  """The revision written as the policy writes a summarize step (before `# [END]`)."""
  return prompts.render_target('summarize', action) + '  '
