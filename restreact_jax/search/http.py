"""A `SearchTool` over any HTTP JSON search API.

The request is described by a URL template (`{query}` and `{k}` are filled in,
URL-encoded), a method (GET, or POST with a JSON body template), fixed headers
and an API key read from an environment variable (sent as a header, or as a
query parameter). The response is mapped to `ResultItem`s through configurable
field names (`results_path` is a dotted path to the list of hits).

Failures become one-line `UserError`s naming the URL (never the key): timeouts,
connection errors, 429 and 5xx are retried with exponential backoff; other HTTP
errors and malformed responses fail at once. The key is never logged, hashed
into the cache key, or put in an error message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import socket
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any, Callable, Mapping, Sequence

from restreact_jax import errors
from restreact_jax.search.types import ResultItem

_RETRY_STATUS = frozenset({408, 429, 500, 502, 503, 504})


@dataclasses.dataclass(frozen=True)
class HttpSearchConfig:
  """How to call a search API and read its answer.

  Attributes:
    url: URL template, e.g. 'https://host/search?q={query}&n={k}'.
    method: 'GET' or 'POST'.
    headers: extra request headers.
    body: POST only: a JSON object whose string values may hold `{query}`/`{k}`
      (a value exactly '{k}' becomes the integer k).
    api_key_env: name of the environment variable holding the key ('' = none).
    api_key_header: header that carries the key ('' to send it as a parameter).
    api_key_prefix: put before the key in the header, e.g. 'Bearer '.
    api_key_param: query parameter that carries the key when not in a header.
    results_path: dotted path to the list of hits in the response JSON.
    title_field: hit field shown as the link text.
    snippet_field: hit field shown as the snippet.
    id_field: hit field kept as `doc_id` (e.g. a URL); optional in the hits.
    timeout_s: per-request timeout.
    retries: extra attempts after the first on retryable failures.
    backoff_s: first backoff; doubles after each failed attempt.
    max_snippet_chars: snippets are cut to this length.
  """
  url: str
  method: str = 'GET'
  headers: Mapping[str, str] = dataclasses.field(default_factory=dict)
  body: Mapping[str, Any] | None = None
  api_key_env: str = ''
  api_key_header: str = 'Authorization'
  api_key_prefix: str = 'Bearer '
  api_key_param: str = 'key'
  results_path: str = 'results'
  title_field: str = 'title'
  snippet_field: str = 'snippet'
  id_field: str = 'url'
  timeout_s: float = 10.0
  retries: int = 3
  backoff_s: float = 0.5
  max_snippet_chars: int = 200

  def validate(self) -> None:
    if self.method.upper() not in ('GET', 'POST'):
      raise errors.UserError(f'http search: method must be GET or POST, got {self.method!r}')
    if not self.url.startswith(('http://', 'https://')):
      raise errors.UserError(
          f'http search: url must start with http:// or https://, got {self.url!r}')
    if self.retries < 0 or self.timeout_s <= 0:
      raise errors.UserError('http search: retries must be >= 0 and timeout_s > 0')


def _fill(value: Any, query: str, k: int) -> Any:
  if isinstance(value, str):
    return k if value == '{k}' else value.replace('{query}', query).replace('{k}', str(k))
  if isinstance(value, Mapping):
    return {key: _fill(v, query, k) for key, v in value.items()}
  if isinstance(value, list):
    return [_fill(v, query, k) for v in value]
  return value


class HttpSearch:
  """Calls a JSON search API once per query.

  Args:
    config: the request and response description.
    sleep: the backoff sleep (tests pass a fake clock).
  """

  name = 'http'

  def __init__(self, config: HttpSearchConfig, sleep: Callable[[float], None] = time.sleep):
    config.validate()
    self.config = config
    self._sleep = sleep
    self._key = ''
    if config.api_key_env:
      self._key = os.environ.get(config.api_key_env, '')
      if not self._key:
        raise errors.UserError(
            f'http search: environment variable {config.api_key_env} (the API key) is not set')

  @property
  def config_hash(self) -> str:
    """Hash of the request and response description; the key is left out."""
    fields = dataclasses.asdict(self.config)
    payload = json.dumps(fields, sort_keys=True, default=str)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]

  def _redact(self, text: str) -> str:
    return text.replace(self._key, '***') if self._key else text

  def _request(self, query: str, k: int) -> tuple[urllib.request.Request, str]:
    """Builds the request and the URL to show in messages (without the key)."""
    cfg = self.config
    url = cfg.url.replace('{query}', urllib.parse.quote(query)).replace('{k}', str(k))
    shown = url
    headers = {'Accept': 'application/json', **cfg.headers}
    if self._key:
      if cfg.api_key_header:
        headers[cfg.api_key_header] = cfg.api_key_prefix + self._key
      else:
        sep = '&' if urllib.parse.urlsplit(url).query else '?'
        url = f'{url}{sep}{urllib.parse.urlencode({cfg.api_key_param: self._key})}'
    data = None
    if cfg.method.upper() == 'POST':
      body = dict(cfg.body or {'query': '{query}', 'k': '{k}'})
      data = json.dumps(_fill(body, query, k)).encode()
      headers['Content-Type'] = 'application/json'
    request = urllib.request.Request(url, data=data, headers=headers, method=cfg.method.upper())
    return request, shown

  def _fetch(self, query: str, k: int) -> Any:
    request, shown = self._request(query, k)
    delay = self.config.backoff_s
    problem = ''
    for attempt in range(self.config.retries + 1):
      if attempt:
        self._sleep(delay)
        delay *= 2
      try:
        with urllib.request.urlopen(request, timeout=self.config.timeout_s) as response:
          raw = response.read()
      except urllib.error.HTTPError as e:
        problem = f'HTTP {e.code} {e.reason}'
        if e.code not in _RETRY_STATUS:
          raise errors.UserError(self._redact(f'http search {shown}: {problem}')) from None
        continue
      except (urllib.error.URLError, socket.timeout, TimeoutError, ConnectionError) as e:
        reason = getattr(e, 'reason', e)
        problem = 'timed out' if isinstance(reason, (socket.timeout, TimeoutError)) else str(reason)
        continue
      try:
        return json.loads(raw)
      except (json.JSONDecodeError, UnicodeDecodeError):
        raise errors.UserError(self._redact(f'http search {shown}: response is not JSON')) from None
    raise errors.UserError(self._redact(
        f'http search {shown}: {problem} after {self.config.retries + 1} attempts'))

  def _hits(self, payload: Any, shown: str, k: int) -> list[ResultItem]:
    cfg = self.config
    node = payload
    for part in filter(None, cfg.results_path.split('.')):
      if not isinstance(node, Mapping) or part not in node:
        raise errors.UserError(self._redact(
            f'http search {shown}: response has no field {cfg.results_path!r}'))
      node = node[part]
    if not isinstance(node, list):
      raise errors.UserError(self._redact(
          f'http search {shown}: field {cfg.results_path!r} is not a list'))
    hits = []
    for i, item in enumerate(node[:k]):
      if not isinstance(item, Mapping) or not isinstance(item.get(cfg.title_field), str) \
          or not isinstance(item.get(cfg.snippet_field), str):
        raise errors.UserError(self._redact(
            f'http search {shown}: hit {i} lacks string fields '
            f'{cfg.title_field!r} and {cfg.snippet_field!r}'))
      snippet = item[cfg.snippet_field]
      if len(snippet) > cfg.max_snippet_chars:
        snippet = snippet[:cfg.max_snippet_chars - 3].rsplit(' ', 1)[0] + '...'
      hits.append(ResultItem(link_id=i + 1, link_text=item[cfg.title_field], snippet=snippet,
                             doc_id=str(item.get(cfg.id_field, ''))))
    return hits

  def search(self, queries: Sequence[str], k: int = 3) -> list[list[ResultItem]]:
    """Calls the API once per query.

    Args:
      queries: the query strings.
      k: hits per query (the API may return fewer).

    Returns:
      One list of `ResultItem`s (link ids 1..k) per query.
    """
    out = []
    for query in queries:
      _, shown = self._request(query, k)
      out.append(self._hits(self._fetch(query, k), shown, k))
    return out
