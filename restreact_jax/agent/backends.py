"""LLM backends behind the one `LLM.generate` door.

* `jax_backend`: builds the continuous-batching `Engine` (which implements
  `LLM` itself) from a model config, parameters (an Orbax checkpoint or an
  imported Hugging Face directory) and a vocabulary.
* `OpenAICompletionsLLM`: any OpenAI-compatible `/v1/completions` server
  (vLLM, TGI, llama.cpp, hosted APIs). The API key is read from an environment
  variable and never logged or put into error messages.
* `ScriptedLLM`: a deterministic test double driven by a Python function.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import json
import math
import os
import random
import re
import time
import urllib.error
import urllib.request
from typing import Any, Callable, Sequence, Union

from restreact_jax import errors
from restreact_jax.llm import Sample, SamplingRequest

# ---------------------------------------------------------------------------
# JAX engine.


def jax_backend(model_config: Any = None, *, vocab: Any, checkpoint_dir: str | None = None,
                hf_dir: str | None = None, params: Any = None,
                mesh_shape: Sequence[int] | None = None, fsdp: bool = False,
                step: int | None = None, **engine_kwargs: Any) -> Any:
  """Builds the JAX `Engine` for a policy.

  Exactly one of `checkpoint_dir`, `hf_dir` and `params` gives the weights.

  Args:
    model_config: a `models.TransformerConfig` (ignored for `hf_dir`, whose
      config.json defines the model).
    vocab: a `seqio.Vocabulary`.
    checkpoint_dir: an Orbax checkpoint directory written by the trainer.
    hf_dir: a Hugging Face safetensors directory (imported).
    params: parameters already in memory (an unboxed tree).
    mesh_shape: a `('data', 'model')` mesh shape; None runs on the default
      device (a checkpoint is then restored onto a one-device mesh).
    fsdp: use the FSDP logical-axis rules.
    step: which checkpoint step (None = latest).
    **engine_kwargs: passed to `Engine` (num_slots, max_len, ...).

  Returns:
    An `Engine`; it implements `LLM.generate`.

  Raises:
    UserError: not exactly one weight source given, or no model config.
  """
  sources = [x for x in (checkpoint_dir, hf_dir, params) if x is not None]
  if len(sources) != 1:
    raise errors.UserError(
        'jax_backend needs exactly one of checkpoint_dir, hf_dir or params '
        f'(got {len(sources)})')
  if hf_dir is None and model_config is None:
    raise errors.UserError('jax_backend needs a model config (the MODEL gin macro)')
  # Imported lazily: the HTTP backend must work without initialising JAX.
  import jax  # pylint: disable=g-import-not-at-top
  from restreact_jax import engine as engine_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax import partitioning  # pylint: disable=g-import-not-at-top
  rules = partitioning.logical_axis_rules(fsdp)
  mesh = partitioning.make_mesh(mesh_shape) if mesh_shape is not None else None
  if checkpoint_dir is not None:
    from restreact_jax import trainer  # pylint: disable=g-import-not-at-top
    load_mesh = mesh or partitioning.make_mesh((1, 1), devices=jax.devices()[:1])
    params = trainer.load_params(checkpoint_dir, model_config, load_mesh, rules, step)
  elif hf_dir is not None:
    from restreact_jax.models import hf_import  # pylint: disable=g-import-not-at-top
    model_config, params = hf_import.load_hf_checkpoint(hf_dir, mesh=mesh, rules=rules)
  return engine_lib.Engine(model_config, params, vocab, mesh=mesh, rules=rules, **engine_kwargs)


# ---------------------------------------------------------------------------
# OpenAI-compatible HTTP.


class OpenAICompletionsLLM:
  """`LLM` over an OpenAI-compatible `/v1/completions` endpoint.

  Requests of one `generate` call go out concurrently (the server batches
  them). Per-token logprobs come from `logprobs=1` (`token_logprobs`); servers
  report them under the model's distribution, which the perplexity pick needs.
  Token ids are not part of the API, so `Sample.tokens` is empty.

  Args:
    base_url: e.g. 'http://127.0.0.1:8000' (with or without '/v1').
    model: the model name sent with each request.
    api_key_env: the environment variable holding the key ('' = no key).
    timeout_s: per-request timeout.
    max_retries: retries on connection errors, timeouts, 429 and 5xx.
    max_workers: concurrent requests.
    backoff_s: first retry delay (doubles each retry).
  """

  def __init__(self, base_url: str, model: str = '', *, api_key_env: str = 'OPENAI_API_KEY',
               timeout_s: float = 120.0, max_retries: int = 3, max_workers: int = 16,
               backoff_s: float = 0.5):
    url = base_url.rstrip('/')
    if not url.startswith(('http://', 'https://')):
      raise errors.UserError(f'OpenAI backend: base_url {base_url!r} must start with http(s)://')
    self.url = url + ('/completions' if url.endswith('/v1') else '/v1/completions')
    self.model = model
    self.api_key_env = api_key_env
    self.timeout_s = timeout_s
    self.max_retries = max_retries
    self.max_workers = max_workers
    self.backoff_s = backoff_s

  def _headers(self) -> dict[str, str]:
    headers = {'Content-Type': 'application/json'}
    if self.api_key_env:
      key = os.environ.get(self.api_key_env, '')
      if key:
        headers['Authorization'] = f'Bearer {key}'
    return headers

  def _payload(self, request: SamplingRequest) -> dict[str, Any]:
    payload = {
        'prompt': request.prompt + request.response_prefix, 'n': request.n,
        'temperature': request.temperature, 'top_p': request.top_p,
        'max_tokens': request.max_tokens, 'stop': list(request.stop), 'seed': request.seed,
        'logprobs': 1,
    }
    if self.model:
      payload['model'] = self.model
    if request.top_k:
      payload['top_k'] = request.top_k  # vLLM's extension; others ignore it.
    return payload

  def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
    data = json.dumps(payload).encode('utf-8')
    delay = self.backoff_s
    last = ''
    for attempt in range(self.max_retries + 1):
      req = urllib.request.Request(self.url, data=data, headers=self._headers(), method='POST')
      try:
        with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
          return json.loads(resp.read().decode('utf-8'))
      except urllib.error.HTTPError as e:
        body = e.read().decode('utf-8', 'replace')[:300]
        last = f'HTTP {e.code}: {body}'
        if e.code != 429 and e.code < 500:
          break  # A client error does not get better by retrying.
      except (urllib.error.URLError, TimeoutError, ConnectionError) as e:
        last = f'{type(e).__name__}: {getattr(e, "reason", e)}'
      except json.JSONDecodeError:
        last = 'the reply is not JSON'
        break
      if attempt < self.max_retries:
        time.sleep(delay)
        delay *= 2
    raise errors.UserError(f'OpenAI backend {self.url}: request failed ({last})')

  def _samples(self, request: SamplingRequest, reply: dict[str, Any]) -> list[Sample]:
    choices = reply.get('choices')
    if not isinstance(choices, list) or len(choices) != request.n:
      raise errors.UserError(
          f'OpenAI backend {self.url}: expected {request.n} choices, got '
          f'{len(choices) if isinstance(choices, list) else type(choices).__name__}')
    choices = sorted(choices, key=lambda c: c.get('index', 0))
    out = []
    for c in choices:
      lp = (c.get('logprobs') or {}).get('token_logprobs') or []
      logprobs = tuple(float(x) for x in lp if x is not None and math.isfinite(float(x)))
      reason = c.get('finish_reason') or 'length'
      text = request.response_prefix + str(c.get('text', ''))
      out.append(Sample(text=text, tokens=(), logprobs=logprobs,
                        finish_reason='stop' if reason == 'stop' else reason))
    return out

  def generate(self, requests: Sequence[SamplingRequest]) -> list[list[Sample]]:
    """Samples every request; see `LLM.generate`."""
    for i, r in enumerate(requests):
      r.validate()
      if r.grammar is not None:
        raise errors.UserError(
            f'OpenAI backend: request {i} has a grammar, which the completions API cannot '
            'carry; run without constrained decoding (AgentSettings.constrain, --constrain)')
    if not requests:
      return []
    with concurrent.futures.ThreadPoolExecutor(min(self.max_workers, len(requests))) as pool:
      replies = list(pool.map(lambda r: self._post(self._payload(r)), requests))
    return [self._samples(r, reply) for r, reply in zip(requests, replies)]


# ---------------------------------------------------------------------------
# Test double.

ScriptOutput = Union[str, tuple[str, Sequence[float]]]


def pseudo_logprobs(text: str, key: str) -> tuple[float, ...]:
  """Deterministic per-token logprobs for `text` (one 'token' per 4 chars)."""
  n = max(1, math.ceil(len(text) / 4))
  digest = hashlib.blake2b(f'{key}|{text}'.encode('utf-8', 'replace'), digest_size=8).digest()
  base = -0.05 - (int.from_bytes(digest, 'little') % 1000) / 500.0
  return tuple(base for _ in range(n))


class ScriptedLLM:
  """A deterministic `LLM` whose outputs come from a function.

  `script(request, i)` returns the i-th sample of a request: a text, or
  `(text, logprobs)`; a text that does not start with the request's
  `response_prefix` is what follows it. Without explicit logprobs,
  `pseudo_logprobs` derives them from (prompt, seed, i, text), so the result
  depends only on the request (never on what else is in the batch) — as a
  real seeded sampler.

  Attributes:
    calls: how many `generate` calls were made.
    requests: every request seen, in order.
  """

  def __init__(self, script: Callable[[SamplingRequest, int], ScriptOutput]):
    self.script = script
    self.calls = 0
    self.requests: list[SamplingRequest] = []

  def generate(self, requests: Sequence[SamplingRequest]) -> list[list[Sample]]:
    self.calls += 1
    out = []
    for request in requests:
      request.validate()
      self.requests.append(request)
      samples = []
      for i in range(request.n):
        result = self.script(request, i)
        if isinstance(result, tuple):
          text, logprobs = result[0], tuple(float(x) for x in result[1])
        else:
          text = result
          logprobs = pseudo_logprobs(text, f'{request.prompt}|{request.seed}|{i}')
        if not text.startswith(request.response_prefix):
          text = request.response_prefix + text
        samples.append(Sample(text=text, tokens=tuple(range(len(logprobs))),
                              logprobs=logprobs, finish_reason='stop'))
      out.append(samples)
    return out


def synthetic_policy(*, search_prob: float = 0.6, garbage_prob: float = 0.1,
                     revise_prob: float = 0.2) -> Callable[[SamplingRequest, int], str]:
  """A `ScriptedLLM` script that plays the agent with plausible random actions.

  Outputs depend only on (request seed, sample index, step type), like a
  seeded sampler, and include some unparseable text so that resampling and
  failure paths run. Used by tests and the rollout benchmark.

  Args:
    search_prob: chance that a decision searches.
    garbage_prob: chance that a sample is not a valid action.
    revise_prob: chance that a self-check revises the answer.

  Returns:
    A script for `ScriptedLLM`.
  """
  # Imported here: prompts is only needed by this test helper.
  from restreact_jax.agent import prompts  # pylint: disable=g-import-not-at-top
  garbage = ('', 'ACTION_SELECTED = ', 'I think the answer is 42.', 'ACTION_SELECTED = eval("1")',
             "ACTION_SELECTED = Search(query='x'", 'import os\nos.system("true")')

  def script(request: SamplingRequest, i: int) -> str:
    rng = random.Random(f'{request.seed}|{i}')
    step_type = prompts.detect_step_type(request.prompt)
    if step_type is None or rng.random() < garbage_prob:
      return rng.choice(garbage)
    word = f'topic{rng.randrange(1000)}'
    if step_type == 'decision':
      if rng.random() < search_prob:
        return prompts.render_target('decision', {
            'type': 'Search', 'query': f'{word} facts', 'thoughts': f'I should look up {word}.'})
      return prompts.render_target('decision', {'type': 'Terminate', 'thoughts': 'Enough.'})
    if step_type == 'summarize':
      state = request.prompt[len(request.prefix):]
      tail = state[state.rfind('CURRENT_SEARCH_RESULTS'):]
      ids = [int(x) for x in re.findall(r'ResultItem\(link_id=(\d+)', tail)]
      chosen = sorted(rng.sample(ids, rng.randint(0, len(ids)))) if ids else []
      summary = (f'According to [link_id={chosen[0]}], {word}.' if chosen
                 else 'Nothing is selected.')
      return prompts.render_target('summarize', {
          'type': 'LinkSelection', 'grounded_summarization': summary,
          'thoughts': 'Picked the relevant links.', 'selected_link_ids': chosen},
          [f'[link_id={j}] is off topic. Not selected.' for j in ids if j not in chosen])
    if step_type == 'answer':
      return prompts.render_target('answer', {
          'type': 'Answer', 'thoughts': 'From the summaries.', 'answer': f'It is {word}.'})
    if rng.random() < revise_prob:
      return prompts.render_target(step_type, {
          'type': 'Revise_Answer', 'revised_answer': f'Revised: it is {word}.'})
    return prompts.render_target(step_type, {'type': 'Check_Answer', 'passed': True},
                                 ['The ANSWER is fine.'])

  return script
