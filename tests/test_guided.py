"""Tests for feedback/guided.py: rollouts that continue with the rater's pick."""

import pytest

from restreact_jax import errors
from restreact_jax.agent import prompts
from restreact_jax.agent import rollout as rollout_lib
from restreact_jax.agent.agent import Agent, AgentConfig
from restreact_jax.agent.backends import ScriptedLLM
from restreact_jax.feedback.guided import RankerChooser
from restreact_jax.feedback.oracle import OracleRanker
from restreact_jax.feedback.rankers import WeightedRanker
from restreact_jax.feedback.rule_ranker import RuleRanker
from restreact_jax.search.types import ResultItem
from tests.test_agent import drive

T = prompts.render_target
QUESTION = "In what city was the writer of 'The Glass Orchard' born?"
SNIPPETS = {
    'glass orchard': [("The Glass Orchard", "'The Glass Orchard' is a 1984 novel written by Mira Castell.")],
    'mira castell': [('Mira Castell', 'Mira Castell (born 1958 in Lowbridge) is a novelist.')],
}
SEARCH_1 = T('decision', {'type': 'Search', 'query': "writer of 'The Glass Orchard'",
                          'thoughts': 'Find the writer first.'})
SEARCH_2 = T('decision', {'type': 'Search', 'query': 'Mira Castell born',
                          'thoughts': 'Now where the writer was born.'})
STOP = T('decision', {'type': 'Terminate', 'thoughts': 'I know the answer.'})
# The likelier summary states a fact no snippet says; the other is grounded.
UNSUPPORTED = T('summarize', {
    'type': 'LinkSelection', 'thoughts': 'The writer.', 'selected_link_ids': [1],
    'grounded_summarization': "According to [link_id=1], 'The Glass Orchard' is a novel written by Oren Vasko."})
SUPPORTED = T('summarize', {
    'type': 'LinkSelection', 'thoughts': 'The writer.', 'selected_link_ids': [1],
    'grounded_summarization': "According to [link_id=1], 'The Glass Orchard' is a novel written by Mira Castell."})
ANSWER = T('answer', {'type': 'Answer', 'thoughts': 'From the links.',
                      'answer': 'Mira Castell was born in Lowbridge [link_id=2].'})
PASS = T('relevance', {'type': 'Check_Answer', 'passed': True}, ['fine'])


class Search:
  def search(self, queries, k=3):
    out = []
    for q in queries:
      key = next((name for name in SNIPPETS if name in q.lower()), None)
      out.append([ResultItem(0, title, text, f'doc-{title}') for title, text in SNIPPETS.get(key, [])])
    return out


# Names the writer but garbles the relation: no sample is grounded.
GARBLED = T('summarize', {
    'type': 'LinkSelection', 'thoughts': 'The writer.', 'selected_link_ids': [1],
    'grounded_summarization': "'The Glass Orchard' was directed by Mira Castell [link_id=1]."})


def script(request, i, second=SUPPORTED):
  """Two samples per step; sample 0 is always the likelier one."""
  step_type = prompts.detect_step_type(request.prompt)
  state = request.prompt[len(request.prefix):]
  likely, unlikely = -0.1, -3.0
  if step_type == 'decision':
    text = STOP if 'Lowbridge' in state else SEARCH_2 if 'SelectLink' in state else SEARCH_1
  elif step_type == 'summarize':
    if 'Lowbridge' in state:
      text = T('summarize', {
          'type': 'LinkSelection', 'thoughts': 'The birthplace.', 'selected_link_ids': [2],
          'grounded_summarization': 'According to [link_id=2], Mira Castell was born in Lowbridge.'})
    else:
      text = UNSUPPORTED if i == 0 else second
  else:
    text = {'answer': ANSWER}.get(step_type, PASS)
  return text, [likely if i == 0 else unlikely] * 4


def run(chooser, llm=ScriptedLLM(script)):
  agent = Agent(QUESTION, prompter=prompts.Prompter(None, 0), question_id='q1',
                config=AgentConfig(num_samples=2, max_searches=3), chooser=chooser)
  return drive(agent, llm, Search())


def test_guided_rollout_continues_with_the_raters_pick():
  chooser = RankerChooser(RuleRanker())
  guided, plain = run(chooser), run(None)
  summary = [s for s in guided.steps if s.step_type == 'summarize'][0]
  assert summary.chosen == 1 and summary.candidates[1].perplexity > summary.candidates[0].perplexity
  # The later prompts carry the grounded summary, and the rollout goes on to
  # the second hop from it.
  later = guided.steps[guided.steps.index(summary) + 1].prompt
  assert 'written by Mira Castell' in later and 'Oren Vasko' not in later
  assert guided.status == 'ok'
  assert chooser.overrides == 1 and chooser.picks >= 1
  # Without a chooser the likelier (unsupported) summary is taken.
  first = [s for s in plain.steps if s.step_type == 'summarize'][0]
  assert first.chosen == 0
  assert 'Oren Vasko' in plain.steps[plain.steps.index(first) + 1].prompt


def test_revising_chooser_continues_with_the_grounded_revision():
  llm = ScriptedLLM(lambda request, i: script(request, i, second=GARBLED))
  chooser = RankerChooser(RuleRanker(), revise=True)
  traj = run(chooser, llm)
  summary = [s for s in traj.steps if s.step_type == 'summarize'][0]
  # Both samples restate to the same sentence: one revision joins them.
  assert len(summary.candidates) == 3
  revised = summary.candidates[2]
  assert revised.finish_reason == 'revision' and summary.chosen == 2
  assert revised.parse['action']['grounded_summarization'] == (
      "'The Glass Orchard' is a 1984 novel written by Mira Castell [link_id=1].")
  later = traj.steps[traj.steps.index(summary) + 1].prompt
  assert 'novel written by Mira Castell' in later and 'directed by' not in later
  assert traj.status == 'ok' and chooser.revisions_taken >= 1
  # Decision steps are never revised; without `revise` nothing is added.
  assert all(len(s.candidates) == 2 for s in traj.steps if s.step_type != 'summarize')
  plain = run(RankerChooser(RuleRanker()), llm)
  assert all(len(s.candidates) == 2 for s in plain.steps)


@pytest.mark.parametrize('bad_pick', [5, -1, None, 'x'])
def test_a_pick_that_is_not_a_parseable_candidate_falls_back_to_the_lowest_perplexity(bad_pick):
  traj = run(lambda trajectory, step: bad_pick)
  assert traj.status == 'ok'
  assert all(s.chosen == 0 for s in traj.steps)


def test_unparseable_pick_falls_back():
  def pick_garbage(trajectory, step):
    step.candidates[1].parse['ok'] = False
    return 1
  traj = run(pick_garbage)
  assert all(s.chosen == 0 for s in traj.steps)


def test_rankers_that_read_gold_answers_are_refused():
  oracle = OracleRanker({'q1': ['Lowbridge']})
  with pytest.raises(errors.UserError, match='label-free'):
    RankerChooser(oracle)
  with pytest.raises(errors.UserError, match='label-free'):
    RankerChooser(WeightedRanker([(RuleRanker(), 1.0), (oracle, 1.0)]))
  RankerChooser(WeightedRanker([(RuleRanker(), 1.0), (oracle, 0.0)]))


def test_rollout_passes_the_chooser_to_every_agent(tmp_path):
  chooser = RankerChooser(RuleRanker())
  stats = rollout_lib.rollout(
      ScriptedLLM(script), Search(), [{'id': 'a', 'question': QUESTION},
                                      {'id': 'b', 'question': QUESTION}],
      out_dir=tmp_path, prompter=prompts.Prompter(None, 0),
      config=AgentConfig(num_samples=2, max_searches=3), show_progress=False, chooser=chooser)
  assert stats.trajectories == stats.ok == 2
  assert chooser.overrides == 2


def test_answer_revision_lets_a_step_whose_samples_all_fail_continue():
  broken = "ACTION_SELECTED: Answer = Answer(thoughts='Lowbridge"

  def no_answer(request, i):
    text, logprobs = script(request, i)
    return (broken if prompts.detect_step_type(request.prompt) == 'answer' else text), logprobs

  llm = ScriptedLLM(no_answer)
  chooser = RankerChooser(RuleRanker(), revise_answers=True)
  traj = run(chooser, llm)
  answer = [s for s in traj.steps if s.step_type == 'answer'][0]
  assert [c.parse['ok'] for c in answer.candidates] == [False, False, True]
  assert answer.chosen == 2 and answer.candidates[2].finish_reason == 'revision'
  assert traj.status == 'ok' and traj.answer_generation == (
      'Mira Castell (born 1958 in Lowbridge) is a novelist [link_id=2]. The answer is Lowbridge.')
  assert chooser.revisions_taken == 1
  # Summaries are not revised, and without the chooser's revision the step fails.
  assert all(len(s.candidates) == 2 for s in traj.steps if s.step_type != 'answer')
  failed = run(RankerChooser(RuleRanker()), llm)
  assert failed.status != 'ok' and 'parse_failed: answer' in failed.failure


def test_answer_revision_competes_with_the_samples():
  # The sample's answer is grounded and complete: it ties the revision on
  # every rule and the lower perplexity keeps it.
  chooser = RankerChooser(RuleRanker(), revise_answers=True)
  traj = run(chooser)
  answer = [s for s in traj.steps if s.step_type == 'answer'][0]
  assert len(answer.candidates) == 3 and answer.candidates[2].finish_reason == 'revision'
  assert answer.chosen in (0, 1) and chooser.revisions_taken == 0


def test_decision_revision_stops_once_the_summaries_answer_the_question():
  # A policy that never stops: after the birthplace it searches once more.
  again = T('decision', {'type': 'Search', 'query': 'Mira Castell novels',
                         'thoughts': 'More about the writer.'})

  def never_stops(request, i):
    text, logprobs = script(request, i, second=SUPPORTED)
    return (again if text == STOP else text), logprobs

  llm = ScriptedLLM(never_stops)
  chooser = RankerChooser(RuleRanker(), revise_decisions=True)
  traj = run(chooser, llm)
  decisions = [s for s in traj.steps if s.step_type == 'decision']
  # Only the decision taken once the summaries answer the question gets the
  # rater's Terminate; the two before it keep their samples.
  assert [len(s.candidates) for s in decisions] == [2, 2, 3]
  stop = decisions[-1].candidates[2]
  assert stop.finish_reason == 'revision' and decisions[-1].chosen == 2
  assert stop.parse['action'] == {'type': 'Terminate',
                                  'thoughts': 'I have found what I need, so I can answer.'}
  assert traj.status == 'ok' and traj.num_searches == 2
  assert chooser.revisions_taken == 1
  # Without it the rollout searches on, past the answer, to its budget.
  searched_on = run(RankerChooser(RuleRanker()), llm)
  assert searched_on.num_searches == 3
  # A step whose samples already stop gets nothing added.
  assert all(len(s.candidates) == 2
             for s in run(RankerChooser(RuleRanker(), revise_decisions=True)).steps)
