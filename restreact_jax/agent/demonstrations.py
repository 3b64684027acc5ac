"""Scripted demonstrations: a labelled pilot set written by rule, not by a model.

The paper starts self-improvement from a large model prompted with a few
exemplars: a policy that already follows the format and copies names and
facts from what it reads. A small model trained from scratch cannot be
prompted into that, so generation 0 is instead fine-tuned on demonstrations.
Eight hand-written exemplars teach the format but not the skill (a model that
saw eight questions repeats their entities instead of copying the question's).
`demonstrate` writes many more, the way the exemplars are written, for a
*pilot* set of questions whose gold hop chains are known: it searches with the
natural query for every hop, picks the hit whose snippet states the fact,
summarises with that sentence and answers with the gold answer. With the
calculator (`calculate=True`), an arithmetic question's demonstration also
calculates its quantity from the two years it found before it answers, the
way the `world_tools` exemplar does.

The pilot questions are labelled data, set apart from the unlabeled training
questions that the loop rolls out (see `rest.loop`), and share no topic
entity with dev or test. Self-improvement is measured from this gen 0 on.

A question whose facts the search does not surface within `k` hits is skipped
(`None`): a demonstration never shows a fact the agent could not have seen.
"""

from __future__ import annotations

import re
from typing import Any, Mapping, Sequence

from restreact_jax.agent import calculator
from restreact_jax.agent import prompts
from restreact_jax.search.types import SearchTool
from restreact_jax.world import questions as questions_lib
from restreact_jax.world import schema

_SENTENCE_END = re.compile(r'(?<=[.!?])\s+')

TERMINATE_THOUGHTS = 'I have found what I need, so I can answer.'
ANSWER_THOUGHTS = 'The summaries give the answer.'
CALCULATED_THOUGHTS = 'The calculation gives the answer.'
CALCULATE_THOUGHTS = 'I subtract the earlier year from the later one.'


def _hop_groups(hop_chain: Sequence[Mapping[str, str]]) -> list[list[Mapping[str, str]]]:
  """The hops grouped by the entity searched for, in order of first search."""
  groups: dict[str, list[Mapping[str, str]]] = {}
  for hop in hop_chain:
    groups.setdefault(str(hop['entity_id']), []).append(hop)
  return list(groups.values())


def _has_word(text: str, value: str) -> bool:
  return re.search(rf'(?<!\w){re.escape(value)}(?!\w)', text) is not None


def _sentences_stating(snippet: str, values: Sequence[str]) -> list[str]:
  """The snippet's sentences that state any of `values`, in order."""
  out = []
  for sentence in _SENTENCE_END.split(snippet.strip()):
    if any(_has_word(sentence, v) for v in values) and sentence not in out:
      out.append(sentence)
  return out


def _pick_hit(hits: Sequence[Any], hops: Sequence[Mapping[str, str]]) -> Any | None:
  """The first hit whose snippet states every value of `hops` (the hop's own
  passage first)."""
  values = [str(h['value']) for h in hops]
  passages = {str(h.get('passage_id', '')) for h in hops}
  ranked = sorted(hits, key=lambda h: str(getattr(h, 'doc_id', '')) not in passages)
  for hit in ranked:
    if all(_has_word(hit.snippet, v) for v in values):
      return hit
  return None


def _cite(sentence: str, link_id: int) -> str:
  """A snippet sentence with its citation before the final period."""
  body = sentence.rstrip()
  end = body[-1] if body[-1:] in '.!?' else '.'
  body = body[:-1] if body[-1:] in '.!?' else body
  return f'{body} [link_id={link_id}]{end}'


def _calculation(question: Mapping[str, Any]) -> dict[str, str] | None:
  """An arithmetic question's calculation: its later year minus the birth year.

  None when the chain has no two years or the difference is not the gold
  answer (a demonstration never shows a calculation that answers wrongly).
  """
  chain = question.get('hop_chain') or ()
  births = [h for h in chain if h['relation'] == 'birth_year']
  others = [h for h in chain if schema.RELATIONS[h['relation']].target == schema.YEAR
            and h['relation'] != 'birth_year']
  if not births or not others:
    return None
  expression = f'{others[-1]["value"]} - {births[-1]["value"]}'
  result = calculator.evaluate(expression)
  answers = question.get('answers') or ()
  if not result.ok or not answers or result.text != str(answers[0]):
    return None
  return {'thoughts': CALCULATE_THOUGHTS, 'calculate': expression}


def demonstrate(question: Mapping[str, Any], search: SearchTool, *,
                results_per_search: int = 3,
                calculate: bool = False) -> prompts.ExemplarTrajectory | None:
  """Writes one pilot demonstration for a world question with its hop chain.

  Args:
    question: a world question record (`question`, `answers`, `hop_chain`,
      `id`, `template_id`).
    search: the experiment's search tool (the demonstration shows its hits).
    results_per_search: hits per search, as the agent gets them.
    calculate: the agent has the calculator: an arithmetic question is
      answered from a calculation (`Calculate(expression='1921 - 1888')`)
      after its searches.

  Returns:
    The demonstration as an exemplar trajectory (replayable by the agent), or
    None when some fact is not in the top hits of its natural query.
  """
  groups = _hop_groups(question.get('hop_chain') or ())
  answers = question.get('answers') or ()
  if not groups or not answers:
    return None
  queries = [questions_lib.natural_query(hops[0]) for hops in groups]
  all_hits = search.search(queries, k=results_per_search)
  searches, evidence = [], []
  link_id = 1
  for hops, query, hits in zip(groups, queries, all_hits):
    chosen = _pick_hit(hits, hops)
    if chosen is None:
      return None
    results = []
    for hit in hits:
      results.append({'link_id': link_id, 'link_text': hit.link_text, 'snippet': hit.snippet,
                      'doc_id': getattr(hit, 'doc_id', '')})
      if hit is chosen:
        chosen_id = link_id
      link_id += 1
    stated = _sentences_stating(chosen.snippet, [str(h['value']) for h in hops])
    summary = ' '.join(_cite(s, chosen_id) for s in stated)
    evidence.extend(_cite(s, chosen_id) for s in stated)
    relation = schema.RELATIONS[hops[0]['relation']]
    searches.append({
        'thoughts': f'I need {relation.phrase} {hops[0]["entity"]}.',
        'query': query,
        'results': results,
        'summary': {
            'comments': [],
            'thoughts': f'Link {chosen_id} states it.',
            'selected_link_ids': [chosen_id],
            'grounded_summarization': summary,
        },
    })
  # The answer restates the facts it rests on (the last one, or every one for
  # comparisons and arithmetic, which combine them) and ends with the answer.
  combine = question.get('qtype') in ('comparison', 'arithmetic')
  support = evidence if combine else evidence[-1:]
  answer = f'{" ".join(support)} The answer is {answers[0]}.'
  thoughts = ANSWER_THOUGHTS
  if calculate and question.get('qtype') == 'arithmetic':
    calculation = _calculation(question)
    if calculation is None:
      return None
    searches.append(calculation)
    thoughts = CALCULATED_THOUGHTS
  return prompts.ExemplarTrajectory(
      name=f'pilot:{question.get("id", "")}', question=str(question['question']),
      searches=tuple(searches), terminate_thoughts=TERMINATE_THOUGHTS,
      answer={'thoughts': thoughts, 'answer': answer},
      relevance={'comments': []}, grounding={'comments': []},
      template_id=str(question.get('template_id', '')))


def demonstrate_all(questions: Sequence[Mapping[str, Any]], search: SearchTool, *,
                    results_per_search: int = 3,
                    calculate: bool = False) -> tuple[list[prompts.ExemplarTrajectory],
                                                      list[str]]:
  """Demonstrations for every question that has one (arguments as `demonstrate`).

  Returns:
    `(demonstrations, skipped_question_ids)`.
  """
  out, skipped = [], []
  for q in questions:
    demo = demonstrate(q, search, results_per_search=results_per_search, calculate=calculate)
    if demo is None:
      skipped.append(str(q.get('id', '')))
    else:
      out.append(demo)
  return out, skipped


def to_json(demo: prompts.ExemplarTrajectory) -> dict[str, Any]:
  """A demonstration in the exemplar-file format (`exemplars/README.md`)."""
  return {'name': demo.name, 'template_id': demo.template_id, 'question': demo.question,
          'searches': list(demo.searches), 'terminate_thoughts': demo.terminate_thoughts,
          'answer': dict(demo.answer), 'relevance': dict(demo.relevance),
          'grounding': dict(demo.grounding)}


def from_json(record: Mapping[str, Any]) -> prompts.ExemplarTrajectory:
  """The inverse of `to_json`."""
  return prompts.ExemplarTrajectory(
      name=str(record['name']), question=str(record['question']),
      searches=tuple(record['searches']), terminate_thoughts=str(record['terminate_thoughts']),
      answer=dict(record['answer']), relevance=dict(record['relevance']),
      grounding=dict(record['grounding']), template_id=str(record.get('template_id', '')))
