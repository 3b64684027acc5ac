"""Tests for agent/parsing.py: accepted forms, error classes, and fuzzing."""

import random

import pytest

from restreact_jax.agent import parsing
from restreact_jax.agent import prompts
from restreact_jax.agent.parsing import parse_step

HOSTILE = ("'", '"', "'''", '"""', '\\', '\\\\', '\n', '\r\n', '\r', '# [END]', '#', ')', '(',
           ']', '[', '}', '{', ',', '=', '\x00', '\t', '\x0c', '\u2028', '\u2029', '\x85', 'é',
           '中文', '🙂', '\ud800', '\U0010ffff', "'); import os; os.system('rm -rf /') #",
           '__import__("os")', 'ACTION_SELECTED = ', 'Search(query=', 'lambda: 0', '\\x23',
           "f'{x}'", 'ActionWrapper(', 'True', 'None', '0x10', '1e309', ' ', '  ', 'END', '\\N{')


def hostile_string(rng: random.Random, max_parts: int = 8) -> str:
  parts = []
  for _ in range(rng.randint(0, max_parts)):
    r = rng.random()
    if r < 0.5:
      parts.append(rng.choice(HOSTILE))
    elif r < 0.8:
      parts.append(''.join(chr(rng.randint(32, 126)) for _ in range(rng.randint(1, 6))))
    else:
      parts.append(''.join(chr(rng.randint(0, 0x2FFFF)) for _ in range(rng.randint(1, 3))))
  return ''.join(parts)


# --- accepted forms -----------------------------------------------------------


def test_decision_forms():
  r = parse_step('decision', "ACTION_SELECTED = ActionWrapper(thoughts='t', "
                 "action=Search(query='capital of Veloria'))")
  assert r.ok and r.action == {'type': 'Search', 'query': 'capital of Veloria', 'thoughts': 't'}
  r = parse_step('decision', 'ACTION_SELECTED = ActionWrapper(thoughts="done", '
                 'action=Terminate())  # [END]')
  assert r.ok and r.action == {'type': 'Terminate', 'thoughts': 'done'}
  # The PAST_ACTIONS form, an annotation, whitespace and comments.
  r = parse_step('decision', "# first a thought\n\n  \nACTION_SELECTED :ActionWrapper=  "
                 "Search( query = 'q' ,thoughts='why' )\n")
  assert r.ok and r.action == {'type': 'Search', 'query': 'q', 'thoughts': 'why'}
  assert r.comments == ['first a thought']
  # Positional arguments in field order.
  r = parse_step('decision', "ACTION_SELECTED = ActionWrapper('why', Search('q'))")
  assert r.ok and r.action == {'type': 'Search', 'query': 'q', 'thoughts': 'why'}


def test_summarize_and_checks():
  text = ("# [link_id=2] is off topic. Not selected.\n"
          "ACTION_SELECTED: LinkSelection = LinkSelection(grounded_summarization="
          "'According to [link_id=1], x.', thoughts='t', selected_link_ids=[1, 3, 1])")
  r = parse_step('summarize', text, valid_link_ids=[1, 2, 3])
  assert r.ok and r.action['selected_link_ids'] == [1, 3]
  assert r.comments == ['[link_id=2] is off topic. Not selected.']
  assert parse_step('summarize', text, valid_link_ids=[1, 2]).error == 'unknown_link_id'
  r = parse_step('relevance', 'ACTION_SELECTED: Command = Check_Answer(passed=True)')
  assert r.ok and r.action == {'type': 'Check_Answer', 'passed': True}
  r = parse_step('grounding', 'ACTION_SELECTED = Revise_Answer(revised_answer="better")')
  assert r.ok and r.action == {'type': 'Revise_Answer', 'revised_answer': 'better'}
  r = parse_step('answer', "ACTION_SELECTED: Answer = Answer(thoughts='t', answer='a')")
  assert r.ok and r.action == {'type': 'Answer', 'thoughts': 't', 'answer': 'a'}


@pytest.mark.parametrize('step_type,text,error', [
    ('decision', '', 'empty'),
    ('decision', '   \n\t', 'empty'),
    ('decision', '# only a comment', 'empty'),
    ('decision', "ACTION_SELECTED = Search(query='q'", 'syntax'),
    ('decision', "x = 1\nACTION_SELECTED = Search(query='q', thoughts='t')", 'syntax'),
    ('decision', "RESULT = Search(query='q', thoughts='t')", 'no_action_selected'),
    ('decision', "print('hi')", 'no_action_selected'),
    ('decision', "ACTION_SELECTED = Answer(thoughts='t', answer='a')", 'wrong_class'),
    ('decision', "ACTION_SELECTED = ActionWrapper(thoughts='t', action=Answer(answer='a'))",
     'wrong_class'),
    ('decision', "ACTION_SELECTED = Search(query=q, thoughts='t')", 'bad_field'),
    ('decision', "ACTION_SELECTED = Search(query='', thoughts='t')", 'bad_field'),
    ('decision', "ACTION_SELECTED = Search(query=f'{x}', thoughts='t')", 'bad_field'),
    ('decision', "ACTION_SELECTED = Search(query='q', thoughts='t', extra=1)", 'bad_field'),
    ('decision', "ACTION_SELECTED = Search(query='q', thoughts='  ')", 'empty_thoughts'),
    ('decision', "ACTION_SELECTED = ActionWrapper(action=Terminate())", 'empty_thoughts'),
    ('decision', "ACTION_SELECTED = Search(query=__import__('os').getcwd(), thoughts='t')",
     'bad_field'),
    ('summarize', "ACTION_SELECTED = LinkSelection(grounded_summarization='s', thoughts='t', "
     "selected_link_ids=['1'])", 'bad_field'),
    ('summarize', "ACTION_SELECTED = LinkSelection(grounded_summarization='s', thoughts='t')",
     'bad_field'),
    ('relevance', 'ACTION_SELECTED = Check_Answer(passed=1)', 'bad_field'),
    ('grounding', "ACTION_SELECTED = Search(query='q', thoughts='t')", 'wrong_class'),
    ('answer', "ACTION_SELECTED = Answer(thoughts='t', answer='')", 'bad_field'),
])
def test_error_classes(step_type, text, error):
  r = parse_step(step_type, text, valid_link_ids=[1, 2, 3])
  assert not r.ok and r.action is None and r.error == error


def test_never_executes(tmp_path):
  marker = tmp_path / 'pwned'
  text = f"ACTION_SELECTED = Search(query=open({str(marker)!r}, 'w').write('x'), thoughts='t')"
  assert parse_step('decision', text).error == 'bad_field'
  assert not marker.exists()


def test_unknown_step_type_is_a_programming_error():
  with pytest.raises(ValueError):
    parse_step('nope', 'x')


# --- fuzzing ------------------------------------------------------------------


def _random_action(rng, step_type):
  s = lambda: 'x' + hostile_string(rng)  # noqa: E731  (non-blank)
  if step_type == 'decision':
    if rng.random() < 0.5:
      return {'type': 'Search', 'query': s(), 'thoughts': s()}
    return {'type': 'Terminate', 'thoughts': s()}
  if step_type == 'summarize':
    return {'type': 'LinkSelection', 'grounded_summarization': s(), 'thoughts': s(),
            'selected_link_ids': sorted(rng.sample(range(1, 30), rng.randint(0, 3)))}
  if step_type == 'answer':
    return {'type': 'Answer', 'thoughts': s(), 'answer': s()}
  if rng.random() < 0.5:
    return {'type': 'Check_Answer', 'passed': rng.random() < 0.5}
  return {'type': 'Revise_Answer', 'revised_answer': s()}


def test_fuzz_round_trip_of_rendered_targets():
  """Canonical targets with hostile field values parse back to the same action."""
  rng = random.Random(0)
  for i in range(2500):
    step_type = prompts.STEP_TYPES[i % 5]
    action = _random_action(rng, step_type)
    comments = [hostile_string(rng) for _ in range(rng.randint(0, 2))]
    text = prompts.render_target(step_type, action, comments)
    assert '# [END]' not in text
    r = parse_step(step_type, text)
    assert r.ok, (text, r)
    assert r.action == action
    assert len(r.comments) == len(comments)


def test_fuzz_hostile_outputs_never_raise():
  """≥ 10k random, hostile and mutated outputs: always a well-formed ParseResult."""
  rng = random.Random(1)
  seen_errors = set()
  valid = [prompts.render_target(t, _random_action(rng, t)) for t in prompts.STEP_TYPES * 20]
  for i in range(12000):
    step_type = prompts.STEP_TYPES[i % 5]
    kind = i % 3
    if kind == 0:
      text = hostile_string(rng, 20)
    elif kind == 1:  # a valid output truncated or spliced with hostile text
      base = rng.choice(valid)
      cut = rng.randint(0, len(base))
      text = base[:cut] + (hostile_string(rng) if rng.random() < 0.5 else '') + base[cut:][:5]
    else:
      text = f'ACTION_SELECTED = {hostile_string(rng, 12)}'
    r = parse_step(step_type, text, valid_link_ids=[1, 2, 3] if rng.random() < 0.5 else None)
    assert isinstance(r, parsing.ParseResult)
    assert r.ok == (r.error is None) == (r.action is not None)
    assert r.error is None or r.error in parsing.ERRORS
    assert all(isinstance(c, str) for c in r.comments)
    seen_errors.add(r.error)
  # The fuzz reaches several failure classes (it is not trivially all 'syntax').
  assert {'syntax', 'empty', 'no_action_selected', 'wrong_class'} <= seen_errors


def test_non_string_and_huge_inputs():
  assert parse_step('decision', None).error == 'empty'  # type: ignore[arg-type]
  assert parse_step('decision', '(' * 10000).error == 'syntax'
  assert parse_step('decision', 'ACTION_SELECTED = ' + '[' * 500 + ']' * 500).error in (
      'syntax', 'wrong_class')
  assert parse_step('decision', 'x' * (parsing.MAX_TEXT_CHARS + 1)).error == 'syntax'
  assert parse_step('decision', 'ACTION_SELECTED = Search(query=' + '9' * 5000 + ')').error in (
      'syntax', 'bad_field')
