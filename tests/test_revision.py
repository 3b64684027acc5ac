"""Tests for feedback/revision.py: summaries restated with their sources' sentences."""

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
