"""`ResultItem` and the batched `SearchTool` protocol (the agent's only tool door)."""

from __future__ import annotations

import dataclasses
from typing import Protocol, Sequence


@dataclasses.dataclass(frozen=True)
class ResultItem:
  """One search hit as the agent sees it.

  Backends number hits 1..k per query; the agent renumbers `link_id` so ids are
  unique across a whole trajectory. `doc_id` is where the hit came from (for
  analysis; never shown to the model).
  """
  link_id: int
  link_text: str
  snippet: str
  doc_id: str = ''


class SearchTool(Protocol):

  def search(self, queries: Sequence[str], k: int = 3) -> list[list[ResultItem]]:
    """Returns the top-`k` hits for every query, in order."""
    ...
