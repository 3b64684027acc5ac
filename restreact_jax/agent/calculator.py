"""The calculator tool: arithmetic on numbers, evaluated from the `ast`, never run.

The agent's optional second tool (`AgentConfig.tools = ('search',
'calculator')`). The model writes `Calculate(expression='1974 - 1931')`; the
expression is parsed with `ast.parse(mode='eval')` and walked by hand. Only
these constructs are accepted:

  int / float literals         (no bool, complex, str, bytes, None)
  unary + and -
  binary + - * / // %          (no `**`: a power is the easy way to a huge number)
  parentheses                  (they leave no node in the tree)

and only within bounds: at most `MAX_CHARS` characters and `MAX_NODES` tree
nodes, and every literal and every intermediate result below `MAX_ABS` in
magnitude. Anything else (a name, a call, an attribute, a comparison, a
lambda, a comprehension, a division by zero, ...) yields an error text, never
an exception, so a model's bad expression is recorded and the agent goes on.

Results are text: integers (and floats with an integral value) without `.0`,
other floats with 12 significant digits; errors read `error: <what>`.
"""

from __future__ import annotations

import ast
import dataclasses
import math
import operator
import warnings
from typing import Any, Callable

MAX_CHARS = 200
MAX_NODES = 64
MAX_ABS = 1e12
ERROR_PREFIX = 'error: '

_UNARY: dict[type, Callable[[Any], Any]] = {ast.UAdd: operator.pos, ast.USub: operator.neg}
_BINARY: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
}


@dataclasses.dataclass(frozen=True)
class Calculation:
  """The outcome of one expression.

  Attributes:
    expression: the expression as given.
    value: the number, or None on error.
    error: what went wrong (None on success).
  """
  expression: str
  value: int | float | None
  error: str | None = None

  @property
  def ok(self) -> bool:
    return self.error is None

  @property
  def text(self) -> str:
    """The result as the agent shows it: the number, or `error: ...`."""
    if self.error is not None:
      return ERROR_PREFIX + self.error
    return format_number(self.value)


class _Reject(Exception):
  """Internal: carries the reason an expression is refused."""


def format_number(value: int | float) -> str:
  """`41` for 41 and 41.0; `0.333333333333` for 1/3.

  Args:
    value: a finite number.

  Returns:
    Its text.
  """
  if isinstance(value, float):
    if value.is_integer():
      return str(int(value))
    return f'{value:.12g}'
  return str(int(value))


def _bounded(value: Any) -> int | float:
  if isinstance(value, float) and not math.isfinite(value):
    raise _Reject('the result is not a finite number')
  if abs(value) >= MAX_ABS:
    raise _Reject(f'a number is too large (limit {MAX_ABS:.0e})')
  return value


def _eval(node: ast.AST) -> int | float:
  if isinstance(node, ast.Constant):
    # `type(...) in` rather than isinstance: bool is an int subclass.
    if type(node.value) not in (int, float):  # pylint: disable=unidiomatic-typecheck
      raise _Reject(f'only numbers are allowed, not {type(node.value).__name__}')
    return _bounded(node.value)
  if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
    return _bounded(_UNARY[type(node.op)](_eval(node.operand)))
  if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
    left, right = _eval(node.left), _eval(node.right)
    if isinstance(node.op, (ast.Div, ast.FloorDiv, ast.Mod)) and right == 0:
      raise _Reject('division by zero')
    return _bounded(_BINARY[type(node.op)](left, right))
  if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
    raise _Reject('** is not allowed')
  raise _Reject(f'{type(node).__name__} is not allowed (only numbers, + - * / // % and '
                'parentheses)')


def evaluate(expression: Any) -> Calculation:
  """Evaluates an arithmetic expression without executing anything.

  Args:
    expression: the model's expression (untrusted; any object).

  Returns:
    A `Calculation`; never raises.
  """
  if not isinstance(expression, str):
    return Calculation(str(expression), None, 'the expression must be a string')
  if not expression.strip():
    return Calculation(expression, None, 'empty expression')
  if len(expression) > MAX_CHARS:
    return Calculation(expression, None, f'expression longer than {MAX_CHARS} characters')
  try:
    with warnings.catch_warnings():
      # Odd text makes the parser warn (e.g. "invalid decimal literal");
      # the error text already says what is wrong.
      warnings.simplefilter('ignore', SyntaxWarning)
      tree = ast.parse(expression.strip(), mode='eval')
  except (SyntaxError, ValueError, MemoryError, RecursionError, OverflowError):
    return Calculation(expression, None, 'not an arithmetic expression')
  nodes = 0
  for _ in ast.walk(tree):
    nodes += 1
    if nodes > MAX_NODES:
      return Calculation(expression, None, f'expression has more than {MAX_NODES} parts')
  try:
    value = _eval(tree.body)
  except _Reject as e:
    return Calculation(expression, None, str(e))
  except (ArithmeticError, RecursionError, MemoryError, TypeError, ValueError):
    # Defensive: the bounds above should make these unreachable.
    return Calculation(expression, None, 'cannot evaluate')
  return Calculation(expression, value)


def calculate(expression: Any) -> str:
  """The result text of `evaluate(expression)` (a number or `error: ...`)."""
  return evaluate(expression).text


def is_error(result: str) -> bool:
  """Whether a recorded result text is an error."""
  return str(result).startswith(ERROR_PREFIX)
