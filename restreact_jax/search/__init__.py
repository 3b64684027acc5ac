"""Search tools: `ResultItem`, the batched `SearchTool` protocol, and backends."""

from restreact_jax.search.types import ResultItem, SearchTool  # noqa: F401
