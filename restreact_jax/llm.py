"""The LLM door: sampling requests, samples, and the `LLM` protocol.

Everything that calls a language model (the agent's five steps, the LLM ranker,
the auto-eval judge) speaks this interface. Implementations: the JAX
continuous-batching engine (`restreact_jax.engine`) and an OpenAI-compatible
HTTP endpoint (`restreact_jax.agent.backends`). An LLM that can also take
requests one at a time and be driven by its caller (`SteppedLLM`, the
engine) lets a rollout keep every decode slot busy (`can_step`). Log-probs
are always under the *unscaled* model distribution (no temperature / top-k / top-p; a request's
grammar mask excepted), so perplexity compares candidates fairly.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import math
from typing import Any, Protocol, Sequence

from restreact_jax import errors
from restreact_jax import grammar

END_MARKER = '# [END]'


@dataclasses.dataclass(frozen=True)
class SamplingRequest:
  """One prompt to complete `n` times.

  Attributes:
    prompt: the text to continue.
    n: number of independent samples.
    temperature: 0 means greedy.
    top_k: keep the k most likely tokens (0 = off).
    top_p: nucleus mass (1.0 = off).
    max_tokens: new-token budget per sample.
    stop: strings that end a sample; the returned text is cut before them.
    seed: sampling seed; same request and seed give the same samples.
    prefix: optional shared prefix of `prompt` (e.g. a step type's preamble)
      that an engine may prefill once and reuse across requests.
    response_prefix: text every completion is made to begin with: the model
      reads it after the prompt (tokenized on its own, as a training target's
      start is) and continues from there. Returned texts start with it; its
      tokens are not in `Sample.tokens` or `Sample.logprobs`.
    grammar: a `grammar.Pattern` the whole completion (`response_prefix`
      included) must follow until the pattern is complete; what comes after
      (the stop string) is free. The JAX engine masks tokens that would leave
      it and reports log-probs under the masked distribution; backends that
      cannot constrain (HTTP) ignore it, so callers still parse what returns.
  """
  prompt: str
  n: int = 1
  temperature: float = 0.5
  top_k: int = 0
  top_p: float = 1.0
  max_tokens: int = 256
  stop: tuple[str, ...] = (END_MARKER,)
  seed: int = 0
  prefix: str = ''
  response_prefix: str = ''
  grammar: grammar.Pattern | None = None

  def validate(self) -> None:
    if not isinstance(self.n, int) or self.n < 1:
      raise errors.UserError(f'SamplingRequest.n must be an integer >= 1, got {self.n!r}')
    if not (self.temperature >= 0.0) or math.isinf(self.temperature):
      raise errors.UserError(
          f'SamplingRequest.temperature must be finite and >= 0, got {self.temperature!r}')
    if not 0.0 < self.top_p <= 1.0:
      raise errors.UserError(f'SamplingRequest.top_p must be in (0, 1], got {self.top_p!r}')
    if self.top_k < 0:
      raise errors.UserError(f'SamplingRequest.top_k must be >= 0, got {self.top_k!r}')
    if self.max_tokens < 0:
      raise errors.UserError(f'SamplingRequest.max_tokens must be >= 0, got {self.max_tokens!r}')
    if self.prefix and not self.prompt.startswith(self.prefix):
      raise errors.UserError('SamplingRequest.prefix must be a prefix of prompt')
    if any(s and s in self.response_prefix for s in self.stop):
      raise errors.UserError('SamplingRequest.response_prefix must not contain a stop string')
    if self.grammar is not None and not isinstance(self.grammar, grammar.Pattern):
      raise errors.UserError(
          f'SamplingRequest.grammar must be a grammar.Pattern, got {type(self.grammar).__name__}')


@dataclasses.dataclass(frozen=True)
class Sample:
  """One completion.

  Attributes:
    text: the completion, cut before the first stop string.
    tokens: the generated token ids (the stop string's tokens included when a
      stop fired, EOS excluded).
    logprobs: log p(token) under the unscaled model for each of `tokens`.
    finish_reason: 'stop' (a stop string), 'eos', or 'length'.
  """
  text: str
  tokens: tuple[int, ...]
  logprobs: tuple[float, ...]
  finish_reason: str

  @property
  def perplexity(self) -> float:
    if not self.logprobs:
      return float('inf')
    return math.exp(-sum(self.logprobs) / len(self.logprobs))


class LLM(Protocol):
  """Anything that completes prompts."""

  def generate(self, requests: Sequence[SamplingRequest]) -> list[list[Sample]]:
    """Returns, for each request, its `n` samples in order."""
    ...


class SteppedLLM(LLM, Protocol):
  """An `LLM` whose caller submits requests one by one and drives it."""

  steppable: bool

  def submit(self, request: SamplingRequest) -> concurrent.futures.Future:
    """Queues a request; the future resolves to its `n` samples."""
    ...

  def step(self) -> int:
    """Does a unit of work on what is queued; returns the samples finished."""
    ...


def can_step(llm: Any) -> bool:
  """Whether `llm` is a `SteppedLLM` (says so with `steppable = True`)."""
  return bool(getattr(llm, 'steppable', False))
