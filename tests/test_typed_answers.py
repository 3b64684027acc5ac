"""Tests for the rater that types answers (`RuleRanker(typed=True)`)."""

import pytest

from restreact_jax.feedback import revision
from restreact_jax.feedback.answer_kind import wrong_number
from restreact_jax.feedback.rule_ranker import RuleRanker
from restreact_jax.feedback.step_context import Candidate, StepContext
from restreact_jax.search.types import ResultItem

CITY = 'In which city was the person who directed The Frozen Letter born?'
YEAR = 'When was the person who directed The Frozen Letter born?'
FILM = ResultItem(1, 'The Frozen Letter', 'The Frozen Letter is a film. The Frozen Letter was '
                  'directed by Mira Castell.', 'film-1/0')
PERSON = ResultItem(4, 'Mira Castell', 'Mira Castell works as a director. Mira Castell was born '
                    'in Dada in 1954.', 'person-1/0')
SUMMARIES = ('The Frozen Letter was directed by Mira Castell [link_id=1].',
             'Mira Castell was born in Dada in 1954 [link_id=4].')


@pytest.mark.parametrize('question, concluded, mistyped', [
    (CITY, {'1954'}, True),
    (CITY, {'Dada'}, False),
    (YEAR, {'Dada'}, True),
    (YEAR, {'1954'}, False),
    ('Who founded Nene Systems?', {'1899'}, True),
    ('Where was Risol Nepa born?', {'Kelra'}, False),
    ('Which film was released first, The Paper Summer or Quiet Island?', {'1971'}, True),
    ('Which film was released first, The Paper Summer or Quiet Island?', {'Paper Summer'}, False),
    ('How old was Mira Castell when The Frozen Letter was released?', {'Dada'}, True),
    ('How old was Mira Castell when The Frozen Letter was released?', {'43'}, False),
    (CITY, {'Dada', '1954'}, False),  # a name among them: other rules judge it
    (CITY, set(), False),             # no conclusion: other rules judge it
])
def test_the_kind_of_answer_a_question_asks_for(question, concluded, mistyped):
  assert wrong_number(question, frozenset(concluded)) is mistyped


def context(question, step_type='answer', answer=None):
  links = (FILM, PERSON)
  past = tuple({'type': 'LinkSelection', 'grounded_summarization': s, 'thoughts': 'Link.',
                'selected_links': [r]} for s, r in zip(SUMMARIES, links))
  return StepContext('q', 0, 5, step_type, question, past_actions=past, selected_links=links,
                     shown_links=links, summaries=SUMMARIES, answer=answer)


def answer(name):
  return Candidate('', {'type': 'Answer', 'thoughts': 'The summaries give the answer.',
                        'answer': f'{SUMMARIES[1]} The answer is {name}.'}, ok=True)


@pytest.mark.parametrize('question, right, wrong', [(CITY, 'Dada', '1954'),
                                                     (YEAR, '1954', 'Dada')])
def test_a_typing_rater_rejects_the_answer_of_the_wrong_kind(question, right, wrong):
  ctx = context(question)
  # The plain rater accepts both: each is a name of a stated claim clause
  # about a relation the question asks for.
  assert RuleRanker().acceptable(ctx, answer(right))
  assert RuleRanker().acceptable(ctx, answer(wrong))
  typed = RuleRanker(typed=True)
  assert typed.score(ctx, answer(wrong))['mistyped_answer'] < 0
  assert not typed.acceptable(ctx, answer(wrong))
  assert typed.acceptable(ctx, answer(right))
  assert 'mistyped_answer' not in typed.score(ctx, answer(right))
  # It ranks the right kind first, whichever order the samples came in.
  assert typed.rank(ctx, [answer(wrong), answer(right)]).order[0] == 1


def test_a_typing_rater_accepts_what_it_writes_and_fails_a_mistyped_answer_in_the_checks():
  for question, name in ((CITY, 'Dada'), (YEAR, '1954')):
    written = revision.revise_answer(context(question))
    assert written['answer'].endswith(f'The answer is {name}.')
    assert RuleRanker(typed=True).acceptable(context(question), Candidate('', written, ok=True))
  passed = Candidate('', {'type': 'Check_Answer', 'passed': True}, ok=True)
  mistyped = f'{SUMMARIES[1]} The answer is 1954.'
  check = context(CITY, 'grounding', mistyped)
  assert RuleRanker().acceptable(check, passed)
  assert not RuleRanker(typed=True).acceptable(check, passed)
  assert RuleRanker(typed=True).acceptable(
      context(CITY, 'grounding', f'{SUMMARIES[1]} The answer is Dada.'), passed)


class _Facts:
  """The query's passage first, then filler; the agent numbers results on
  from the previous search's (the director's passage is link 4)."""

  def search(self, queries, k=3):
    return [[FILM if 'Letter' in q else PERSON] +
            [ResultItem(j + 1, f'filler {j}', 'nothing', f'doc-{j}') for j in range(1, k)]
            for q in queries]


def test_the_rank_phase_types_answers_only_when_asked(tmp_path):
  import json  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent import prompts  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent import rollout as rollout_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent.agent import AgentConfig  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent.backends import ScriptedLLM  # pylint: disable=g-import-not-at-top
  from restreact_jax.rest import phases  # pylint: disable=g-import-not-at-top
  render = prompts.render_target

  def script(request, i):
    del i
    state = request.prompt[len(request.prefix):]
    kind = prompts.detect_step_type(request.prompt)
    if kind == 'decision':
      searches = state.count('Search(')
      if searches == 2:
        return render('decision', {'type': 'Terminate', 'thoughts': 'enough'})
      query = 'The Frozen Letter directed' if searches == 0 else 'Mira Castell born'
      return render('decision', {'type': 'Search', 'query': query, 'thoughts': 'look it up'})
    if kind == 'summarize':
      first = state.count('Search(') == 1
      return render('summarize', {'type': 'LinkSelection',
                                  'grounded_summarization': SUMMARIES[0 if first else 1],
                                  'thoughts': 'relevant', 'selected_link_ids': [1 if first else 4]})
    if kind == 'answer':
      return render('answer', {'type': 'Answer', 'thoughts': 'The summaries give the answer.',
                               'answer': answer('1954').action['answer']})
    return render(kind, {'type': 'Check_Answer', 'passed': True})
  rollout_lib.rollout(ScriptedLLM(script), _Facts(), [{'id': 'q0', 'question': CITY}],
                      out_dir=tmp_path / 'traj', prompter=prompts.Prompter(None, 0),
                      config=AgentConfig(num_samples=2, max_attempts=1, max_searches=3),
                      repeats=1, show_progress=False)
  accepted = {}
  for typed in (False, True):
    out = tmp_path / f'typed-{typed}'
    out.mkdir()
    phases.rank(out, trajectories_dir=tmp_path / 'traj', ranker_name='rules', rule_weight=1.0,
                consistency_weight=0.0, questions_path=tmp_path / 'none.jsonl', progress=False,
                typed=typed)
    rows = [json.loads(line) for line in (out / 'rankings.jsonl').open()]
    accepted[typed] = [r['step_type'] for r in rows if all(r['acceptable'])]
  steps = ['decision', 'summarize'] * 2 + ['decision']
  # The year for "In which city" passes the plain rater, and so do the checks
  # that pass it; typed, the answer and both checks are rejected.
  assert accepted[False] == steps + ['answer', 'relevance', 'grounding']
  assert accepted[True] == steps
