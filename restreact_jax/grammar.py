"""Constrained decoding: patterns compiled to token automata that mask logits.

A `Pattern` describes the text a completion must be (literals, quoted string
literals, digit runs, sequences, alternatives, repetition). It compiles in
two stages:

1. to a character DFA (Thompson NFA, then subset construction) over an
   alphabet of the characters the pattern names plus one class for every other
   character;
2. to a token table for a vocabulary: `table[s, t]` is the state after token
   `t` from state `s`, or -1 when the token would leave the pattern. It is
   computed for all tokens of a state at once (numpy, column by column of the
   tokens' characters), so a 256k vocabulary costs seconds, not minutes.

State 0 is *free*: every token is allowed and the row stays free. A token that
completes the pattern part-way (its remaining characters past an accepting
state) leads to the free state too, so what follows a completed pattern (a stop
marker, EOS) is the model's; so does a state no token of the vocabulary can
continue (a character it cannot spell). Decoding keeps one state per row on device,
masks the logits with `table[state] >= 0` and moves to `table[state, token]`
(`decoding.body_fn`); requests without a pattern stay in the free state.

`TokenTables` holds every pattern an engine has seen in one table (states of a
pattern are rows at its offset), so one compiled decode step serves them all.
Patterns are frozen dataclasses: equal patterns share their rows.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from typing import Any, Sequence

import numpy as np

from restreact_jax import errors

FREE = 0
_OTHER = 0  # the character class of every character a pattern does not name


# ----------------------------------------------------------------------------
# Patterns.
# ----------------------------------------------------------------------------


class Pattern:
  """Base of the pattern combinators (frozen dataclasses, hashable)."""

  def __add__(self, other: 'Pattern | str') -> 'Seq':
    return Seq((self, as_pattern(other)))

  def __radd__(self, other: str) -> 'Seq':
    return Seq((as_pattern(other), self))

  def __or__(self, other: 'Pattern | str') -> 'Alt':
    return Alt((self, as_pattern(other)))


@dataclasses.dataclass(frozen=True)
class Lit(Pattern):
  """Exactly `text`."""
  text: str


@dataclasses.dataclass(frozen=True)
class CharSet(Pattern):
  """One character: one of `chars`, or with `negate`, any character but those."""
  chars: str
  negate: bool = False


@dataclasses.dataclass(frozen=True)
class Seq(Pattern):
  """The parts one after another."""
  parts: tuple[Pattern, ...]


@dataclasses.dataclass(frozen=True)
class Alt(Pattern):
  """Any one of the options."""
  options: tuple[Pattern, ...]


@dataclasses.dataclass(frozen=True)
class Repeat(Pattern):
  """`inner` at least `min_count` times (no upper bound)."""
  inner: Pattern
  min_count: int = 0


def as_pattern(p: Pattern | str) -> Pattern:
  return Lit(p) if isinstance(p, str) else p


def seq(*parts: Pattern | str) -> Seq:
  return Seq(tuple(as_pattern(p) for p in parts))


def alt(*options: Pattern | str) -> Alt:
  return Alt(tuple(as_pattern(p) for p in options))


def optional(p: Pattern | str) -> Alt:
  return Alt((as_pattern(p), Lit('')))


def py_string(nonempty: bool = True, excluded: str = '') -> Pattern:
  r"""A one-line Python string literal, single- or double-quoted.

  Escapes are the ones `repr` writes for printable text (`\\`, `\'`, `\"`,
  `\n`, `\t`, `\r`, `\xNN`), so every match is a valid literal. With
  `nonempty`, its value has a character other than a space or a tab (the
  first such is a plain character). Characters in `excluded` appear only as
  `\xNN` escapes (e.g. '#', so that a stop marker cannot open inside a string).
  """
  hex_digit = CharSet('0123456789abcdefABCDEF')
  escape = seq('\\', alt(CharSet('\\\'"ntr'), seq('x', hex_digit, hex_digit)))

  def quoted(q: str) -> Pattern:
    plain = CharSet(q + '\\\n' + excluded, negate=True)
    body = Repeat(alt(plain, escape))
    if nonempty:
      blank = CharSet(' \t')
      solid = CharSet(q + '\\\n \t' + excluded, negate=True)
      body = seq(Repeat(blank), solid, body)
    return seq(q, body, q)

  return alt(quoted("'"), quoted('"'))


def digits() -> Pattern:
  """One or more decimal digits."""
  return Repeat(CharSet('0123456789'), 1)


def int_list() -> Pattern:
  """`[` comma-and-space separated non-negative integers `]` (may be empty)."""
  return seq('[', optional(seq(digits(), Repeat(seq(', ', digits())))), ']')


# ----------------------------------------------------------------------------
# Character DFA.
# ----------------------------------------------------------------------------


def _named_chars(p: Pattern, out: set[str]) -> None:
  if isinstance(p, Lit):
    out.update(p.text)
  elif isinstance(p, CharSet):
    out.update(p.chars)
  elif isinstance(p, Seq):
    for q in p.parts:
      _named_chars(q, out)
  elif isinstance(p, Alt):
    for q in p.options:
      _named_chars(q, out)
  elif isinstance(p, Repeat):
    _named_chars(p.inner, out)
  else:
    raise TypeError(f'not a pattern: {p!r}')


class _NFA:
  """Thompson construction: edges are (class set or None for epsilon, target)."""

  def __init__(self, classes: dict[str, int]):
    self.classes = classes
    self.all = frozenset(range(len(classes) + 1))
    self.edges: list[list[tuple[frozenset[int] | None, int]]] = []

  def state(self) -> int:
    self.edges.append([])
    return len(self.edges) - 1

  def build(self, p: Pattern, start: int) -> int:
    """Adds `p` from `start`; returns its end state."""
    if isinstance(p, Lit):
      cur = start
      for ch in p.text:
        nxt = self.state()
        self.edges[cur].append((frozenset([self.classes[ch]]), nxt))
        cur = nxt
      return cur
    if isinstance(p, CharSet):
      named = frozenset(self.classes[c] for c in p.chars)
      end = self.state()
      self.edges[start].append((self.all - named if p.negate else named, end))
      return end
    if isinstance(p, Seq):
      cur = start
      for q in p.parts:
        cur = self.build(q, cur)
      return cur
    if isinstance(p, Alt):
      end = self.state()
      for q in p.options:
        s = self.state()
        self.edges[start].append((None, s))
        self.edges[self.build(q, s)].append((None, end))
      return end
    if isinstance(p, Repeat):
      cur = start
      for _ in range(p.min_count):
        cur = self.build(p.inner, cur)
      loop = self.state()
      self.edges[cur].append((None, loop))
      self.edges[self.build(p.inner, loop)].append((None, loop))
      return loop
    raise TypeError(f'not a pattern: {p!r}')

  def closure(self, states: set[int]) -> frozenset[int]:
    stack, seen = list(states), set(states)
    while stack:
      for cls, nxt in self.edges[stack.pop()]:
        if cls is None and nxt not in seen:
          seen.add(nxt)
          stack.append(nxt)
    return frozenset(seen)


@dataclasses.dataclass(frozen=True)
class CharDFA:
  """A deterministic automaton over character classes.

  Attributes:
    classes: character -> class index (1..); every other character is class 0.
    trans: `[S, C]` next state, -1 for none; state 0 is the start.
    accept: `[S]` bool.
  """
  classes: dict[str, int]
  trans: np.ndarray
  accept: np.ndarray

  def char_class(self, ch: str) -> int:
    return self.classes.get(ch, _OTHER)

  def walk(self, text: str, state: int = 0) -> int:
    """The state after `text` from `state`; -1 once it leaves the pattern."""
    for ch in text:
      if state < 0:
        return -1
      state = int(self.trans[state, self.char_class(ch)])
    return state

  def follows(self, text: str) -> str:
    """'complete' (a prefix of `text` is a whole match; the rest is free),
    'partial' (`text` can still become one) or 'broken'."""
    state = 0
    for ch in text:
      nxt = int(self.trans[state, self.char_class(ch)])
      if nxt < 0:
        return 'complete' if self.accept[state] else 'broken'
      state = nxt
    return 'complete' if self.accept[state] else 'partial'


def compile_chars(pattern: Pattern) -> CharDFA:
  """The character DFA of `pattern` (subset construction)."""
  named: set[str] = set()
  _named_chars(pattern, named)
  classes = {ch: i + 1 for i, ch in enumerate(sorted(named))}
  nfa = _NFA(classes)
  start = nfa.state()
  final = nfa.build(pattern, start)
  num_classes = len(classes) + 1
  first = nfa.closure({start})
  index = {first: 0}
  order = [first]
  rows: list[list[int]] = []
  while len(rows) < len(order):
    current = order[len(rows)]
    row = []
    for c in range(num_classes):
      moved = {nxt for s in current for cls, nxt in nfa.edges[s] if cls is not None and c in cls}
      if not moved:
        row.append(-1)
        continue
      target = nfa.closure(moved)
      if target not in index:
        index[target] = len(order)
        order.append(target)
      row.append(index[target])
    rows.append(row)
  return CharDFA(classes=classes, trans=np.asarray(rows, np.int32).reshape(-1, num_classes),
                 accept=np.asarray([final in s for s in order], bool))


# ----------------------------------------------------------------------------
# Token tables.
# ----------------------------------------------------------------------------

_BYTE_PIECE = re.compile(r'^<0x([0-9A-Fa-f]{2})>$')


def token_texts(vocab: Any) -> list[str | None]:
  """Each token id's text as it reads inside a sequence; None for control ids.

  SentencePiece pieces are read directly ('▁' is a space, `<0xNN>` byte pieces
  are their character when ASCII, a stand-in non-ASCII character otherwise,
  which only string contents accept); other vocabularies decode ids one by one.
  """
  sp = getattr(vocab, 'tokenizer', None)
  size = vocab.vocab_size
  out: list[str | None] = []
  for i in range(size):
    if sp is not None and i < sp.get_piece_size():
      if sp.is_control(i) or sp.is_unknown(i):
        out.append(None)
        continue
      piece = sp.id_to_piece(i)
      m = _BYTE_PIECE.match(piece)
      if m:
        b = int(m.group(1), 16)
        out.append(chr(b) if b < 0x80 else '\x80')
      else:
        out.append(piece.replace('\u2581', ' '))
    elif sp is not None:
      out.append(None)  # ids past the model's pieces (padding of the embedding)
    else:
      text = vocab.decode([i])
      out.append(text or None)
  return out


def _token_classes(dfa: CharDFA, texts: Sequence[str | None]) -> np.ndarray:
  """`[V, L]` class of each token's characters; -1 pads, -2 marks control ids."""
  width = max([len(t) for t in texts if t] or [1])
  out = np.full((len(texts), width), -1, np.int32)
  for i, t in enumerate(texts):
    if not t:
      out[i, 0] = -2
      continue
    out[i, :len(t)] = [dfa.char_class(ch) for ch in t]
  return out


def token_table(dfa: CharDFA, classes_VxL: np.ndarray, offset: int) -> np.ndarray:
  """`[S, V]` next states (pattern state s is row `offset + s`; -1 disallowed).

  A token is allowed when its characters stay in the pattern, or leave it only
  after an accepting state (then the row is free).
  """
  num_states = dfa.trans.shape[0]
  vocab, width = classes_VxL.shape
  control = classes_VxL[:, 0] == -2
  table = np.empty((num_states, vocab), np.int32)
  for s in range(num_states):
    cur = np.full((vocab,), s, np.int32)
    alive = ~control
    free = np.zeros((vocab,), bool)
    for i in range(width):
      cls = classes_VxL[:, i]
      step = alive & ~free & (cls >= 0)
      if not step.any():
        break
      nxt = np.where(step, dfa.trans[cur, np.maximum(cls, 0)], cur)
      leaves = step & (nxt < 0)
      free |= leaves & dfa.accept[cur]
      alive &= ~(leaves & ~dfa.accept[cur])
      cur = np.where(step & (nxt >= 0), nxt, cur)
    row = np.where(free, FREE, np.where(alive, cur + offset, -1))
    if dfa.accept[s]:
      row = np.where(control, FREE, row)  # EOS and the like end a complete pattern
    table[s] = row
  return table


class TokenTables:
  """Every pattern one vocabulary has seen, as rows of one table.

  Args:
    texts: `token_texts(vocab)`.
  """

  def __init__(self, texts: Sequence[str | None]):
    self._texts = list(texts)
    self._classes: dict[Pattern, tuple[CharDFA, int]] = {}
    self._rows = [np.zeros((1, len(self._texts)), np.int32)]  # the free state
    self._size = 1
    self._lock = threading.Lock()
    self.version = 0  # bumps whenever rows are added

  @property
  def vocab_size(self) -> int:
    return len(self._texts)

  @property
  def num_states(self) -> int:
    """Rows in use (the free row included)."""
    return self._size

  def start(self, pattern: Pattern | None, response_prefix: str = '',
            where: str = 'request') -> int:
    """The table row a request starts in: the pattern's, after `response_prefix`.

    Raises:
      UserError: the prefix leaves the pattern.
    """
    if pattern is None:
      return FREE
    dfa, offset = self._compiled(pattern)
    state = dfa.walk(response_prefix)
    if state < 0:
      raise errors.UserError(
          f'{where}: response_prefix {response_prefix[:60]!r} does not fit the request grammar')
    return offset + state

  def table(self, width: int | None = None) -> np.ndarray:
    """All rows, padded to a power of two (so growth seldom changes shapes).

    Args:
      width: the model's logits width, when it differs from the vocabulary's
        size (vocabularies padded for sharding): ids past the vocabulary are
        free in the free row and refused in every pattern's rows.
    """
    with self._lock:
      full = np.concatenate(self._rows, axis=0)
    if width is not None and width != full.shape[1]:
      if width < full.shape[1]:
        full = full[:, :width]
      else:
        extra = np.full((full.shape[0], width - full.shape[1]), -1, np.int32)
        extra[FREE] = FREE
        full = np.concatenate([full, extra], axis=1)
    rows = 1 << max(0, (full.shape[0] - 1).bit_length())
    pad = np.zeros((rows - full.shape[0], full.shape[1]), np.int32)
    return np.concatenate([full, pad], axis=0)

  def _compiled(self, pattern: Pattern) -> tuple[CharDFA, int]:
    with self._lock:
      hit = self._classes.get(pattern)
      if hit is not None:
        return hit
      dfa = compile_chars(pattern)
      rows = token_table(dfa, _token_classes(dfa, self._texts), self._size)
      # A state no token of this vocabulary continues (a character it cannot
      # spell) frees the row instead of leaving the model no token at all.
      rows[(rows < 0).all(axis=1)] = FREE
      self._classes[pattern] = (dfa, self._size)
      self._rows.append(rows)
      self._size += rows.shape[0]
      self.version += 1
      return dfa, self._size - rows.shape[0]
