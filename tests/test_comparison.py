"""Tests for feedback/comparison.py and the rater that compares choice questions."""

import pytest

from restreact_jax.agent import parsing
from restreact_jax.feedback import comparison
from restreact_jax.feedback import revision
from restreact_jax.feedback.rule_ranker import RuleRanker
from restreact_jax.feedback.step_context import Candidate, StepContext
from restreact_jax.search.types import ResultItem

QUESTION = 'Who was born first, Kima Oda or Gorka Vara?'
ODA = ResultItem(1, 'Kima Oda', 'Kima Oda works as a singer. Kima Oda was born in Saga in 1921.',
                 'person-1/0')
VARA = ResultItem(4, 'Gorka Vara', 'Born in Totor in 1887, Gorka Vara spent a childhood there.',
                  'person-2/0')
SUMMARIES = ('Kima Oda was born in Saga in 1921 [link_id=1].',
             'Born in Totor in 1887, Gorka Vara spent a childhood there [link_id=4].')


def test_options_and_what_is_asked():
  assert comparison.options(QUESTION) == ('Kima Oda', 'Gorka Vara')
  assert comparison.options('Which film was released first, The Silent Candle or Lost '
                            'Forest of Zenra?') == ('The Silent Candle', 'Lost Forest of Zenra')
  assert comparison.options('Who directed Lost Forest of Zenra?') is None
  assert comparison.asks_earlier('Which company is older, A or B?') is True
  assert comparison.asks_earlier('Who is younger, A or B?') is False
  assert comparison.asks_earlier('Which is bigger, A or B?') is None


@pytest.mark.parametrize('question, compared', [
    ('Who is older, A Ba or C Da?', 'Who was born, A Ba or C Da?'),
    ('Which company is older, A Ba or C Da?', 'Which company was founded, A Ba or C Da?'),
    ('Which film was released first, A Ba or C Da?', 'Which film was released, A Ba or C Da?'),
    ('Which was founded first, A Ba or C Da?', 'Which was founded, A Ba or C Da?'),
    ('Who directed A Ba?', 'Who directed A Ba?'),
])
def test_a_comparing_question_is_read_for_its_dated_relation(question, compared):
  assert comparison.as_compared(question) == compared


def test_a_comparing_rater_is_ready_once_the_years_decide_it():
  from restreact_jax.feedback import rule_ranker
  both, one = context(), context(SUMMARIES[:1], (ODA,))
  assert rule_ranker.answer_ready(both, compare=True)
  assert not rule_ranker.answer_ready(one, compare=True)
  assert not rule_ranker.answer_ready(both)  # read as written: never complete


def test_the_summaries_years_decide_the_option():
  assert comparison.expected(QUESTION, SUMMARIES) == 'Gorka Vara'
  assert comparison.expected('Who is younger, Kima Oda or Gorka Vara?', SUMMARIES) == 'Kima Oda'
  # Swapping the years swaps the answer: it is read, not guessed by position.
  swapped = (SUMMARIES[0].replace('1921', '1850'), SUMMARIES[1])
  assert comparison.expected(QUESTION, swapped) == 'Kima Oda'


@pytest.mark.parametrize('summaries', [
    SUMMARIES[:1],                                                      # one year missing
    (SUMMARIES[0], 'Gorka Vara was born in Totor [link_id=4].'),        # no year for B
    (SUMMARIES[0], SUMMARIES[1].replace('1887', '1921')),               # equal years
    SUMMARIES + ('Gorka Vara moved to Saga in 1950 [link_id=4].',),     # two years for B
    ('Kima Oda and Gorka Vara were born in 1921 and 1887 [link_id=1].',),  # one sentence, both
])
def test_undecided_summaries_decide_nothing(summaries):
  assert comparison.expected(QUESTION, summaries) is None


def context(summaries=SUMMARIES, links=(ODA, VARA)):
  past = tuple({'type': 'LinkSelection', 'grounded_summarization': s, 'thoughts': 'Link.',
                'selected_links': [r]} for s, r in zip(summaries, links))
  return StepContext('q', 0, 5, 'answer', QUESTION, past_actions=past, selected_links=links,
                     shown_links=links, summaries=tuple(summaries))


def answer(name):
  return Candidate('', {'type': 'Answer', 'thoughts': 'The summaries give the answer.',
                        'answer': f'{SUMMARIES[1]} The answer is {name}.'}, ok=True)


def test_a_comparing_rater_rejects_the_option_the_years_make_wrong():
  ctx = context()
  right, wrong = answer('Gorka Vara'), answer('Kima Oda')
  assert 'wrong_choice' in RuleRanker(compare=True).score(ctx, wrong)
  assert not RuleRanker(compare=True).acceptable(ctx, wrong)
  assert RuleRanker(compare=True).acceptable(ctx, right)
  # Without `compare` the question asks for a relation "first" that no summary
  # states: the chain is never complete, and neither option can be learnt.
  for candidate in (right, wrong):
    assert 'incomplete_chain' in RuleRanker().score(ctx, candidate)
    assert 'wrong_choice' not in RuleRanker().score(ctx, candidate)
  # Summaries that do not decide it reject nothing.
  undecided = context(SUMMARIES[:1], (ODA,))
  assert 'wrong_choice' not in RuleRanker(compare=True).score(undecided, wrong)


def test_a_comparing_rater_writes_the_answer_from_both_years():
  ctx = context()
  assert revision.revise_answer(ctx) is None  # left to the policy, as before
  revised = revision.revise_answer(ctx, compare=True)
  assert revised == {
      'type': 'Answer', 'thoughts': 'The summaries give the answer.',
      'answer': 'Kima Oda was born in Saga in 1921 [link_id=1]. Born in Totor in 1887, Gorka '
                'Vara spent a childhood there [link_id=4]. The answer is Gorka Vara.'}
  parsed = parsing.parse_step('answer', revision.as_text(revised, 'answer') + '# [END]')
  assert parsed.ok and parsed.action == revised
  assert RuleRanker(compare=True).acceptable(ctx, Candidate('', revised, ok=True))
  # A summary's year that no selected sentence states: no answer written.
  misread = context((SUMMARIES[0].replace('1921', '1925'), SUMMARIES[1]))
  assert revision.revise_answer(misread, compare=True) is None
