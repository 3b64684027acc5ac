"""Tests for agent/backends.py: the OpenAI-compatible HTTP backend against a
local server on 127.0.0.1, and the scripted test double."""

import http.server
import json
import threading
import time

import pytest

from restreact_jax import errors
from restreact_jax.agent import prompts
from restreact_jax.agent.agent import AgentConfig
from restreact_jax.agent.backends import OpenAICompletionsLLM, ScriptedLLM, jax_backend
from restreact_jax.agent.rollout import rollout
from restreact_jax.llm import SamplingRequest
from tests.test_agent import ANSWER, PASS, STOP, FakeSearch

SECRET = 'sk-test-secret-123'


class _Server:
  """A tiny /v1/completions server; behaviour set per test."""

  def __init__(self):
    self.payloads = []
    self.auth = []
    self.fail_first = 0  # this many 500s before answering
    self.status = 200
    self.delay_s = 0.0
    self.reply = None  # a function payload -> list of (text, logprobs, finish)
    server = self

    class Handler(http.server.BaseHTTPRequestHandler):

      def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers['Content-Length'])))
        server.payloads.append(body)
        server.auth.append(self.headers.get('Authorization'))
        if self.path != '/v1/completions':
          return self._send(404, {'error': {'message': f'no route {self.path}'}})
        if server.delay_s:
          time.sleep(server.delay_s)
        if server.fail_first > 0:
          server.fail_first -= 1
          return self._send(500, {'error': {'message': 'overloaded'}})
        if server.status != 200:
          return self._send(server.status, {'error': {'message': 'bad request: n too big'}})
        choices = []
        for i, (text, lps, finish) in enumerate(server.reply(body)):
          choices.append({'index': i, 'text': text, 'finish_reason': finish,
                          'logprobs': {'tokens': ['t'] * len(lps), 'token_logprobs': lps}})
        choices.reverse()  # servers need not keep the order; `index` says it
        self._send(200, {'id': 'cmpl-1', 'object': 'text_completion', 'choices': choices})

      def _send(self, code, obj):
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header('Content-Type', 'application/json')
        self.send_header('Content-Length', str(len(data)))
        self.end_headers()
        try:
          self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):
          pass  # the client gave up (the timeout test)

      def log_message(self, *args):
        pass

    self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
    self.url = f'http://127.0.0.1:{self.httpd.server_address[1]}'
    self.thread = threading.Thread(
        target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    self.thread.start()

  def close(self):
    self.httpd.shutdown()
    self.httpd.server_close()


@pytest.fixture
def server():
  s = _Server()
  yield s
  s.close()


def test_http_backend_sends_the_request_and_reads_samples(server, monkeypatch):
  monkeypatch.setenv('RESTREACT_TEST_KEY', SECRET)
  server.reply = lambda p: [(f'out{i} {p["prompt"][-3:]}', [-0.1 * (i + 1), -0.2], 'stop')
                            for i in range(p['n'])]
  llm = OpenAICompletionsLLM(server.url + '/v1', 'tiny', api_key_env='RESTREACT_TEST_KEY')
  reqs = [SamplingRequest(prompt='hello abc', n=3, temperature=0.5, top_p=0.9, max_tokens=17,
                          seed=42),
          SamplingRequest(prompt='bye xyz', n=1, temperature=0.0, seed=7)]
  out = llm.generate(reqs)
  assert [[s.text for s in samples] for samples in out] == [
      ['out0 abc', 'out1 abc', 'out2 abc'], ['out0 xyz']]
  assert out[0][1].logprobs == (-0.2, -0.2)
  assert out[0][0].finish_reason == 'stop'
  assert out[0][0].perplexity < out[0][2].perplexity
  p = next(p for p in server.payloads if p['prompt'] == 'hello abc')
  assert p == {'prompt': 'hello abc', 'n': 3, 'temperature': 0.5, 'top_p': 0.9,
               'max_tokens': 17, 'stop': ['# [END]'], 'seed': 42, 'logprobs': 1,
               'model': 'tiny'}
  assert server.auth == [f'Bearer {SECRET}'] * 2


def test_http_backend_continues_the_response_prefix(server):
  server.reply = lambda p: [(' Answer(x)', [-0.1], 'stop')]
  llm = OpenAICompletionsLLM(server.url + '/v1', 'tiny', api_key_env='')
  out = llm.generate([SamplingRequest(prompt='Q\n', response_prefix='ACTION_SELECTED: Answer =',
                                      n=1)])
  assert out[0][0].text == 'ACTION_SELECTED: Answer = Answer(x)'
  assert server.payloads[-1]['prompt'] == 'Q\nACTION_SELECTED: Answer ='


def test_http_backend_refuses_grammars_before_sending_anything(server):
  from restreact_jax import grammar
  llm = OpenAICompletionsLLM(server.url, api_key_env='')
  with pytest.raises(errors.UserError, match='request 1 has a grammar'):
    llm.generate([SamplingRequest(prompt='x'),
                  SamplingRequest(prompt='y', grammar=grammar.Lit('a'))])
  assert server.payloads == []


def test_http_backend_retries_server_errors(server):
  server.fail_first = 2
  server.reply = lambda p: [('ok', [-1.0], 'length')]
  llm = OpenAICompletionsLLM(server.url, api_key_env='', backoff_s=0.01, max_retries=3)
  out = llm.generate([SamplingRequest(prompt='x')])
  assert out[0][0].text == 'ok' and out[0][0].finish_reason == 'length'
  assert len(server.payloads) == 3 and server.auth == [None] * 3


def test_http_backend_errors_are_one_line_and_hide_the_key(server, monkeypatch):
  monkeypatch.setenv('RESTREACT_TEST_KEY', SECRET)
  server.status = 400
  llm = OpenAICompletionsLLM(server.url, api_key_env='RESTREACT_TEST_KEY', backoff_s=0.01)
  with pytest.raises(errors.UserError) as e:
    llm.generate([SamplingRequest(prompt='x')])
  assert 'HTTP 400' in str(e.value) and 'n too big' in str(e.value)
  assert SECRET not in str(e.value) and '\n' not in str(e.value)
  assert len(server.payloads) == 1  # client errors are not retried


def test_http_backend_timeout_and_refused(server):
  server.delay_s = 0.5
  server.reply = lambda p: [('late', [-1.0], 'stop')]
  llm = OpenAICompletionsLLM(server.url, api_key_env='', timeout_s=0.1, max_retries=1,
                             backoff_s=0.01)
  with pytest.raises(errors.UserError, match='request failed'):
    llm.generate([SamplingRequest(prompt='x')])
  dead = OpenAICompletionsLLM('http://127.0.0.1:9', api_key_env='', max_retries=0)
  with pytest.raises(errors.UserError, match='request failed'):
    dead.generate([SamplingRequest(prompt='x')])
  with pytest.raises(errors.UserError, match='http'):
    OpenAICompletionsLLM('localhost:8000')


def test_http_backend_wrong_choice_count(server):
  server.reply = lambda p: [('a', [-1.0], 'stop')]
  llm = OpenAICompletionsLLM(server.url, api_key_env='')
  with pytest.raises(errors.UserError, match='expected 2 choices, got 1'):
    llm.generate([SamplingRequest(prompt='x', n=2)])


def test_agent_rollout_over_http(server, tmp_path):
  """The whole agent runs against the HTTP server like against the engine."""
  def reply(p):
    step_type = prompts.detect_step_type(p['prompt'])
    text = {'decision': STOP, 'answer': ANSWER, 'relevance': PASS, 'grounding': PASS}[step_type]
    return [(text, [-0.5] * 3, 'stop')] * p['n']
  server.reply = reply
  llm = OpenAICompletionsLLM(server.url, api_key_env='')
  stats = rollout(llm, FakeSearch(), [('a', 'Who?'), ('b', 'What?')], out_dir=tmp_path,
                  prompter=prompts.Prompter('open_domain', 1), config=AgentConfig(num_samples=2),
                  show_progress=False)
  assert stats.ok == 2 and stats.failed == 0
  assert len(server.payloads) == 8  # 4 steps x 2 questions


def test_scripted_llm_depends_only_on_the_request():
  llm = ScriptedLLM(lambda r, i: f'sample {i}')
  r1 = SamplingRequest(prompt='p', n=2, seed=1)
  r2 = SamplingRequest(prompt='q', n=3, seed=2)
  a = llm.generate([r1, r2])
  b = llm.generate([r2])
  assert [s.text for s in a[1]] == ['sample 0', 'sample 1', 'sample 2']
  assert a[1] == b[0]
  assert a[0][0].logprobs != llm.generate([SamplingRequest(prompt='p', n=2, seed=9)])[0][0].logprobs
  with pytest.raises(errors.UserError):
    llm.generate([SamplingRequest(prompt='p', n=0)])


def test_jax_backend_needs_one_weight_source():
  with pytest.raises(errors.UserError, match='exactly one'):
    jax_backend(None, vocab=None)
  with pytest.raises(errors.UserError, match='exactly one'):
    jax_backend(None, vocab=None, checkpoint_dir='a', hf_dir='b')
