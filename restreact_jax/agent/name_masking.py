"""Name masking: a small model reads and writes entity names as placeholders.

A model trained from scratch on a few hundred thousand tokens does not learn
to copy a name it has never seen, and dev and test questions are about
entities that training never shows. Masking, in the spirit of the anonymised
reading-comprehension data of Hermann et al. (2015), takes that skill out of
the problem: before the model sees a text, every entity name of the world is
replaced by a placeholder `@1`, `@2`, ... numbered by first appearance in
that text, and the model's output is mapped back with the same table (the
years the world's facts hold are masked the same way: `from_world`). The
placeholders are a few dozen frequent tokens, so copying one is a lookup
the model learns early, and nothing it learns is about particular names.

Numbered by first appearance, a year's placeholder says nothing about when
it is: "Who was born first, A or B?" cannot be answered from `@3` and `@7`.
`ORDERED_YEARS` (`rest.name_masking = 'ordered_years'`) numbers a text's
names first and then its years, earliest first, so of two years the earlier
has the smaller placeholder.

Masking is a property of the model's text interface only: the agent, the
search tool, the rankers, the trajectories and the auto-eval all see real
names. Training text (corpus passages, seed and ranked examples) is masked
when it is written; `MaskedLLM` masks prompts and unmasks samples around any
`LLM`. A placeholder the table does not know (the model made it up) is left as
written, so a query or answer built on it fails honestly.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import pathlib
import re
from typing import Iterable, Mapping, Sequence

from restreact_jax import errors
from restreact_jax import jsonl
from restreact_jax import llm as llm_lib

PREFIX = '@'
MAX_PLACEHOLDERS = 40
PLACEHOLDERS: tuple[str, ...] = tuple(f'{PREFIX}{i}' for i in range(1, MAX_PLACEHOLDERS + 1))
_PLACEHOLDER_RE = re.compile(rf'{PREFIX}(\d+)(?!\d)')
# The modes of `rest.name_masking`: off, names and years numbered by first
# appearance, or a text's names first and then its years, earliest first.
ORDERED_YEARS = 'ordered_years'
MODES = (False, True, ORDERED_YEARS)


class NameMasker:
  """Masks the given names in texts; unmasks placeholders with a text's table.

  Args:
    names: the entity names (longer names win where names overlap).
    ordered: those of `names` that a text numbers after its other names, in
      their own order (numbers by value, then the rest as text), not by
      appearance.
  """

  def __init__(self, names: Iterable[str], ordered: Iterable[str] = ()):
    self.ordered = {n: i for i, n in enumerate(sorted(set(ordered), key=_order_key))}
    self.names = tuple(sorted({n for n in names if n.strip()}, key=lambda n: (-len(n), n)))
    alternatives = '|'.join(re.escape(n) for n in self.names) or r'(?!x)x'
    self._re = re.compile(rf'(?<![\w@])(?:{alternatives})(?!\w)')

  def table(self, *texts: str) -> dict[str, str]:
    """name -> placeholder, numbered by first appearance across `texts`.

    The `ordered` names found take the numbers after the others, in order.
    """
    out: dict[str, str] = {}
    found: set[str] = set()
    for text in texts:
      for m in self._re.finditer(text):
        if m.group(0) in self.ordered:
          found.add(m.group(0))
        elif m.group(0) not in out and len(out) < MAX_PLACEHOLDERS:
          out[m.group(0)] = PLACEHOLDERS[len(out)]
    for name in sorted(found, key=self.ordered.__getitem__):
      if len(out) < MAX_PLACEHOLDERS:
        out[name] = PLACEHOLDERS[len(out)]
    return out

  def mask(self, text: str, table: Mapping[str, str]) -> str:
    """`text` with every name in `table` replaced by its placeholder."""
    return self._re.sub(lambda m: table.get(m.group(0), m.group(0)), text)

  @staticmethod
  def unmask(text: str, table: Mapping[str, str]) -> str:
    """Placeholders of `table` back to names; unknown ones stay as written."""
    inverse = {v: k for k, v in table.items()}
    return _PLACEHOLDER_RE.sub(lambda m: inverse.get(m.group(0), m.group(0)), text)

  def mask_pair(self, inputs: str, targets: str) -> tuple[str, str]:
    """A training example masked with one table (the prompt's names first)."""
    table = self.table(inputs, targets)
    return self.mask(inputs, table), self.mask(targets, table)


@dataclasses.dataclass
class MaskedLLM:
  """Any `LLM` behind the masking: prompts masked, samples unmasked.

  Each request gets the table of its own prompt; a shared prefix is masked
  with the same table (the preambles hold no names, so it stays a prefix).
  """
  llm: llm_lib.LLM
  masker: NameMasker

  def _masked(self, request: llm_lib.SamplingRequest
              ) -> tuple[llm_lib.SamplingRequest, Mapping[str, str]]:
    table = self.masker.table(request.prompt)
    prompt = self.masker.mask(request.prompt, table)
    prefix = self.masker.mask(request.prefix, table)
    return dataclasses.replace(request, prompt=prompt,
                               prefix=prefix if prompt.startswith(prefix) else ''), table

  def _unmasked(self, samples: Sequence[llm_lib.Sample],
                table: Mapping[str, str]) -> list[llm_lib.Sample]:
    return [dataclasses.replace(s, text=self.masker.unmask(s.text, table)) for s in samples]

  def generate(self, requests: Sequence[llm_lib.SamplingRequest]) -> list[list[llm_lib.Sample]]:
    masked, tables = zip(*(self._masked(r) for r in requests)) if requests else ((), ())
    out = self.llm.generate(list(masked))
    return [self._unmasked(samples, table) for samples, table in zip(out, tables)]

  # The stepped door (`llm.can_step`) when the wrapped LLM has it.

  @property
  def steppable(self) -> bool:
    return llm_lib.can_step(self.llm)

  def submit(self, request: llm_lib.SamplingRequest) -> concurrent.futures.Future:
    masked, table = self._masked(request)
    inner = self.llm.submit(masked)
    outer: concurrent.futures.Future = concurrent.futures.Future()

    def done(f: concurrent.futures.Future) -> None:
      if f.exception() is not None:
        outer.set_exception(f.exception())
      else:
        outer.set_result(self._unmasked(f.result(), table))

    inner.add_done_callback(done)
    return outer

  def step(self) -> int:
    return self.llm.step()


def _order_key(symbol: str) -> tuple[int, int, str]:
  return (0, int(symbol), symbol) if symbol.isdigit() else (1, 0, symbol)


def as_mode(value: object, where: str = 'rest.name_masking') -> bool | str:
  """A masking mode of `MODES` from a setting or a command-line string.

  Raises `UserError` naming `where` for anything else.
  """
  if isinstance(value, bool) or value == ORDERED_YEARS:
    return value  # type: ignore[return-value]
  text = str(value).strip().strip('\'"').lower()
  if text in ('1', 'true', 'yes', '0', 'false', 'no', '', 'none'):
    return text in ('1', 'true', 'yes')
  if text == ORDERED_YEARS:
    return ORDERED_YEARS
  raise errors.UserError(f'{where} = {value!r}: expected True, False or {ORDERED_YEARS!r}')


def world_symbols(entities: Iterable[Mapping[str, object]], years: bool = True) -> list[str]:
  """Every entity name and (with `years`) every year a fact of the world holds."""
  from restreact_jax.world import schema  # pylint: disable=g-import-not-at-top
  names, found = [], set()
  for entity in entities:
    names.append(str(entity['name']))
    facts = entity.get('facts') or {}
    for relation, value in (facts.items() if isinstance(facts, Mapping) else ()):
      spec = schema.RELATIONS.get(relation)
      if years and spec is not None and spec.target == schema.YEAR:
        found.add(str(value))
  return list(dict.fromkeys(names)) + sorted(found)


def from_world(exp_dir: str | os.PathLike[str], years: bool = True,
               mode: bool | str = True) -> NameMasker:
  """The masker of an experiment's world: its names and, with `years`, its years.

  A year is copied like a name: the models here split `1958` into pieces and
  rewrote it as `195` or `19580` (0% on birth-year questions) until years
  were masked too. With `mode` `ORDERED_YEARS` a text's years are numbered
  after its names, earliest first.
  """
  mode = as_mode(mode)
  entities = pathlib.Path(exp_dir) / 'world' / 'entities.jsonl'
  symbols = world_symbols(jsonl.iter_jsonl(entities), years)
  ordered = [s for s in symbols if s.isdigit()] if mode == ORDERED_YEARS else ()
  return NameMasker(symbols, ordered)
