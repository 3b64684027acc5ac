"""Tests for feedback/revision.py: summaries and answers restated with their sources' sentences."""

import dataclasses

import pytest

from restreact_jax.agent import parsing
from restreact_jax.feedback import revision
from restreact_jax.feedback.rule_ranker import RuleRanker
from restreact_jax.feedback.step_context import Candidate, StepContext
from restreact_jax.search.types import ResultItem

QUESTION = 'Who founded the company that produced The Frozen Signal?'
RESULTS = (
    ResultItem(1, 'The Frozen Signal',
               'The Frozen Signal was later shown on television. Veldor Tonormi directed the film '
               'The Frozen Signal. The film The Frozen Signal was produced by the company Namar Foods.',
               'film-1/0'),
    ResultItem(2, 'The Frozen Signal', 'The Frozen Signal is a film of the thriller genre.', 'film-1/1'),
)


def summary(text, ids=(1,)):
  return {'type': 'LinkSelection', 'grounded_summarization': text, 'thoughts': 'Link 1.',
          'selected_link_ids': list(ids)}


def test_a_garbled_relation_is_restated_as_the_selected_link_states_it():
  action = summary('The Frozen Signal is a novel written by Namar Foods [link_id=1].')
  revised = revision.revise_summary(action, RESULTS)
  assert revised['grounded_summarization'] == (
      'The film The Frozen Signal was produced by the company Namar Foods [link_id=1].')
  assert revised['selected_link_ids'] == [1]
  # The rater rejects the sample and accepts its revision.
  context = StepContext('q', 0, 1, 'summarize', QUESTION, current_results=RESULTS,
                        shown_links=RESULTS)
  rater = RuleRanker()
  assert not rater.acceptable(context, Candidate('', action, ok=True))
  assert rater.acceptable(context, Candidate('', revised, ok=True))


def test_each_claim_keeps_the_fact_it_names():
  # Two claims: each is matched on its own names, in order, one citation each.
  action = summary('Veldor Tonormi wrote The Frozen Signal. The Frozen Signal is a thriller.',
                   ids=(1, 2))
  revised = revision.revise_summary(action, RESULTS)
  assert revised['grounded_summarization'] == (
      'Veldor Tonormi directed the film The Frozen Signal [link_id=1]. '
      'The Frozen Signal is a film of the thriller genre [link_id=2].')
  assert revised['selected_link_ids'] == [1, 2]
  assert revised['thoughts'] == 'Links 1, 2 state it.'


def test_the_source_that_states_the_claim_is_cited_and_selected():
  # The candidate cites link 2 for a fact only link 1 states.
  action = summary('The Frozen Signal was produced by Namar Foods [link_id=2].', ids=(2,))
  revised = revision.revise_summary(action, RESULTS)
  assert revised['grounded_summarization'] == (
      'The film The Frozen Signal was produced by the company Namar Foods [link_id=1].')
  assert revised['selected_link_ids'] == [1]


def test_selected_links_win_ties():
  results = RESULTS + (ResultItem(3, 'Namar Foods', 'The film The Frozen Signal was produced by '
                                  'the company Namar Foods.', 'company-1/0'),)
  action = summary('Namar Foods produced The Frozen Signal [link_id=3].', ids=(3,))
  assert revision.revise_summary(action, results)['selected_link_ids'] == [3]
  action = summary('Namar Foods produced The Frozen Signal [link_id=1].', ids=(1,))
  assert revision.revise_summary(action, results)['selected_link_ids'] == [1]


def test_nothing_to_revise():
  exact = summary('The film The Frozen Signal was produced by the company Namar Foods [link_id=1].')
  assert revision.revise_summary(exact, RESULTS) is None
  assert revision.revise_summary(summary('Nothing here.', ids=(9,)), RESULTS) is None
  assert revision.revise_summary(summary('', ids=(1,)), RESULTS) is None


def test_the_revision_reads_back_as_the_policy_would_write_it():
  revised = revision.revise_summary(summary('Namar Foods made The Frozen Signal.'), RESULTS)
  parsed = parsing.parse_step('summarize', revision.as_text(revised) + '# [END]',
                              valid_link_ids=[1, 2])
  assert parsed.ok and parsed.action == revised


# -- answers ------------------------------------------------------------------

HQ = ResultItem(1, 'Pane Studios', 'Pane Studios keeps its headquarters in Kipa.', 'company-2/0')
KIPA = ResultItem(4, 'Kipa', 'A famous market in Kipa opens every morning. '
                  'The city of Kipa lies in the country of Sakiora.', 'city-3/0')
BORN = ResultItem(2, 'Permi Noran', 'Born in Dorper in 1984, Permi Noran spent a childhood there.',
                  'person-4/0')


def answer_context(question, selections):
  """An answer step after the given (summary, selected links) pairs."""
  past = tuple({'type': 'LinkSelection', 'grounded_summarization': text, 'thoughts': 'Link.',
                'selected_links': list(links)} for text, links in selections)
  selected = tuple(r for _, links in selections for r in links)
  return StepContext('q', 0, 5, 'answer', question, past_actions=past, selected_links=selected,
                     shown_links=selected, summaries=tuple(text for text, _ in selections))


def test_the_answer_is_read_off_the_last_summarys_source():
  # The policy misnames the country; the rater restates its source sentence.
  ctx = answer_context('In what country are the headquarters of Pane Studios?', [
      ('Pane Studios keeps its headquarters in Kipa [link_id=1].', [HQ]),
      ('The city of Kipa lies in the country of Seo Zari [link_id=4].', [KIPA])])
  revised = revision.revise_answer(ctx)
  assert revised == {'type': 'Answer', 'thoughts': 'The summaries give the answer.',
                     'answer': 'The city of Kipa lies in the country of Sakiora [link_id=4]. '
                               'The answer is Sakiora.'}
  parsed = parsing.parse_step('answer', revision.as_text(revised, 'answer') + '# [END]')
  assert parsed.ok and parsed.action == revised
  # The rater still does not learn from it: the trajectory stands on a
  # misstated summary. After a sound one it does.
  rater = RuleRanker()
  assert not rater.acceptable(ctx, Candidate('', revised, ok=True))
  sound = answer_context(ctx.question, [
      ('Pane Studios keeps its headquarters in Kipa [link_id=1].', [HQ]),
      ('Kipa lies in the country of Sakiora [link_id=4].', [KIPA])])
  assert revision.revise_answer(sound) == revised
  assert rater.acceptable(sound, Candidate('', revised, ok=True))


def test_the_kind_of_name_follows_the_question():
  summary = [('Permi Noran was born in Dorper in 1984 [link_id=2].', [BORN])]
  where = revision.revise_answer(answer_context('In which city was Permi Noran born?', summary))
  when = revision.revise_answer(answer_context('In what year was Permi Noran born?', summary))
  assert where['answer'].endswith('The answer is Dorper.')
  assert when['answer'].endswith('The answer is 1984.')
  # "Born" opens the sentence and is the question's relation, not a name.
  assert revision.name_spans(BORN.snippet, 'Where was Permi Noran born?') == [
      'Dorper', '1984', 'Permi Noran']
  assert revision.name_spans(BORN.snippet) == ['Born', 'Dorper', '1984', 'Permi Noran']


@pytest.mark.parametrize('question, selections', [
    # Offers its answers, or asks for a computed quantity: left to the policy.
    ('Which company is older, Pane Studios or Kipa Films?', [('Pane Studios keeps its '
                                                              'headquarters in Kipa [link_id=1].', [HQ])]),
    ('How old was Permi Noran in 2000?', [('Permi Noran was born in 1984 [link_id=2].', [BORN])]),
    # Nothing new: the last summary names only what the question does.
    ('Where are the headquarters of Pane Studios?', [('Pane Studios is a company [link_id=3].', [
        ResultItem(3, 'Pane Studios', 'Pane Studios is a film company.', 'company-2/1')])]),
    # Two new names of the kind asked: nothing earlier names "Kipa" or "Sakiora".
    ('In what country is the film studio?', [('The city of Kipa lies in the country of Sakiora '
                                              '[link_id=4].', [KIPA])]),
    # No summary yet.
    ('In what country are the headquarters of Pane Studios?', []),
])
def test_no_answer_is_written_when_the_summary_does_not_settle_one(question, selections):
  assert revision.revise_answer(answer_context(question, selections)) is None


def test_a_trajectory_that_searched_past_its_answer_is_answered_from_the_hop_that_answered_it():
  director = ResultItem(1, 'The Paper Summer', 'The Paper Summer was directed by Savel Todu.',
                        'film-5/0')
  other = ResultItem(5, 'Savel Todu', 'Savel Todu was the director of The Golden Storm.',
                     'person-6/0')
  ctx = answer_context('Who directed The Paper Summer?', [
      ('The Paper Summer was directed by Savel Todu [link_id=1].', [director]),
      ('Savel Todu was the director of The Golden Storm [link_id=5].', [other])])
  assert revision.revise_answer(ctx)['answer'] == (
      'The Paper Summer was directed by Savel Todu [link_id=1]. The answer is Savel Todu.')
  # A chain that is not complete after the first hop reads the second.
  two_hops = answer_context('In what country are the headquarters of Pane Studios?', [
      ('Pane Studios keeps its headquarters in Kipa [link_id=1].', [HQ]),
      ('Kipa lies in the country of Sakiora [link_id=4].', [KIPA])])
  assert revision.revise_answer(two_hops)['answer'].endswith('The answer is Sakiora.')


def _sample(action):
  from restreact_jax.agent.trajectory import Candidate as Sample  # pylint: disable=g-import-not-at-top
  return Sample(text='', logprobs=[], perplexity=1.0, finish_reason='stop',
                parse={'ok': True, 'action': action, 'error': None})


def test_terminate_is_offered_once_the_summaries_answer_the_question():
  search = _sample({'type': 'Search', 'query': 'Permi Noran films', 'thoughts': 'More.'})
  stop = _sample({'type': 'Terminate', 'thoughts': 'Done.'})
  born = [('Permi Noran was born in Dorper in 1984 [link_id=2].', [BORN])]
  ready = dataclasses.replace(answer_context('In which city was Permi Noran born?', born),
                              step_type='decision')
  assert revision.revise_decision(ready, [search, search]) == {
      'type': 'Terminate', 'thoughts': 'I have found what I need, so I can answer.'}
  # A sample that stops already, no summary yet, or a chain one hop short.
  assert revision.revise_decision(ready, [search, stop]) is None
  assert revision.revise_decision(
      dataclasses.replace(ready, summaries=(), past_actions=()), [search]) is None
  short = answer_context('In what country are the headquarters of Pane Studios?', [
      ('Pane Studios keeps its headquarters in Kipa [link_id=1].', [HQ])])
  assert revision.revise_decision(
      dataclasses.replace(short, step_type='decision'), [search]) is None


FOUNDED = ResultItem(1, 'Dudu Labs', 'Dudu Labs sells lamps. Dudu Labs is a company founded in '
                     '1994 by Persol Belgor.', 'company-7/0')
BELGOR = ResultItem(4, 'Persol Belgor', 'Persol Belgor was born in Radu in 1946.', 'person-8/0')
AGE = 'How old was the founder of Dudu Labs when the company was founded?'
AGE_CHAIN = [('Dudu Labs is a company founded in 1994 by Persol Belgor [link_id=1].', [FOUNDED]),
             ('Persol Belgor was born in Radu in 1946 [link_id=4].', [BELGOR])]


def calculated(ctx, expression):
  calc = {'type': 'Calculate', 'expression': expression, 'thoughts': 'Subtract.'}
  return dataclasses.replace(ctx, past_actions=ctx.past_actions + (calc,))


def test_a_quantity_is_answered_from_the_last_calculation_and_the_sentences_it_reads():
  ctx = answer_context(AGE, AGE_CHAIN)
  assert revision.revise_answer(ctx) is None  # nothing calculated: left to the policy
  after = calculated(calculated(ctx, '1994 + 1946'), '1994 - 1946')
  revised = revision.revise_answer(after)
  assert revised == {
      'type': 'Answer', 'thoughts': 'The calculation gives the answer.',
      'answer': 'Dudu Labs is a company founded in 1994 by Persol Belgor [link_id=1]. '
                'Persol Belgor was born in Radu in 1946 [link_id=4]. The answer is 48.'}
  parsed = parsing.parse_step('answer', revision.as_text(revised, 'answer') + '# [END]')
  assert parsed.ok and parsed.action == revised
  # The rater with the calculator learns from it; read as asked ("how old" is
  # stated by no summary) the chain is incomplete.
  candidate = Candidate('', revised, ok=True)
  assert RuleRanker(calculator=True).acceptable(after, candidate)
  assert 'incomplete_chain' in RuleRanker().score(after, candidate)
  # A number of the calculation that no selected sentence states: no answer.
  assert revision.revise_answer(calculated(ctx, '2000 - 1946')) is None
  assert revision.revise_answer(calculated(ctx, '1994 / 0')) is None


def test_with_the_calculator_a_quantity_is_ready_once_calculated():
  search = _sample({'type': 'Search', 'query': 'Persol Belgor', 'thoughts': 'More.'})
  decision = dataclasses.replace(answer_context(AGE, AGE_CHAIN), step_type='decision')
  assert revision.revise_decision(decision, [search], calculator=True) is None
  assert revision.revise_decision(calculated(decision, '1994 - 1946'), [search],
                                  calculator=True)['type'] == 'Terminate'
  # Without the calculator the quantity is never stated by the summaries.
  assert revision.revise_decision(calculated(decision, '1994 - 1946'), [search]) is None
