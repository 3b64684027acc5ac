"""Tests for agent/agent.py and agent/trajectory.py with scripted models."""

import json

from restreact_jax.agent import prompts
from restreact_jax.agent.agent import (Agent, AgentConfig, Finished, LLMCall, SearchCall,
                                       choose_min_perplexity, derive_seed)
from restreact_jax.agent.backends import ScriptedLLM
from restreact_jax.agent.trajectory import Candidate, Trajectory
from restreact_jax.search.types import ResultItem

T = prompts.render_target
STOP = T('decision', {'type': 'Terminate', 'thoughts': 'enough'})
ANSWER = T('answer', {'type': 'Answer', 'thoughts': 'from links',
                      'answer': 'Oren Vasko [link_id=4].'})
PASS = T('relevance', {'type': 'Check_Answer', 'passed': True}, ['fine'])


def SEARCH(query):  # noqa: N802  (reads like the other output constants)
  return T('decision', {'type': 'Search', 'query': query, 'thoughts': f'look up {query}'})


def select(ids, summary='According to [link_id=1], x.'):
  return T('summarize', {'type': 'LinkSelection', 'grounded_summarization': summary,
                         'thoughts': 'relevant', 'selected_link_ids': ids})


class FakeSearch:
  """Hits numbered 1..k per query, as a backend returns them."""

  def __init__(self):
    self.queries = []

  def search(self, queries, k=3):
    self.queries.extend(queries)
    return [[ResultItem(j + 1, f'{q} title {j}', f'{q} snippet {j}', f'doc-{q}-{j}')
             for j in range(k)] for q in queries]


def by_step(outputs):
  """A script: step type -> list of outputs consumed in order (one per request)."""
  queues = {k: list(v) for k, v in outputs.items()}

  def script(request, i):
    step_type = prompts.detect_step_type(request.prompt)
    queue = queues[step_type]
    return queue[0] if len(queue) == 1 else (queue.pop(0) if i == request.n - 1 else queue[0])
  return script


def drive(agent, llm, tool):
  req = agent.next(None)
  while not isinstance(req, Finished):
    if isinstance(req, LLMCall):
      req = agent.next(llm.generate([req.request])[0], 0.01)
    else:
      assert isinstance(req, SearchCall)
      req = agent.next(tool.search([req.query], req.k)[0], 0.002)
  return req.trajectory


def make_agent(question='Who founded it?', **kw):
  config = AgentConfig(**{'num_samples': 2, **kw})
  return Agent(question, prompter=prompts.Prompter(None, 0), config=config,
               question_id='q1', repeat=0)


def test_search_loop_renumbers_links_and_expands_selections():
  llm = ScriptedLLM(by_step({
      'decision': [SEARCH('glass orchard'), SEARCH('lanternfield'), STOP],
      'summarize': [select([1]), select([4, 6])],
      'answer': [ANSWER], 'relevance': [PASS], 'grounding': [PASS]}))
  tool = FakeSearch()
  traj = drive(make_agent(), llm, tool)
  assert traj.status == 'ok' and traj.failure is None
  assert [s.step_type for s in traj.steps] == [
      'decision', 'summarize', 'decision', 'summarize', 'decision', 'answer', 'relevance',
      'grounding']
  assert tool.queries == ['glass orchard', 'lanternfield']
  assert traj.num_searches == 2
  assert [r.link_id for r in traj.steps[0].tool.results] == [1, 2, 3]
  assert [r.link_id for r in traj.steps[2].tool.results] == [4, 5, 6]
  assert traj.steps[2].tool.results[0].doc_id == 'doc-lanternfield-0'
  # The second search's results show as CURRENT_SEARCH_RESULTS with ids 4..6.
  assert "ResultItem(link_id=4, link_text='lanternfield title 0'" in traj.steps[3].prompt
  # Later prompts carry the selected items in full, and only those.
  last = traj.steps[4].prompt
  assert "ResultItem(link_id=1, link_text='glass orchard title 0'" in last
  assert 'link_id=2,' not in last and 'link_id=5,' not in last
  assert "ResultItem(link_id=6, link_text='lanternfield title 2'" in last
  assert 'REMAINING_SEARCHES: int = 8' in last
  assert traj.answer_generation == traj.final_answer == 'Oren Vasko [link_id=4].'
  # Serialisation round-trips exactly.
  line = traj.dumps()
  assert json.loads(line)['schema_version'] == 1
  assert Trajectory.loads(line).to_json() == traj.to_json()


def test_budget_exhaustion_forces_the_answer():
  llm = ScriptedLLM(by_step({
      'decision': [SEARCH('again')], 'summarize': [select([])],
      'answer': [ANSWER], 'relevance': [PASS], 'grounding': [PASS]}))
  traj = drive(make_agent(max_searches=2), llm, FakeSearch())
  kinds = [s.step_type for s in traj.steps]
  assert kinds.count('decision') == 2 and traj.num_searches == 2
  assert kinds[-3:] == ['answer', 'relevance', 'grounding']
  answer_prompt = traj.steps[kinds.index('answer')].prompt
  assert f"Terminate(thoughts='{prompts.FORCED_TERMINATE_THOUGHTS}')" in answer_prompt
  assert "SelectLink(selected_links=[], grounded_summarization=" in answer_prompt


def test_zero_budget_goes_straight_to_answer():
  llm = ScriptedLLM(by_step({'answer': [ANSWER], 'relevance': [PASS], 'grounding': [PASS]}))
  traj = drive(make_agent(max_searches=0), llm, FakeSearch())
  assert [s.step_type for s in traj.steps] == ['answer', 'relevance', 'grounding']
  assert traj.status == 'ok'


def test_revisions_in_both_checks():
  llm = ScriptedLLM(by_step({
      'decision': [STOP], 'answer': [ANSWER],
      'relevance': [T('relevance', {'type': 'Revise_Answer', 'revised_answer': 'R1'})],
      'grounding': [T('grounding', {'type': 'Revise_Answer', 'revised_answer': 'R2'})]}))
  traj = drive(make_agent(), llm, FakeSearch())
  grounding = traj.steps[-1]
  assert grounding.step_type == 'grounding'
  assert "ANSWER: str = 'R1'" in grounding.prompt
  assert "Revise_Answer(revised_answer='R1')," in grounding.prompt
  assert traj.answer_generation == 'Oren Vasko [link_id=4].'
  assert traj.final_answer == 'R2'


def test_min_perplexity_pick_skips_unparseable():
  outputs = {0: ('garbage', [-0.01]), 1: (STOP, [-2.0, -2.0]), 2: (STOP, [-0.5, -0.7]),
             3: (SEARCH('x'), [-1.0])}

  def script(request, i):
    step_type = prompts.detect_step_type(request.prompt)
    if step_type == 'decision':
      return outputs[i]
    return {'answer': ANSWER, 'relevance': PASS, 'grounding': PASS}[step_type]

  traj = drive(make_agent(num_samples=4), ScriptedLLM(script), FakeSearch())
  first = traj.steps[0]
  assert len(first.candidates) == 4
  assert first.candidates[0].parse['error'] == 'no_action_selected'
  assert first.chosen == 2  # lowest perplexity among the parseable ones
  assert first.candidates[0].perplexity < first.candidates[2].perplexity
  assert first.candidates[2].logprobs == [-0.5, -0.7]
  assert traj.steps[1].step_type == 'answer'


def test_parse_failure_resamples_with_new_seed_then_succeeds():
  calls = []

  def script(request, i):
    step_type = prompts.detect_step_type(request.prompt)
    if step_type == 'decision':
      calls.append(request.seed)
      return STOP if len(set(calls)) >= 2 else 'ACTION_SELECTED = Search(query='
    return {'answer': ANSWER, 'relevance': PASS, 'grounding': PASS}[step_type]

  traj = drive(make_agent(), ScriptedLLM(script), FakeSearch())
  first = traj.steps[0]
  assert traj.status == 'ok'
  assert first.attempts == 2 and len(first.parse_events) == 1
  assert first.parse_events[0]['errors'] == ['syntax', 'syntax']
  assert first.parse_events[0]['seed'] == calls[0] != calls[-1]
  assert first.timings['llm_s'] > 0.015  # both attempts' time is counted


def test_parse_failure_gives_up_after_max_attempts():
  llm = ScriptedLLM(lambda request, i: 'not python at all (')
  traj = drive(make_agent(max_attempts=3), llm, FakeSearch())
  assert traj.status == 'failed'
  assert traj.failure.startswith('parse_failed: decision')
  assert traj.final_answer is None and traj.answer_generation is None
  assert len(traj.steps) == 1 and traj.steps[0].attempts == 3
  assert traj.steps[0].chosen is None and len(traj.steps[0].parse_events) == 3
  assert len({e['seed'] for e in traj.steps[0].parse_events}) == 3
  assert llm.calls == 3
  Trajectory.loads(traj.dumps())  # failed trajectories serialise too


def test_unknown_selected_link_is_a_parse_error():
  llm = ScriptedLLM(by_step({
      'decision': [SEARCH('a'), STOP], 'summarize': [select([7])],
      'answer': [ANSWER], 'relevance': [PASS], 'grounding': [PASS]}))
  traj = drive(make_agent(max_attempts=1), llm, FakeSearch())
  assert traj.status == 'failed'
  assert traj.steps[-1].candidates[0].parse['error'] == 'unknown_link_id'


def test_odd_results_never_raise():
  agent = make_agent()
  agent.next(None)
  out = agent.next(None)  # samples missing entirely
  assert isinstance(out, LLMCall)  # counted as a failed attempt: resample
  agent2 = make_agent()
  agent2.next(None)
  done = agent2.next([object()])  # not a Sample
  assert isinstance(done, Finished) and done.trajectory.status == 'failed'
  assert done.trajectory.failure.startswith('agent_error')
  assert agent2.next(None) is done


def test_seeds_are_deterministic_and_distinct():
  a = derive_seed(0, 'q1', 0, 3, 0)
  assert a == derive_seed(0, 'q1', 0, 3, 0)
  assert len({a, derive_seed(1, 'q1', 0, 3, 0), derive_seed(0, 'q2', 0, 3, 0),
              derive_seed(0, 'q1', 1, 3, 0), derive_seed(0, 'q1', 0, 4, 0),
              derive_seed(0, 'q1', 0, 3, 1)}) == 6
  assert 0 <= a < 2**31


def test_choose_min_perplexity_ties_and_none():
  def c(ok, ppl):
    return Candidate('t', [], ppl, 'stop', {'ok': ok, 'action': None, 'error': None})

  assert choose_min_perplexity([c(False, 1.0), c(True, 2.0), c(True, 2.0)]) == 1
  assert choose_min_perplexity([c(False, 1.0)]) is None
  assert choose_min_perplexity([c(True, float('inf')), c(True, 5.0)]) == 1


def test_requests_carry_the_shared_prefix_and_sampling_settings():
  agent = Agent('Q?', prompter=prompts.Prompter('world', 2),
                config=AgentConfig(num_samples=16, temperature=0.5, max_tokens=99))
  req = agent.next(None).request
  assert req.n == 16 and req.temperature == 0.5 and req.max_tokens == 99
  assert req.stop == ('# [END]',)
  assert req.prefix and req.prompt.startswith(req.prefix)
  assert req.prompt.endswith("ORIGINAL_QUESTION: str = 'Q?'\n")
  req.validate()


def test_action_head_is_given_and_continued():
  # With `action_head` every request carries its step's statement head; the
  # model writes only the rest, and what it writes must fit the head: a
  # summary's fields after the answer's head do not parse.
  def rest(step_type, text):
    return text[len(prompts.ACTION_HEADS[step_type]):]
  wrong = "'x', selected_link_ids=[1])"
  check = T('relevance', {'type': 'Check_Answer', 'passed': True})
  llm = ScriptedLLM(by_step({
      'decision': [rest('decision', STOP)], 'answer': [wrong, rest('answer', ANSWER)],
      'relevance': [rest('relevance', check)], 'grounding': [rest('grounding', check)]}))
  traj = drive(make_agent(action_head=True, num_samples=1), llm, FakeSearch())
  assert [r.response_prefix for r in llm.requests] == [
      'ACTION_SELECTED = ActionWrapper(thoughts=', 'ACTION_SELECTED: Answer = Answer(thoughts=',
      'ACTION_SELECTED: Answer = Answer(thoughts=', 'ACTION_SELECTED: Command =',
      'ACTION_SELECTED: Command =']
  answer = traj.steps[1]
  assert answer.step_type == 'answer' and answer.attempts == 2
  assert answer.parse_events[0]['errors'][0].startswith('bad_field')
  assert answer.candidates[0].text == ANSWER
  assert traj.answer_generation == 'Oren Vasko [link_id=4].' and traj.status == 'ok'
  plain = make_agent().next(None).request
  assert plain.response_prefix == ''


def test_constrain_gives_every_step_its_statement_grammar():
  # With `constrain` each request carries its step's grammar (which the JAX
  # engine decodes inside; the scripted model ignores it, as HTTP backends
  # do); a summary's ids are limited to the current results'.
  from restreact_jax.agent import step_grammars  # pylint: disable=g-import-not-at-top
  llm = ScriptedLLM(by_step({
      'decision': [SEARCH('a'), SEARCH('b'), STOP], 'summarize': [select([1]), select([4])],
      'answer': [ANSWER], 'relevance': [PASS], 'grounding': [PASS]}))
  traj = drive(make_agent(constrain=True, num_samples=1), llm, FakeSearch())
  assert traj.status == 'ok'
  kinds = [prompts.detect_step_type(r.prompt) for r in llm.requests]
  ids = iter([[1, 2, 3], [4, 5, 6]])
  for kind, request in zip(kinds, llm.requests):
    want = step_grammars.step_grammar(kind, valid_link_ids=next(ids) if kind == 'summarize'
                                      else None)
    assert request.grammar == want, kind
  assert kinds.count('summarize') == 2
  assert make_agent().next(None).request.grammar is None
