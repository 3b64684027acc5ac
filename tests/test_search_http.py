"""Tests for the HTTP search backend against a local `http.server`."""

import json
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from restreact_jax import errors
from restreact_jax.search import http as http_lib

SECRET = 'sk-test-0123456789abcdef'


class _Handler(BaseHTTPRequestHandler):
  """Answers by path; records every request on the server."""

  def log_message(self, *args):  # keep test output quiet
    del args

  def _reply(self, status, payload):
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    self.send_response(status)
    self.send_header('Content-Type', 'application/json')
    self.send_header('Content-Length', str(len(body)))
    self.end_headers()
    self.wfile.write(body)

  def _hits(self, query, k):
    return [{'title': f'Title {i} for {query}', 'snippet': f'snippet {i} ' + 'x' * 300 * (i == 2),
             'url': f'http://doc/{i}'} for i in range(1, k + 1)]

  def _handle(self, body=None):
    server = self.server
    url = urllib.parse.urlsplit(self.path)
    params = dict(urllib.parse.parse_qsl(url.query))
    with server.lock:
      server.requests.append({'path': url.path, 'params': params, 'body': body,
                              'headers': dict(self.headers)})
      count = sum(r['path'] == url.path for r in server.requests)
    query, k = params.get('q', ''), int(params.get('k', 3))
    if url.path == '/ok':
      self._reply(200, {'results': self._hits(query, k)})
    elif url.path == '/flaky':
      if count <= 2:
        self._reply(503, {'error': 'busy'})
      else:
        self._reply(200, {'results': self._hits(query, k)})
    elif url.path == '/slow':
      time.sleep(1.0)
      try:
        self._reply(200, {'results': []})
      except (BrokenPipeError, ConnectionResetError):
        pass  # The client timed out and left, as the timeout test means it to.
    elif url.path == '/fail':
      self._reply(500, {'error': 'broken'})
    elif url.path == '/missing':
      self._reply(404, {'error': 'nope'})
    elif url.path == '/notjson':
      self._reply(200, b'<html>hello</html>')
    elif url.path == '/nested':
      self._reply(200, {'data': {'items': [{'name': 'N1', 'text': 'T1', 'link': 'L1'}]}})
    elif url.path == '/badshape':
      self._reply(200, {'results': [{'title': 'only a title'}]})
    elif url.path == '/post':
      request = json.loads(body)
      self._reply(200, {'results': self._hits(request['question'], request['n'])})
    else:
      self._reply(404, {})

  def do_GET(self):  # pylint: disable=invalid-name
    self._handle()

  def do_POST(self):  # pylint: disable=invalid-name
    length = int(self.headers.get('Content-Length', 0))
    self._handle(self.rfile.read(length).decode())


@pytest.fixture
def server():
  srv = ThreadingHTTPServer(('127.0.0.1', 0), _Handler)
  srv.daemon_threads = True
  srv.requests, srv.lock = [], threading.Lock()
  thread = threading.Thread(target=srv.serve_forever, kwargs={'poll_interval': 0.02},
                            daemon=True)
  thread.start()
  srv.base = f'http://127.0.0.1:{srv.server_address[1]}'
  yield srv
  srv.shutdown()
  srv.server_close()


@pytest.fixture
def key(monkeypatch):
  monkeypatch.setenv('RESTREACT_TEST_SEARCH_KEY', SECRET)
  return 'RESTREACT_TEST_SEARCH_KEY'


def _tool(server, path, sleeps=None, **kw):
  config = http_lib.HttpSearchConfig(url=server.base + path + '?q={query}&k={k}', **kw)
  sleep = sleeps.append if sleeps is not None else (lambda s: None)
  return http_lib.HttpSearch(config, sleep=sleep)


def test_get_maps_fields_and_sends_the_key_in_a_header(server, key):
  tool = _tool(server, '/ok', api_key_env=key)
  results = tool.search(['who founded x?', 'second'], k=3)
  assert [h.link_id for h in results[0]] == [1, 2, 3]
  assert results[0][0].link_text == 'Title 1 for who founded x?'
  assert results[1][0].doc_id == 'http://doc/1'
  assert len(results[0][1].snippet) <= 200 and results[0][1].snippet.endswith('...')
  assert len(server.requests) == 2
  assert server.requests[0]['params']['q'] == 'who founded x?'
  assert server.requests[0]['headers']['Authorization'] == f'Bearer {SECRET}'


def test_retries_with_exponential_backoff_then_succeeds(server):
  sleeps = []
  tool = _tool(server, '/flaky', sleeps, retries=3, backoff_s=0.5)
  (hits,) = tool.search(['q'], k=2)
  assert len(hits) == 2
  assert len(server.requests) == 3
  assert sleeps == [0.5, 1.0]


def test_timeout_is_retried_then_reported(server, key):
  sleeps = []
  tool = _tool(server, '/slow', sleeps, timeout_s=0.2, retries=1, api_key_env=key)
  with pytest.raises(errors.UserError) as info:
    tool.search(['q'], k=1)
  message = str(info.value)
  assert 'timed out after 2 attempts' in message and '/slow' in message
  assert SECRET not in message
  assert sleeps == [0.5]


def test_server_error_after_all_retries(server, key):
  tool = _tool(server, '/fail', retries=2, api_key_env=key, api_key_header='',
               api_key_param='apikey')
  with pytest.raises(errors.UserError) as info:
    tool.search(['q'], k=1)
  message = str(info.value)
  assert 'HTTP 500' in message and 'after 3 attempts' in message
  assert server.base + '/fail' in message
  assert SECRET not in message and 'apikey' not in message
  assert len(server.requests) == 3
  assert server.requests[0]['params']['apikey'] == SECRET


def test_client_errors_fail_at_once(server, key):
  tool = _tool(server, '/missing', retries=3, api_key_env=key)
  with pytest.raises(errors.UserError, match='HTTP 404') as info:
    tool.search(['q'], k=1)
  assert SECRET not in str(info.value)
  assert len(server.requests) == 1


@pytest.mark.parametrize('path, message', [
    ('/notjson', 'response is not JSON'),
    ('/badshape', "lacks string fields 'title' and 'snippet'"),
    ('/nested', "response has no field 'results'"),
])
def test_malformed_responses_are_named(server, path, message):
  with pytest.raises(errors.UserError, match=message):
    _tool(server, path).search(['q'], k=1)


def test_configurable_response_fields(server):
  tool = _tool(server, '/nested', results_path='data.items', title_field='name',
               snippet_field='text', id_field='link')
  (hits,) = tool.search(['q'])
  assert [(h.link_text, h.snippet, h.doc_id) for h in hits] == [('N1', 'T1', 'L1')]


def test_post_fills_the_body_template(server):
  config = http_lib.HttpSearchConfig(url=server.base + '/post', method='POST',
                                     body={'question': '{query}', 'n': '{k}'})
  (hits,) = http_lib.HttpSearch(config).search(['capital of x'], k=2)
  assert len(hits) == 2 and hits[0].link_text == 'Title 1 for capital of x'
  assert json.loads(server.requests[0]['body']) == {'question': 'capital of x', 'n': 2}


def test_missing_key_and_bad_config_are_user_errors(monkeypatch):
  monkeypatch.delenv('RESTREACT_NO_SUCH_KEY', raising=False)
  with pytest.raises(errors.UserError, match='RESTREACT_NO_SUCH_KEY'):
    http_lib.HttpSearch(http_lib.HttpSearchConfig(url='http://127.0.0.1:9/?q={query}',
                                                  api_key_env='RESTREACT_NO_SUCH_KEY'))
  with pytest.raises(errors.UserError, match='method'):
    http_lib.HttpSearch(http_lib.HttpSearchConfig(url='http://x/', method='PUT'))
  with pytest.raises(errors.UserError, match='http://'):
    http_lib.HttpSearch(http_lib.HttpSearchConfig(url='ftp://x/'))


def test_connection_refused_is_reported_without_the_key(key):
  config = http_lib.HttpSearchConfig(url='http://127.0.0.1:9/s?q={query}', retries=1,
                                     api_key_env=key, timeout_s=1.0)
  with pytest.raises(errors.UserError, match='after 2 attempts') as info:
    http_lib.HttpSearch(config, sleep=lambda s: None).search(['q'])
  assert SECRET not in str(info.value)


def test_config_hash_ignores_the_key_value(monkeypatch, server):
  monkeypatch.setenv('K1', 'one')
  a = _tool(server, '/ok', api_key_env='K1').config_hash
  monkeypatch.setenv('K1', 'two')
  b = _tool(server, '/ok', api_key_env='K1').config_hash
  c = _tool(server, '/ok', api_key_env='K1', title_field='name').config_hash
  assert a == b != c
