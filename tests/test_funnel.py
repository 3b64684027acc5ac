"""The auto-eval funnel: which step lost the answer."""

import pytest

from restreact_jax.evaluation import autoeval
from restreact_jax.evaluation import funnel
from restreact_jax.evaluation import judge as judge_lib


def _search(*snippets):
  return {'step_type': 'decision', 'candidates': [], 'chosen': 0,
          'tool': {'query': 'q', 'results': [{'link_id': i + 1, 'link_text': 'Page',
                                              'snippet': s} for i, s in enumerate(snippets)]}}


def _summary(*texts, chosen=0, ok=True):
  return {'step_type': 'summarize', 'chosen': chosen, 'tool': None,
          'candidates': [{'parse': {'ok': ok, 'action': {'grounded_summarization': t}}}
                         for t in texts]}


def test_stages_read_seen_results_and_kept_summaries_only():
  refs = ['Ann Lee', 'Annie']
  found = {'steps': [_search('Bob was born in Oslo.', 'Annie founded it in 1950.'),
                     _summary('Annie founded it [link_id=2].')]}
  assert funnel.trajectory_stages(found, refs) == {'in_results': True, 'in_summaries': True}
  # The answer was in a candidate the agent did not keep, or one that did not parse.
  lost = {'steps': [_search('Annie founded it.'), _summary('Bob did.', 'Annie did.', chosen=0),
                    _summary('Annie did.', ok=False)]}
  assert funnel.trajectory_stages(lost, refs) == {'in_results': True, 'in_summaries': False}
  # Whole tokens only: "Annies" and "Lee" alone are not the answer.
  near = {'steps': [_search('The Annies met Lee.'), _summary('Lee did.')]}
  assert funnel.trajectory_stages(near, refs) == {'in_results': False, 'in_summaries': False}
  assert funnel.trajectory_stages(None, refs) == {'in_results': False, 'in_summaries': False}
  assert funnel.trajectory_stages(found, ['yes']) == {'in_results': None, 'in_summaries': None}


def test_evaluate_reports_the_funnel_per_run():
  questions = autoeval.index_questions([
      {'id': 'q1', 'question': 'Who?', 'answers': ['Annie']},
      {'id': 'q2', 'question': 'Same?', 'answers': ['yes']},
  ])
  steps_found = [_search('Annie founded it.'), _summary('Annie founded it.')]
  steps_searched = [_search('Annie founded it.'), _summary('Bob founded it.')]
  trajs = [
      {'question_id': 'q1', 'repeat': 0, 'steps': steps_found,
       'answer_generation': 'It is Annie.', 'final_answer': 'It is Annie.'},
      {'question_id': 'q2', 'repeat': 0, 'steps': steps_found,
       'answer_generation': 'Yes.', 'final_answer': 'Yes.'},
      {'question_id': 'q1', 'repeat': 1, 'steps': steps_searched,
       'answer_generation': 'It is Bob.', 'final_answer': 'It is Bob.'},
      {'question_id': 'q2', 'repeat': 1, 'steps': [],
       'answer_generation': 'No.', 'final_answer': 'No.'},
      {'question_id': 'q1', 'repeat': 2, 'steps': steps_found,
       'answer_generation': 'It is Bob.', 'final_answer': 'It is Annie.'},
      {'question_id': 'q2', 'repeat': 2, 'steps': [],
       'answer_generation': 'Yes.', 'final_answer': 'Yes.'},
  ]
  result = autoeval.evaluate(trajs, questions, judge_lib.MatcherJudge(), progress=False)
  f = result.summary['funnel']
  # Only q1 applies: reached in every run, summarised in runs 0 and 2,
  # answered from the summaries in run 0 only.
  assert f['in_results']['mean'] == pytest.approx(100.0)
  assert f['in_summaries']['mean'] == pytest.approx(200 / 3) and f['in_summaries']['n_runs'] == 3
  assert f['answer_given_summaries']['mean'] == pytest.approx(50.0)
  assert f['answer_given_summaries']['n_runs'] == 2  # run 1 has no row to count
  rows = {(r['run'], r['question_id']): r for r in result.rows}
  assert rows[(1, 'q1')]['answer_given_summaries'] is None
  assert rows[(2, 'q1')]['answer_given_summaries'] is False
  assert rows[(0, 'q2')]['in_results'] is None
