"""Tests for the entity kinds the typing rater reads (`feedback.answer_kind`)."""

import pytest

from restreact_jax.feedback import answer_kind as ak
from restreact_jax.feedback import revision
from restreact_jax.feedback.rule_ranker import RuleRanker
from restreact_jax.feedback.step_context import Candidate, StepContext
from restreact_jax.search.types import ResultItem


@pytest.mark.parametrize('question, kinds', [
    ('In which country was Ritor Doran born?', {'country'}),
    ('The club Sada United is based in a city. In which country is that city?', {'country'}),
    ('In which city was the person who founded Velne Trading born?', {'city'}),
    ('Where was the founder of Gortoza Industries born?', ak.PLACES),
    ('The film The Frozen Mile was directed by someone. Where was that person born?', ak.PLACES),
    ('Who founded the company that produced The Northern Winter?', {'person'}),
    ('Who is the author of the book The Amber Valley?', {'person'}),
    ('Who was born first, Mira Castell or Toda Fenmidu?', None),  # offers its answers
    ('When was the person who directed The Frozen Letter born?', None),
    ('What is the capital of the country where Mari Labs has its headquarters?', None),
])
def test_the_kinds_a_question_asks_for(question, kinds):
  assert ak.asked_kinds(question) == (None if kinds is None else frozenset(kinds))


@pytest.mark.parametrize('answer, name', [
    ('The city of Seza lies in the country of Zenfaora [link_id=4]. The answer is Zenfaora '
     '[link_id=4].', ('zenfaora',)),
    ('The answer is The Lose Rockets.', ('lose', 'rockets')),
    ('So the answer is Savel Masol, a painter.', ('savel', 'masol')),
    ('The answer is 1954.', ('1954',)),
    ('Seza lies in Zenfaora.', ()),
    ('The answer is not known.', ()),
])
def test_the_name_an_answer_concludes(answer, name):
  assert ak.concluded_name(answer) == name


SOURCES = (
    'Seza. The city of Seza lies in the country of Zenfaora.',
    'Elda is the capital city of Vaduora. Vaduora is a country whose capital is Elda.',
    'Kimavel is one of the cities of the country Baneland.',
    'The film The Paper Summer was produced by the company Fenfen Holdings.',
    'Savel Masol was born in Rabama in 1950 [link_id=3]. Savel Masol founded Nene Systems.',
)


@pytest.mark.parametrize('name, kinds', [
    ('Seza', {'city'}),
    ('Zenfaora', {'country'}),
    ('Vaduora', {'country'}),     # "the capital city of Vaduora" does not make it a city
    ('Elda', set()),              # "the capital city" is not said with its name
    ('Kimavel', {'city'}),
    ('Baneland', {'country'}),
    ('Paper Summer', {'film'}),
    ('Fenfen Holdings', {'company'}),
    ('Savel Masol', {'person'}),
    ('Rabama', set()),            # named, never called anything
    ('Nene Systems', set()),
    ('Masol', set()),             # a part of a name is not the name
])
def test_what_the_sources_call_a_name(name, kinds):
  assert ak.kinds_called(tuple(name.lower().split()), SOURCES) == frozenset(kinds)


@pytest.mark.parametrize('question, concluded, wrong', [
    ('In which country was Ritor Doran born?', 'Seza', True),
    ('In which country was Ritor Doran born?', 'Zenfaora', False),
    ('In which city was Savel Masol born?', 'Savel Masol', True),
    ('In which city was Savel Masol born?', 'Rabama', False),  # not called anything: not judged
    ('Where was the founder of Nene Systems born?', 'Fenfen Holdings', True),
    ('Where was the founder of Nene Systems born?', 'Kimavel', False),
    ('Where was the founder of Nene Systems born?', 'Zenfaora', False),  # a country is a place
    ('Who founded the company that produced The Paper Summer?', 'Fenfen Holdings', True),
    ('Who founded the company that produced The Paper Summer?', 'Savel Masol', False),
    ('Which was released first, The Paper Summer or Quiet Island?', 'The Paper Summer', False),
])
def test_an_answer_naming_another_kind_is_wrong(question, concluded, wrong):
  answer = f'The answer is {concluded} [link_id=1].'
  assert ak.wrong_entity(question, answer, SOURCES) is wrong
  assert ak.mistyped(question, answer, SOURCES) is wrong


QUESTION = 'The Lose Rockets formed in a city. Which country is it in?'
BAND = ResultItem(1, 'The Lose Rockets', 'The Lose Rockets is a band. The Lose Rockets is a band '
                  'formed in Seza in 1999.', 'band-1/0')
CITY = ResultItem(4, 'Seza', 'Travelers often compare Seza with Kimavel. The city of Seza lies in '
                  'the country of Zenfaora.', 'city-1/0')
SUMMARIES = ('The Lose Rockets is a band formed in Seza in 1999 [link_id=1].',
             'The city of Seza lies in the country of Zenfaora [link_id=4].')


def context(step_type='answer', answer=None):
  links = (BAND, CITY)
  past = tuple({'type': 'LinkSelection', 'grounded_summarization': s, 'thoughts': 'Link.',
                'selected_links': [r]} for s, r in zip(SUMMARIES, links))
  return StepContext('q', 0, 5, step_type, QUESTION, past_actions=past, selected_links=links,
                     shown_links=links, summaries=SUMMARIES, answer=answer)


def answer(name):
  return Candidate('', {'type': 'Answer', 'thoughts': 'The summaries give the answer.',
                        'answer': f'{SUMMARIES[1]} The answer is {name}.'}, ok=True)


def test_a_typing_rater_rejects_the_city_where_the_question_asks_for_its_country():
  ctx = context()
  # The plain rater accepts both: each is a new name of a stated clause about
  # a relation the question asks for.
  assert RuleRanker().acceptable(ctx, answer('Seza'))
  assert RuleRanker().acceptable(ctx, answer('Zenfaora'))
  typed = RuleRanker(typed=True)
  assert typed.score(ctx, answer('Seza'))['mistyped_answer'] < 0
  assert not typed.acceptable(ctx, answer('Seza'))
  assert typed.acceptable(ctx, answer('Zenfaora'))
  assert typed.rank(ctx, [answer('Seza'), answer('Zenfaora')]).order[0] == 1
  # The rater's own answer names the country, and it accepts it.
  written = revision.revise_answer(ctx)
  assert written['answer'].endswith('The answer is Zenfaora.')
  assert typed.acceptable(ctx, Candidate('', written, ok=True))
  # A self-check that passes the city fails; one that passes the country does not.
  passed = Candidate('', {'type': 'Check_Answer', 'passed': True}, ok=True)
  assert RuleRanker().acceptable(context('relevance', answer('Seza').action['answer']), passed)
  assert not typed.acceptable(context('relevance', answer('Seza').action['answer']), passed)
  assert typed.acceptable(context('relevance', answer('Zenfaora').action['answer']), passed)
