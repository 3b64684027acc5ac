"""Tests for agent/prompts.py: layout, exemplars, and escaping under fuzzing."""

import ast
import random

import pytest

from restreact_jax import errors
from restreact_jax.agent import prompts
from restreact_jax.llm import END_MARKER
from restreact_jax.search.types import ResultItem
from tests.test_parsing import hostile_string


def _literal_value(node):
  return ast.literal_eval(node)


def _decode_action(call: ast.Call) -> dict:
  """Reads a rendered PAST_ACTIONS entry back (literals only)."""
  name = call.func.id
  fields = {kw.arg: kw.value for kw in call.keywords}
  out = {'type': name}
  for key, value in fields.items():
    if key == 'selected_links':
      out[key] = [
          ResultItem(**{kw.arg: _literal_value(kw.value) for kw in item.keywords})
          for item in value.elts
      ]
    else:
      out[key] = _literal_value(value)
  return out


def _state_globals(source: str) -> list[tuple[str, ast.AST]]:
  module = ast.parse(source)
  out = []
  for stmt in module.body:
    assert isinstance(stmt, (ast.AnnAssign, ast.Assign)), ast.dump(stmt)[:200]
    target = stmt.target if isinstance(stmt, ast.AnnAssign) else stmt.targets[0]
    out.append((target.id, stmt.value))
  return out


EXPECTED_NAMES = {
    'decision': ['ORIGINAL_QUESTION', 'PAST_ACTIONS', 'REMAINING_SEARCHES', 'ORIGINAL_QUESTION'],
    'summarize': ['ORIGINAL_QUESTION', 'PAST_ACTIONS', 'CURRENT_SEARCH_RESULTS',
                  'ORIGINAL_QUESTION'],
    'answer': ['ORIGINAL_QUESTION', 'PAST_ACTIONS', 'ORIGINAL_QUESTION'],
    'relevance': ['ORIGINAL_QUESTION', 'PAST_ACTIONS', 'ANSWER', 'ORIGINAL_QUESTION'],
    'grounding': ['ORIGINAL_QUESTION', 'PAST_ACTIONS', 'ANSWER', 'ORIGINAL_QUESTION'],
}


def _random_state(rng: random.Random) -> prompts.PromptState:
  s = lambda: hostile_string(rng)  # noqa: E731
  link = [0]

  def item():
    link[0] += 1
    return ResultItem(link_id=link[0], link_text=s(), snippet=s())

  past = []
  for _ in range(rng.randint(0, 3)):
    past.append({'type': 'Search', 'query': s(), 'thoughts': s()})
    past.append({'type': 'SelectLink', 'selected_links': [item() for _ in range(rng.randint(0, 2))],
                 'grounded_summarization': s(), 'thoughts': s()})
  if rng.random() < 0.5:
    past += [{'type': 'Terminate', 'thoughts': s()},
             {'type': 'Answer', 'thoughts': s(), 'answer': s()}]
    if rng.random() < 0.5:
      past.append({'type': 'Revise_Answer', 'revised_answer': s()})
  return prompts.PromptState(question=s(), past_actions=tuple(past),
                             remaining_searches=rng.randint(0, 10),
                             current_results=tuple(item() for _ in range(rng.randint(0, 3))),
                             answer=s())


def test_fuzz_untrusted_text_keeps_the_structure():
  """≥ 10k hostile strings as questions/titles/snippets/thoughts: the prompt
  parses, has exactly the intended globals, and they hold exactly the strings."""
  rng = random.Random(7)
  prompter = prompts.Prompter('world', 2)
  n_strings = 0
  for trial in range(1200):
    state = _random_state(rng)
    n_strings += 2 + 2 * len(state.past_actions) + 2 * len(state.current_results)
    step_type = prompts.STEP_TYPES[trial % 5]
    prompt, prefix_len = prompter.render(step_type, state)
    body = prompt[prefix_len:]
    assert END_MARKER not in body
    # Exemplars' stop markers are the only ones in the whole prompt.
    assert prompt.count(END_MARKER) == 2
    if trial % 50 == 0:
      ast.parse(prompt)  # the whole prompt is valid Python too
    got = _state_globals(body)
    assert [name for name, _ in got] == EXPECTED_NAMES[step_type]
    values = dict(got)
    assert ast.literal_eval(got[0][1]) == state.question
    assert ast.literal_eval(got[-1][1]) == state.question
    past = values['PAST_ACTIONS']
    assert [_decode_action(c) for c in past.elts] == [dict(a) for a in state.past_actions]
    if step_type == 'decision':
      assert ast.literal_eval(values['REMAINING_SEARCHES']) == state.remaining_searches
    if step_type == 'summarize':
      links = values['CURRENT_SEARCH_RESULTS'].keywords[0].value.elts
      decoded = [ResultItem(**{kw.arg: ast.literal_eval(kw.value) for kw in c.keywords})
                 for c in links]
      assert decoded == list(state.current_results)
    if step_type in ('relevance', 'grounding'):
      assert ast.literal_eval(values['ANSWER']) == state.answer
  assert n_strings >= 10_000


def test_py_str_and_comment():
  for text in ['# [END]', "a'b\"c", '\\# [END]', 'x\n# [END]\ny', '\ud800', '']:
    lit = prompts.py_str(text)
    assert END_MARKER not in lit
    assert ast.literal_eval(lit) == text
  c = prompts.py_comment('line1\nACTION_SELECTED = 1  # [END]\r\u2028x')
  assert '\n' not in c and '\r' not in c and END_MARKER not in c
  assert ast.parse(c + '\n').body == []


def test_preamble_layout_and_shots():
  p = prompts.Prompter('world', None)
  n = len(prompts.load_exemplar_set('world'))
  for step_type in prompts.STEP_TYPES:
    pre = p.preambles[step_type]
    shots = min(prompts.PAPER_SHOTS[step_type], n)
    assert pre.startswith(f'"""{prompts.DOCSTRINGS[step_type]}"""')
    assert pre.count(END_MARKER) == shots
    assert f'# Example {shots + 1}:' in pre and f'# Example {shots + 2}:' not in pre
    assert prompts.detect_step_type(pre) == step_type
    ast.parse(pre)
  # Decision exemplars mix searching and stopping.
  assert 'action=Search(' in p.preambles['decision']
  assert 'action=Terminate()' in p.preambles['decision']
  # The same preamble for every state: it is the shared prefix.
  s1 = prompts.PromptState(question='a?')
  s2 = prompts.PromptState(question='b?', remaining_searches=3)
  (p1, n1), (p2, n2) = p.render('decision', s1), p.render('decision', s2)
  assert n1 == n2 and p1[:n1] == p2[:n2] == p.preambles['decision']


def test_compact_preamble_is_short():
  p = prompts.Prompter(None, 0)
  for step_type in prompts.STEP_TYPES:
    assert len(p.preambles[step_type]) < 200
    assert prompts.detect_step_type(p.preambles[step_type]) == step_type
  prompt, n = p.render('decision', prompts.PromptState(question='Who?', remaining_searches=10))
  assert len(prompt) < 400


def test_open_domain_set_renders():
  p = prompts.Prompter('open_domain', 3)
  assert p.preambles['answer'].count(END_MARKER) == 3
  assert 'Canberra' in p.preambles['decision'] or 'Eiffel' in p.preambles['decision']


def test_world_exemplars_mention_only_canon_entities():
  canon = pytest.importorskip('restreact_jax.world.canon')
  for traj in prompts.load_exemplar_set('world'):
    assert traj.entities, traj.name
    for name in traj.entities:
      assert name in canon.NAMES, (traj.name, name)
    for search in traj.searches:
      for r in search['results']:
        assert r['link_text'] in canon.NAMES, (traj.name, r['link_text'])


def test_exemplar_errors_name_the_file(tmp_path):
  bad = tmp_path / 'bad.json'
  bad.write_text('{"question": "q"}')
  with pytest.raises(errors.UserError, match='bad.json'):
    prompts.load_exemplar_file(bad)
  bad.write_text('{not json')
  with pytest.raises(errors.UserError, match='bad.json'):
    prompts.load_exemplar_file(bad)
  with pytest.raises(errors.UserError, match='unknown exemplar set'):
    prompts.Prompter('nope', 2)


def test_world_exemplars_use_exemplar_templates():
  questions = pytest.importorskip('restreact_jax.world.questions')
  canon = pytest.importorskip('restreact_jax.world.canon')
  import re  # pylint: disable=g-import-not-at-top
  used = set()
  for traj in prompts.load_exemplar_set('world'):
    assert traj.template_id in questions.EXEMPLAR_TEMPLATE_IDS, traj.name
    surface = questions.template_text(traj.template_id)
    pattern = re.escape(surface)
    for slot in ('x', 'a', 'b'):
      pattern = pattern.replace(re.escape('{' + slot + '}'), '(.+)')
    m = re.fullmatch(pattern, traj.question)
    assert m, (traj.name, surface, traj.question)
    assert all(g in canon.NAMES for g in m.groups()), (traj.name, m.groups())
    used.add(traj.template_id)
  assert len(used) >= 6  # the set covers most exemplar templates


def test_action_heads_start_targets_on_a_token_boundary():
  # `AgentConfig.action_head` feeds a head as tokens of its own: it must be
  # how every target starts, and, in the shipped vocabulary, the very tokens
  # the whole target begins with (else the model reads a split it never saw).
  import sentencepiece as spm  # pylint: disable=g-import-not-at-top
  sp = spm.SentencePieceProcessor(
      model_file=str(prompts.EXEMPLAR_DIR.parents[2] / 'pretrained' / 'reading' / 'spm.model'))
  rng = random.Random(0)
  actions = {
      'decision': [{'type': 'Search', 'query': '@1 founded by', 'thoughts': 'I need @1.'},
                   {'type': 'Terminate', 'thoughts': ''}],
      'summarize': [{'type': 'LinkSelection',
                     'grounded_summarization': 'According to [link_id=2], @1 was built in @2.',
                     'thoughts': 'x', 'selected_link_ids': [2]}],
      'answer': [{'type': 'Answer', 'thoughts': "It's @3.", 'answer': '@3 [link_id=1].'}],
      'relevance': [{'type': 'Check_Answer', 'passed': True}],
      'grounding': [{'type': 'Revise_Answer', 'revised_answer': 'No.'}],
  }
  for step_type in prompts.STEP_TYPES:
    head = prompts.ACTION_HEADS[step_type]
    head_ids = sp.encode(head)
    for action in actions[step_type]:
      for text in ('', hostile_string(rng)):
        action = {k: (v + text if isinstance(v, str) and k != 'type' else v)
                  for k, v in action.items()}
        target = prompts.render_target(step_type, action)
        assert target.startswith(head)
        assert sp.encode(target)[:len(head_ids)] == head_ids, (step_type, target)
