"""The two-tool agent (search + calculator): prompts, parsing, the agent, exemplars, ranking."""

import ast
import json
import random

import pytest

from restreact_jax import errors
from restreact_jax.agent import parsing
from restreact_jax.agent import prompts
from restreact_jax.agent import rollout as rollout_lib
from restreact_jax.agent.agent import (Agent, AgentConfig, Finished, LLMCall, SearchCall,
                                       replay_exemplar)
from restreact_jax.agent.backends import ScriptedLLM
from restreact_jax.agent.trajectory import ToolCall, Trajectory
from restreact_jax.commands import agent as agent_cmd
from restreact_jax.commands import rollout as rollout_cmd
from restreact_jax.feedback import rule_ranker
from restreact_jax.feedback import step_context
from restreact_jax.search.types import ResultItem

TOOLS = ('search', 'calculator')
T = prompts.render_target
QUESTION = 'How old was the founder of Brightwater Mills when the company was founded?'
FACTS = {
    'Brightwater Mills founded by':
        'Brightwater Mills is a company founded in 1921 by Kasimir Dole.',
    'Kasimir Dole born': 'Kasimir Dole was born in Solbridge in 1888.',
}


def search(query):
  return T('decision', {'type': 'Search', 'query': query, 'thoughts': f'look up {query}'})


def calc(expression, thoughts='subtract the years'):
  return T('decision', {'type': 'Calculate', 'expression': expression, 'thoughts': thoughts})


STOP = T('decision', {'type': 'Terminate', 'thoughts': 'enough'})
ANSWER = T('answer', {'type': 'Answer', 'thoughts': 'from the calculation',
                      'answer': 'Kasimir Dole was 33 [link_id=1] [link_id=4].'})
PASS = T('relevance', {'type': 'Check_Answer', 'passed': True})


def select(ids, summary):
  return T('summarize', {'type': 'LinkSelection', 'grounded_summarization': summary,
                         'thoughts': 'relevant', 'selected_link_ids': ids})


class FactSearch:
  """The query's fact first, then filler; ids 1..k as a backend returns them."""

  def __init__(self):
    self.queries = []

  def search(self, queries, k=3):
    self.queries.extend(queries)
    return [[ResultItem(j + 1, f'{q} {j}', FACTS.get(q, 'nothing') if j == 0 else f'filler {j}',
                        f'doc-{j}') for j in range(k)] for q in queries]


def scripted(outputs):
  """One output per request, in order (every agent here samples once)."""
  queue = list(outputs)

  def script(request, i):
    del request, i
    return queue.pop(0) if len(queue) > 1 else queue[0]
  return ScriptedLLM(script)


def drive(agent, llm, tool=None):
  tool = tool or FactSearch()
  req = agent.next(None)
  while not isinstance(req, Finished):
    if isinstance(req, LLMCall):
      req = agent.next(llm.generate([req.request])[0], 0.01)
    else:
      assert isinstance(req, SearchCall)
      req = agent.next(tool.search([req.query], req.k)[0], 0.001)
  return req.trajectory


def make_agent(tools=TOOLS, max_searches=10, max_attempts=1, exemplar_set=None):
  config = AgentConfig(num_samples=1, max_attempts=max_attempts, max_searches=max_searches,
                       tools=tools)
  return Agent(QUESTION, prompter=prompts.Prompter(exemplar_set, 0 if not exemplar_set else 2),
               config=config, question_id='q-arith')


def state_globals(prompt, prefix_len):
  """The state's assignments, parsed with ast (name -> value node)."""
  tree = ast.parse(prompt[prefix_len:])
  return {stmt.target.id: stmt.value for stmt in tree.body if isinstance(stmt, ast.AnnAssign)}


ARITHMETIC_RUN = [
    search('Brightwater Mills founded by'),
    select([1], 'According to [link_id=1], Kasimir Dole founded Brightwater Mills in 1921.'),
    search('Kasimir Dole born'),
    select([4], 'According to [link_id=4], Kasimir Dole was born in 1888.'),
    calc('1921 - 1888'),
    STOP, ANSWER, PASS, PASS,
]


# ---------------------------------------------------------------------------
# The agent.


def test_search_twice_calculate_answer():
  tool = FactSearch()
  traj = drive(make_agent(), scripted(ARITHMETIC_RUN), tool)
  assert traj.status == 'ok', traj.failure
  assert [s.step_type for s in traj.steps] == [
      'decision', 'summarize', 'decision', 'summarize', 'decision', 'decision', 'answer',
      'relevance', 'grounding']
  assert tool.queries == ['Brightwater Mills founded by', 'Kasimir Dole born']
  assert traj.num_searches == 2 and traj.num_calculations == 1
  calc_step = traj.steps[4]
  assert calc_step.action['type'] == 'Calculate'
  assert calc_step.tool == ToolCall(query='1921 - 1888', results=[], name='calculator',
                                    result='33')
  # The next decision shows the calculation with its result and one unit less budget.
  nxt = traj.steps[5]
  assert "  Calculate(expression='1921 - 1888', result='33'),\n" in nxt.prompt
  values = state_globals(nxt.prompt, nxt.prefix_len)
  past = values['PAST_ACTIONS'].elts
  assert past[-1].func.id == 'Calculate'
  assert {kw.arg: ast.literal_eval(kw.value) for kw in past[-1].keywords} == {
      'expression': '1921 - 1888', 'result': '33'}
  assert ast.literal_eval(values['REMAINING_SEARCHES']) == 10 - 3
  # Later steps still show it (the answer is written from it).
  assert "Calculate(expression='1921 - 1888', result='33')" in traj.steps[6].prompt
  assert traj.final_answer == 'Kasimir Dole was 33 [link_id=1] [link_id=4].'


def test_tool_prompts_use_the_tool_docstring_and_parse():
  traj = drive(make_agent(), scripted(ARITHMETIC_RUN))
  for step in traj.steps:
    assert prompts.detect_step_type(step.prompt) == step.step_type
    ast.parse(step.prompt)
    if step.step_type == 'decision':
      assert step.prompt.startswith(f'"""{prompts.TOOL_DOCSTRINGS["decision"]}"""')
    else:
      assert step.prompt.startswith(f'"""{prompts.DOCSTRINGS[step.step_type]}"""')


def test_trajectory_json_round_trips_and_searches_keep_their_schema():
  traj = drive(make_agent(), scripted(ARITHMETIC_RUN))
  record = json.loads(traj.dumps())
  assert record['schema_version'] == 1
  search_tool, calc_tool = record['steps'][0]['tool'], record['steps'][4]['tool']
  # A search's record is what it was before tools existed: old readers read it.
  assert set(search_tool) == {'query', 'results'}
  assert calc_tool == {'query': '1921 - 1888', 'results': [], 'name': 'calculator',
                       'result': '33'}
  assert Trajectory.loads(traj.dumps()).to_json() == traj.to_json()
  assert Trajectory.loads(traj.dumps()).num_calculations == 1


def test_calculator_off_rejects_calculate_as_before():
  outputs = [calc('1921 - 1888')]
  traj = drive(make_agent(tools=('search',), max_attempts=2), scripted(outputs))
  assert traj.status == 'failed'
  assert traj.failure == 'parse_failed: decision after 2 attempts'
  assert [e['errors'] for e in traj.steps[0].parse_events] == [['wrong_class']] * 2
  # Same text, calculator on: accepted.
  ok = parsing.parse_step('decision', outputs[0], tools=TOOLS)
  assert ok.ok and ok.action == {'type': 'Calculate', 'expression': '1921 - 1888',
                                 'thoughts': 'subtract the years'}
  off = parsing.parse_step('decision', outputs[0])
  assert not off.ok and off.error == 'wrong_class'


def test_default_tools_leave_every_prompt_unchanged():
  # The same run without calculating, with the default and the explicit tools.
  run = ARITHMETIC_RUN[:4] + ARITHMETIC_RUN[5:]
  a = drive(make_agent(tools=prompts.DEFAULT_TOOLS), scripted(run))
  b = drive(Agent(QUESTION, prompter=prompts.Prompter(None, 0),
                  config=AgentConfig(num_samples=1, max_attempts=1), question_id='q-arith'),
            scripted(run))
  assert [s.prompt for s in a.steps] == [s.prompt for s in b.steps]
  for step in a.steps:
    assert 'Calculat' not in step.prompt[:step.prefix_len]
  assert a.steps[0].prompt.startswith(prompts.compact_preamble('decision'))
  assert prompts.compact_preamble('decision') == f'"""{prompts.DOCSTRINGS["decision"]}"""\n\n'
  # With the calculator only the decision preamble changes (compact prompts).
  c = drive(make_agent(tools=TOOLS), scripted(run))
  for x, y in zip(a.steps, c.steps):
    if x.step_type == 'decision':
      assert x.prompt[x.prefix_len:] == y.prompt[y.prefix_len:]
      assert x.prompt[:x.prefix_len] != y.prompt[:y.prefix_len]
    else:
      assert x.prompt == y.prompt


def test_bad_expression_is_recorded_and_the_agent_continues():
  outputs = [calc('1921 / (1888 - 1888)'), calc('__import__("os").getcwd()'), STOP, ANSWER,
             PASS, PASS]
  traj = drive(make_agent(), scripted(outputs))
  assert traj.status == 'ok'
  assert traj.steps[0].tool.result == 'error: division by zero'
  assert traj.steps[1].tool.result.startswith('error: Call is not allowed')
  assert "Calculate(expression='1921 / (1888 - 1888)', result='error: division by zero')" in (
      traj.steps[1].prompt)
  assert traj.num_calculations == 2 and traj.num_searches == 0


@pytest.mark.parametrize('max_searches', [1, 3])
def test_calculations_use_the_search_budget(max_searches):
  # A model that never stops calculating is stopped by REMAINING_SEARCHES.
  def script(request, i):
    del i
    kind = prompts.detect_step_type(request.prompt)
    return {'decision': calc('1 + 1'), 'answer': ANSWER}.get(kind, PASS)
  traj = drive(make_agent(max_searches=max_searches), ScriptedLLM(script))
  kinds = [s.step_type for s in traj.steps]
  assert kinds.count('decision') == max_searches
  assert traj.num_calculations == max_searches
  assert kinds[-3:] == ['answer', 'relevance', 'grounding']
  shown = [ast.literal_eval(state_globals(s.prompt, s.prefix_len)['REMAINING_SEARCHES'])
           for s in traj.steps if s.step_type == 'decision']
  assert shown == list(range(max_searches, 0, -1))
  answer = traj.steps[kinds.index('answer')].prompt
  assert f"Terminate(thoughts='{prompts.FORCED_TERMINATE_THOUGHTS}')" in answer


def test_searches_and_calculations_share_the_budget():
  outputs = [search('Brightwater Mills founded by'),
             select([1], 'According to [link_id=1], founded in 1921.'),
             calc('1921 - 1888'), ANSWER, PASS, PASS]
  traj = drive(make_agent(max_searches=2), scripted(outputs))
  assert traj.num_searches == 1 and traj.num_calculations == 1
  assert [s.step_type for s in traj.steps][-3:] == ['answer', 'relevance', 'grounding']
  assert sum(s.step_type == 'decision' for s in traj.steps) == 2


def test_tools_are_checked():
  with pytest.raises(errors.UserError, match="unknown tool 'abacus'"):
    AgentConfig(tools=('search', 'abacus')).validate()
  with pytest.raises(errors.UserError, match="must include 'search'"):
    AgentConfig(tools=('calculator',)).validate()
  assert prompts.normalize_tools('calculator, search') == TOOLS
  assert prompts.normalize_tools(['search', 'search']) == ('search',)
  config = rollout_cmd.make_agent_config(
      num_samples='2', temperature='0.5', max_tokens='16', max_searches='3',
      results_per_search='3', max_attempts='1', seed='0', policy='p',
      tools='search,calculator')
  assert config.tools == TOOLS and not config.action_head
  assert rollout_cmd.make_agent_config(
      num_samples=2, temperature=0.5, max_tokens=16, max_searches=3, results_per_search=3,
      max_attempts=1, seed=0, policy='p', action_head='true').action_head
  with pytest.raises(errors.UserError, match='unknown tool'):
    rollout_cmd.make_agent_config(
        num_samples=2, temperature=0.5, max_tokens=16, max_searches=3, results_per_search=3,
        max_attempts=1, seed=0, policy='p', tools=('search', 'web'))


def test_agent_command_prints_the_calculation():
  traj = drive(make_agent(), scripted(ARITHMETIC_RUN))
  text = agent_cmd.format_step(4, traj.steps[4])
  assert "calculate '1921 - 1888' = 33" in text
  assert 'calculations: 1' in agent_cmd.format_ending(traj)


def test_pooled_rollout_with_the_calculator_writes_readable_shards(tmp_path):
  questions = [{'id': f'q{i}', 'question': QUESTION} for i in range(3)]
  config = AgentConfig(num_samples=2, max_attempts=1, max_searches=4, tools=TOOLS)

  def script(request, i):
    state = request.prompt[len(request.prefix):]
    kind = prompts.detect_step_type(request.prompt)
    if kind == 'decision':
      if 'Calculate(' in state:
        return STOP
      return calc('1921 - 1888') if 'Search(' in state else search('Kasimir Dole born')
    if kind == 'summarize':
      return select([1], 'According to [link_id=1], Kasimir Dole was born in 1888.')
    return {'answer': ANSWER}.get(kind, PASS)
  stats = rollout_lib.rollout(ScriptedLLM(script), FactSearch(), questions, out_dir=tmp_path,
                              prompter=prompts.Prompter(None, 0), config=config,
                              show_progress=False)
  assert stats.ok == 3
  rows = [json.loads(line) for line in (tmp_path / rollout_lib.shard_name(0, 1)).open()]
  for row in rows:
    traj = Trajectory.from_json(row)
    assert traj.num_calculations == 1 and traj.num_searches == 1
    # The ranker's replay sees the calculation as a past action of later steps.
    contexts = list(step_context.step_contexts(row))
    assert [c.step_type for c, _ in contexts][:4] == [
        'decision', 'summarize', 'decision', 'decision']
    assert contexts[3][0].past_actions[-1]['type'] == 'Calculate'


def test_the_rank_phase_learns_a_calculated_answer_only_with_the_calculator(tmp_path):
  from restreact_jax.rest import phases  # pylint: disable=g-import-not-at-top
  answer = ('Brightwater Mills is a company founded in 1921 by Kasimir Dole [link_id=1]. '
            'Kasimir Dole was born in Solbridge in 1888 [link_id=4]. The answer is 33.')

  def script(request, i):
    del i
    state = request.prompt[len(request.prefix):]
    kind = prompts.detect_step_type(request.prompt)
    if kind == 'decision':
      if 'Calculate(' in state:
        return STOP
      searches = state.count('Search(')
      return (search('Brightwater Mills founded by') if searches == 0 else
              search('Kasimir Dole born') if searches == 1 else calc('1921 - 1888'))
    if kind == 'summarize':
      if 'born in Solbridge' in state:
        return select([4], 'Kasimir Dole was born in Solbridge in 1888 [link_id=4].')
      return select([1], 'Brightwater Mills is a company founded in 1921 by Kasimir Dole '
                         '[link_id=1].')
    if kind == 'answer':
      return T('answer', {'type': 'Answer', 'thoughts': 'from the calculation', 'answer': answer})
    return PASS
  rollout_lib.rollout(ScriptedLLM(script), FactSearch(), [{'id': 'q0', 'question': QUESTION}],
                      out_dir=tmp_path / 'traj', prompter=prompts.Prompter(None, 0),
                      config=AgentConfig(num_samples=2, max_attempts=1, max_searches=4,
                                         tools=TOOLS), repeats=1, show_progress=False)
  accepted = {}
  for tools in (TOOLS, ('search',)):
    out = tmp_path / '-'.join(tools)
    out.mkdir()
    phases.rank(out, trajectories_dir=tmp_path / 'traj', ranker_name='rules', rule_weight=1.0,
                consistency_weight=0.0, questions_path=tmp_path / 'none.jsonl', progress=False,
                tools=tools)
    rows = [json.loads(line) for line in (out / 'rankings.jsonl').open()]
    accepted[tools] = [r['step_type'] for r in rows if all(r['acceptable'])]
  # With the calculator every step is sound: "how old" asks for the founder's
  # birth, which the calculation turns into the answer.
  assert accepted[TOOLS] == ['decision', 'summarize'] * 2 + [
      'decision', 'decision', 'answer', 'relevance', 'grounding']
  # Read as asked, the birth year is off the question, and every later step
  # stands on it.
  assert accepted[('search',)] == ['decision', 'summarize']


# ---------------------------------------------------------------------------
# Parsing.


def test_calculate_forms():
  ok = [
      "ACTION_SELECTED = ActionWrapper(thoughts='t', action=Calculate(expression='2006 - 1965'))",
      "ACTION_SELECTED = Calculate(expression='2006 - 1965', thoughts='t')",
      "ACTION_SELECTED = ActionWrapper('t', Calculate('2006 - 1965'))",
      "# reason\nACTION_SELECTED: ActionWrapper = ActionWrapper(thoughts='t', "
      "action=Calculate(expression=\"2006 - 1965\"))  # [END]",
  ]
  for text in ok:
    result = parsing.parse_step('decision', text, tools=TOOLS)
    assert result.ok, (text, result.error)
    assert result.action == {'type': 'Calculate', 'expression': '2006 - 1965', 'thoughts': 't'}
    assert parsing.parse_step('decision', text).error == 'wrong_class'
  bad = {
      "ACTION_SELECTED = ActionWrapper(thoughts='t', action=Calculate(expression=''))":
          'bad_field',
      "ACTION_SELECTED = ActionWrapper(thoughts='t', action=Calculate(expression=2006 - 1965))":
          'bad_field',
      "ACTION_SELECTED = ActionWrapper(thoughts='t', action=Calculate(expression='1', "
      "result='41'))": 'bad_field',
      "ACTION_SELECTED = ActionWrapper(thoughts='', action=Calculate(expression='1 + 1'))":
          'empty_thoughts',
      "ACTION_SELECTED = Calculate(expression='1 + 1')": 'empty_thoughts',
      "ACTION_SELECTED = ActionWrapper(thoughts='t', action=eval('1 + 1'))": 'wrong_class',
  }
  for text, error in bad.items():
    assert parsing.parse_step('decision', text, tools=TOOLS).error == error, text
  # Other step types never accept it.
  text = "ACTION_SELECTED = Calculate(expression='1 + 1', thoughts='t')"
  for step_type in ('summarize', 'answer', 'relevance', 'grounding'):
    assert parsing.parse_step(step_type, text, tools=TOOLS).error == 'wrong_class'


def test_hostile_expressions_round_trip_through_render_and_parse():
  rng = random.Random(0)
  nasty = ['# [END]', "'", '"', '\\', '\n', '\r', '\u2028', '\x00', ')', 'ACTION_SELECTED = 1',
           '\ud800', '[END]', '1921 - 1888', '"""', "'''"]
  for _ in range(1500):
    expression = ''.join(rng.choice(nasty) for _ in range(rng.randint(1, 6)))
    if not expression.strip():
      continue
    thoughts = ''.join(rng.choice(nasty) for _ in range(rng.randint(1, 4))) + 'x'
    text = calc(expression, thoughts)
    assert '# [END]' not in text
    result = parsing.parse_step('decision', text, tools=TOOLS)
    assert result.ok, (expression, result.error)
    assert result.action['expression'] == expression
    assert result.action['thoughts'] == thoughts
    # Its past-action form is one valid constructor call with the same values.
    rendered = prompts.render_action({'type': 'Calculate', 'expression': expression,
                                      'result': thoughts})
    assert '# [END]' not in rendered
    call = ast.parse(rendered, mode='eval').body
    assert {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords} == {
        'expression': expression, 'result': thoughts}


# ---------------------------------------------------------------------------
# Exemplars and full preambles.


def test_world_tools_exemplars_replay():
  world = prompts.load_exemplar_set('world')
  tools_set = prompts.load_exemplar_set('world_tools')
  assert tools_set[:len(world)] == world and len(tools_set) == len(world) + 1
  assert prompts.exemplar_set_tools('world_tools') == TOOLS
  assert prompts.exemplar_set_tools('world') == ('search',)
  calculating = [t for t in tools_set if t.uses_calculator]
  assert len(calculating) == 1
  traj = calculating[0]
  steps = replay_exemplar(traj)
  decisions = steps['decision']
  assert len(decisions) == len(traj.searches) + 1
  expression = next(s['calculate'] for s in traj.searches if 'calculate' in s)
  calc_targets = [t for _, t in decisions if 'action=Calculate(' in t]
  assert calc_targets == [calc(expression, next(s['thoughts'] for s in traj.searches
                                                if 'calculate' in s))]
  # The decision after the calculation shows its result, computed by the calculator.
  after = decisions[[t for _, t in decisions].index(calc_targets[0]) + 1][0]
  assert f"Calculate(expression='{expression}', result='33')" in after
  # The answer it replays cites the computed number.
  assert '33' in steps['answer'][0][1]
  for step_type, pairs in steps.items():
    for state, target in pairs:
      ast.parse(state + target)


def test_world_tools_exemplar_is_about_the_canon_and_an_arithmetic_template():
  canon = pytest.importorskip('restreact_jax.world.canon')
  questions = pytest.importorskip('restreact_jax.world.questions')
  traj = [t for t in prompts.load_exemplar_set('world_tools') if t.uses_calculator][0]
  assert questions.FAMILIES_BY_ID[traj.template_id.rsplit('.', 1)[0]].qtype == 'arithmetic'
  assert all(name in canon.NAMES for name in traj.entities)
  for search_entry in traj.searches:
    for r in search_entry.get('results', ()):
      assert r['link_text'] in canon.NAMES


def test_decision_preamble_with_tools_parses_and_shows_calculate():
  p = prompts.Prompter('world_tools', None)
  with_calc = p.preambles_for(TOOLS)
  decision = with_calc['decision']
  tree = ast.parse(decision)
  classes = {node.name for node in tree.body if isinstance(node, ast.ClassDef)}
  assert {'Search', 'Calculate', 'Terminate', 'ActionWrapper'} <= classes
  assert decision.startswith(f'"""{prompts.TOOL_DOCSTRINGS["decision"]}"""')
  assert prompts.detect_step_type(decision) == 'decision'
  assert 'action=Calculate(' in decision  # the calculating exemplar's decision
  assert '# Search(query=...), Calculate(expression=...) or Terminate().' in decision
  n = len(prompts.load_exemplar_set('world_tools'))
  for step_type, pre in with_calc.items():
    ast.parse(pre)
    assert prompts.detect_step_type(pre) == step_type
    assert 'class Calculate(Action)' in pre
    assert pre.count(prompts.END_MARKER) == min(prompts.PAPER_SHOTS[step_type], n)
  # Without the calculator the set shows exactly the 'world' prompts.
  assert p.preambles == prompts.Prompter('world', None).preambles
  assert p.preambles_for(['search']) is p.preambles
  assert 'Calculate' not in ''.join(p.preambles.values())


def test_exemplar_file_checks_calculation_entries(tmp_path):
  raw = json.loads((prompts.EXEMPLAR_DIR / 'world_tools' /
                    '09_brightwater_founder_age_calculator.json').read_text())
  raw['searches'][-1].pop('thoughts')
  path = tmp_path / 'bad_calc.json'
  path.write_text(json.dumps(raw))
  with pytest.raises(errors.UserError, match=r"bad_calc.json: searches\[2\] lacks 'thoughts'"):
    prompts.load_exemplar_file(path)


# ---------------------------------------------------------------------------
# The rule ranker.


def _ctx(question=QUESTION, past=()):
  return step_context.StepContext(
      question_id='q', repeat=0, step_index=4, step_type='decision', question=question,
      past_actions=tuple(past),
      summaries=('According to [link_id=1], Kasimir Dole founded Brightwater Mills in 1921.',
                 'According to [link_id=4], Kasimir Dole was born in 1888.'),
      queries=('Brightwater Mills founded by', 'Kasimir Dole born'))


def _cand(expression):
  action = {'type': 'Calculate', 'expression': expression, 'thoughts': 'subtract'}
  return step_context.Candidate(text=calc(expression, 'subtract'), action=action, ok=True)


def test_rule_ranker_prefers_a_grounded_calculation():
  ranker = rule_ranker.RuleRanker()
  cands = [_cand('1925 - 1880'), _cand('1921 - 1888'), _cand('1921 / 0'), _cand('33')]
  ranking = ranker.rank(_ctx(), cands)
  scores = ranking.scores
  assert scores[1] > scores[0] > scores[2]  # grounded > invented numbers > error
  assert scores[1] > scores[3]              # computing beats restating a number
  assert 'calc_ungrounded' in ranker.score(_ctx(), cands[0])
  assert 'calc_error' in ranker.score(_ctx(), cands[2])
  assert ranking.order[0] == 1


def test_rule_ranker_calculation_rules():
  ranker = rule_ranker.RuleRanker()
  grounded = _cand('1921 - 1888')
  # The same calculation again is a repeat.
  again = _ctx(past=[{'type': 'Calculate', 'expression': '1921-1888', 'thoughts': 't'}])
  assert 'repeat' in ranker.score(again, grounded)
  assert ranker.score(again, grounded)['repeat'] < 0
  # An earlier result grounds a follow-up calculation.
  follow = _ctx(past=[{'type': 'Calculate', 'expression': '1921 - 1888', 'thoughts': 't'}])
  assert 'calc_ungrounded' not in ranker.score(follow, _cand('33 + 1888'))
  assert 'calc_ungrounded' in ranker.score(_ctx(), _cand('33 + 1888'))
  # A question that asks for no quantity gains nothing from calculating.
  who = _ctx(question='Who founded Brightwater Mills?')
  assert ranker.score(who, grounded)['calc_needless'] < 0
  assert sum(ranker.score(who, grounded).values()) < sum(ranker.score(_ctx(), grounded).values())
  # The empty-element rule covers the expression too.
  empty = step_context.Candidate(text='x', ok=True, action={
      'type': 'Calculate', 'expression': ' ', 'thoughts': 't'})
  assert 'empty' in ranker.score(_ctx(), empty)


def test_rule_ranker_counts_calculation_results_as_answer_evidence():
  ranker = rule_ranker.RuleRanker()
  base = dict(question_id='q', repeat=0, step_index=6, step_type='answer', question=QUESTION,
              summaries=('Kasimir Dole founded Brightwater Mills in 1921.',))
  answer = step_context.Candidate(text='x', ok=True, action={
      'type': 'Answer', 'thoughts': 't', 'answer': 'He was 33.'})
  without = ranker.score(step_context.StepContext(**base), answer)['support']
  with_calc = ranker.score(step_context.StepContext(
      **base, past_actions=({'type': 'Calculate', 'expression': '1921 - 1888',
                             'thoughts': 't'},)), answer)['support']
  assert with_calc > without


def test_search_only_scores_are_unchanged_by_the_calculation_rules():
  # A decision context without calculations scores Search/Terminate as before:
  # no calculation rule fires.
  ranker = rule_ranker.RuleRanker()
  for action in ({'type': 'Search', 'query': 'Kasimir Dole born', 'thoughts': 't'},
                 {'type': 'Terminate', 'thoughts': 't'}):
    rules = ranker.score(_ctx(), step_context.Candidate(text='x', ok=True, action=action))
    assert not any(name.startswith('calc_') for name in rules)
