"""Tests for agent/calculator.py: results, every refused construct, hostile input."""

import random
import string
import warnings

import pytest

from restreact_jax.agent import calculator


@pytest.mark.parametrize('expression, expected', [
    ('1921 - 1888', '33'),
    ('  1974 -1931 ', '43'),
    ('(2006 - 1965) * 2', '82'),
    ('84 / 2', '42'),          # true division of ints: no `.0`
    ('7 / 2', '3.5'),
    ('1 / 3', '0.333333333333'),
    ('7 // 2', '3'),
    ('-7 // 2', '-4'),
    ('7 % 3', '1'),
    ('-(3 - 10)', '7'),
    ('+5', '5'),
    ('2.5 * 4', '10'),
    ('0.1 + 0.2', '0.3'),
    ('((((1))))', '1'),
    ('1_000 + 1', '1001'),
    ('0x10 + 1', '17'),
])
def test_results(expression, expected):
  result = calculator.evaluate(expression)
  assert result.ok and result.error is None
  assert result.text == expected
  assert calculator.calculate(expression) == expected
  assert not calculator.is_error(expected)


@pytest.mark.parametrize('expression, reason', [
    ('x + 1', 'Name'),
    ('__import__("os").system("true")', 'Call'),
    ('print(1)', 'Call'),
    ('(1).real', 'Attribute'),
    ('2 ** 10', '**'),
    ('10 ** 10 ** 10', '**'),
    ('"a" + "b"', 'only numbers'),
    ("'1921' - '1888'", 'only numbers'),
    ('True + 1', 'only numbers'),
    ('None', 'only numbers'),
    ('1j * 2', 'only numbers'),
    ('lambda: 1', 'Lambda'),
    ('[x for x in (1, 2)]', 'ListComp'),
    ('(1, 2)', 'Tuple'),
    ('[1, 2]', 'List'),
    ('1 < 2', 'Compare'),
    ('1 and 2', 'BoolOp'),
    ('~5', 'UnaryOp'),
    ('not 1', 'UnaryOp'),
    ('1 << 40', 'BinOp'),
    ('6 & 3', 'BinOp'),
    ('1 if 1 else 2', 'IfExp'),
    ('1 / 0', 'division by zero'),
    ('1 // (2 - 2)', 'division by zero'),
    ('5 % 0', 'division by zero'),
    ('1.0 / 0.0', 'division by zero'),
    ('1000000000000 + 1', 'too large'),
    ('1e300', 'too large'),
    ('999999 * 999999 * 999999', 'too large'),
    ('1' * 40, 'too large'),
    ('1 +', 'not an arithmetic expression'),
    ('x = 1', 'not an arithmetic expression'),
    ('import os', 'not an arithmetic expression'),
    ('1; 2', 'not an arithmetic expression'),
    ('', 'empty'),
    ('   ', 'empty'),
    ('1 + ' * 100 + '1', 'longer than'),
    (' + '.join(['1'] * 40), 'more than 64 parts'),
    ('\x00', 'not an arithmetic expression'),
])
def test_refused_constructs_give_an_error_text(expression, reason):
  result = calculator.evaluate(expression)
  assert not result.ok and result.value is None
  assert reason in result.error, result.error
  assert result.text == calculator.ERROR_PREFIX + result.error
  assert calculator.is_error(calculator.calculate(expression))


def test_no_warnings_on_odd_text():
  with warnings.catch_warnings():
    warnings.simplefilter('error')
    assert not calculator.evaluate('1abc + 2').ok
    assert not calculator.evaluate('0777').ok


def test_non_strings_are_errors_not_exceptions():
  for value in (None, 12, 3.5, b'1+1', ['1 + 1'], object()):
    result = calculator.evaluate(value)
    assert not result.ok and 'string' in result.error


def test_bounds_hold_for_intermediate_results():
  # Each literal is small, the product is not: refused, not computed.
  assert 'too large' in calculator.evaluate('100000 * 100000 * 100000').error
  # Just below the bound is fine.
  assert calculator.calculate('999999 * 999999') == str(999999 * 999999)


def test_fuzz_never_raises():
  rng = random.Random(0)
  pieces = ['1', '0', '9' * 13, '2.5', '1e308', '(', ')', '+', '-', '*', '/', '//', '%', '**',
            ' ', 'x', '__import__', '(', '"', "'", '[', ']', '{', '}', 'lambda', ':', ',',
            '.', 'real', 'for', 'in', 'if', 'else', '\n', '\\', '#', '[END]', '\x00', '\ud800',
            'os.system("rm -rf /")', 'open("f")', '()', '**9**9**9', 'not', '~', 'and']
  alphabet = string.printable + '\u2028\u00e9\ud800'
  seen_ok = seen_err = 0
  arithmetic = ['1', '7', '0', '12.5', '1921', '(', ')', '+', '-', '*', '/', '//', '%', ' ']
  for i in range(4500):
    if i % 3 == 0:
      text = ''.join(rng.choice(pieces) for _ in range(rng.randint(0, 30)))
    elif i % 3 == 1:
      text = ''.join(rng.choice(alphabet) for _ in range(rng.randint(0, 80)))
    else:  # near-valid arithmetic: reaches the evaluator, not only the parser
      text = ''.join(rng.choice(arithmetic) for _ in range(rng.randint(1, 12)))
    result = calculator.evaluate(text)  # must not raise
    assert isinstance(result.text, str)
    if result.ok:
      seen_ok += 1
      assert isinstance(result.value, (int, float))
      assert abs(result.value) < calculator.MAX_ABS
    else:
      seen_err += 1
      assert result.text.startswith(calculator.ERROR_PREFIX)
  # The fuzz reached both outcomes (it is not all noise).
  assert seen_ok > 100 and seen_err > 1000


def test_random_valid_expressions_match_python_arithmetic():
  # Reference: Python's own arithmetic on the same numbers, computed here on
  # trusted, generated expressions (never on model output).
  rng = random.Random(1)
  ops = ['+', '-', '*', '//', '%']
  for _ in range(500):
    a, b, c = (rng.randint(-5000, 5000) for _ in range(3))
    o1, o2 = rng.choice(ops), rng.choice(ops)
    if (o1 in ('//', '%') and b == 0) or (o2 in ('//', '%') and c == 0):
      continue
    expression = f'({a} {o1} {b}) {o2} {c}'
    left = {'+': a + b, '-': a - b, '*': a * b, '//': a // b if b else 0,
            '%': a % b if b else 0}[o1]
    expected = {'+': left + c, '-': left - c, '*': left * c, '//': left // c if c else 0,
                '%': left % c if c else 0}[o2]
    assert calculator.calculate(expression) == str(expected), expression
