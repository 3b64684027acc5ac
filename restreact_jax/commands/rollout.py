"""`restreact rollout`: the policy answers a question split; trajectories to shards.

  restreact rollout --gin_file=gin/runs/rollout.gin --gin.EXP_DIR="'runs/demo'" \
      --gin.MODEL=... --gin.rollout.policy_checkpoint="'gen_0/models/xs/checkpoints'"

Reads `EXP_DIR/world/questions/<split>.jsonl`, searches with the experiment's
search tool, and writes `EXP_DIR/gen_<generation>/trajectories/shard-*.jsonl`
(this process's shard; a rerun resumes). Prints one JSON line of stats.
`--gin.rollout.tools="('search', 'calculator')"` (or `--tools=search,calculator`)
gives the agent the calculator too.

Also holds the setup shared with `restreact agent`: `make_llm` (the JAX engine
over a checkpoint or Hugging Face directory, or an OpenAI-compatible server)
and `make_agent_config`.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any, Sequence

import gin

from restreact_jax import errors
from restreact_jax.agent import prompts
from restreact_jax.agent import rollout as rollout_lib
from restreact_jax.agent.agent import AgentConfig
from restreact_jax.llm import LLM

LLM_BACKENDS = ('jax', 'openai')


def _int(value: Any, name: str) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    raise errors.UserError(f'{name} must be an integer, got {value!r}') from None


def as_bool(value: Any) -> bool:
  """Reads a flag given as a bool or as a command-line string."""
  return value if isinstance(value, bool) else str(value).lower() in ('1', 'true', 'yes')


def under(exp_dir: str | pathlib.Path, path: str | None) -> str | None:
  """`path` relative to the experiment directory (absolute paths stay)."""
  if not path:
    return None
  p = pathlib.Path(path)
  return str(p if p.is_absolute() else pathlib.Path(exp_dir) / p)


def make_llm(exp_dir: str, *, backend: str, model: Any = None,
             policy_checkpoint: str | None = None, hf_dir: str | None = None,
             vocab_path: str | None = None, num_slots: int = 64, max_len: int | None = None,
             mesh_shape: Sequence[int] | None = None, openai_base_url: str = '',
             openai_model: str = '', api_key_env: str = 'OPENAI_API_KEY') -> LLM:
  """Builds the policy behind the `LLM` door.

  Args:
    exp_dir: the experiment directory (relative paths are under it).
    backend: 'jax' (our engine) or 'openai' (an OpenAI-compatible server).
    model: `TransformerConfig` for 'jax' with a checkpoint.
    policy_checkpoint: Orbax checkpoint directory of the policy.
    hf_dir: a Hugging Face safetensors directory instead of a checkpoint.
    vocab_path: the SentencePiece model ('' = bytes).
    num_slots: engine decode slots.
    max_len: engine context length (default the model's).
    mesh_shape: mesh for the engine (None = default device).
    openai_base_url: server URL for 'openai'.
    openai_model: model name sent to the server.
    api_key_env: environment variable holding the server's API key.

  Returns:
    An `LLM`.
  """
  if backend == 'openai':
    if not openai_base_url:
      raise errors.UserError('llm backend "openai" needs openai_base_url')
    from restreact_jax.agent import backends  # pylint: disable=g-import-not-at-top
    return backends.OpenAICompletionsLLM(openai_base_url, openai_model, api_key_env=api_key_env)
  if backend != 'jax':
    raise errors.UserError(
        f'unknown llm backend {backend!r}; choose one of {", ".join(LLM_BACKENDS)}')
  from restreact_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent.backends import jax_backend  # pylint: disable=g-import-not-at-top
  ckpt = under(exp_dir, policy_checkpoint)
  hf = under(exp_dir, hf_dir)
  if not ckpt and not hf:
    raise errors.UserError('rollout with the jax backend needs policy_checkpoint or hf_dir')
  if ckpt and not pathlib.Path(ckpt).is_dir():
    raise errors.UserError(f'policy checkpoint {ckpt} does not exist')
  vocab = vocab_lib.load_vocabulary(under(exp_dir, vocab_path))
  kwargs: dict[str, Any] = {'num_slots': num_slots, 'truncate_prompts': True}
  if max_len:
    kwargs['max_len'] = max_len
  return jax_backend(model, vocab=vocab, checkpoint_dir=ckpt, hf_dir=hf,
                     mesh_shape=tuple(mesh_shape) if mesh_shape else None, **kwargs)


def make_agent_config(*, num_samples, temperature, max_tokens, max_searches,
                      results_per_search, max_attempts, seed, policy,
                      tools: Sequence[str] | str = prompts.DEFAULT_TOOLS,
                      action_head: bool | str = False,
                      constrain: bool | str = False) -> AgentConfig:
  """The checked `AgentConfig` from command arguments (numbers may be strings).

  `tools` is a sequence of tool names or a comma-separated string.
  """
  config = AgentConfig(
      num_samples=_int(num_samples, 'num_samples'), temperature=float(temperature),
      max_tokens=_int(max_tokens, 'max_tokens'), max_searches=_int(max_searches, 'max_searches'),
      results_per_search=_int(results_per_search, 'results_per_search'),
      max_attempts=_int(max_attempts, 'max_attempts'), base_seed=_int(seed, 'seed'),
      policy=str(policy), tools=prompts.normalize_tools(tools),
      action_head=as_bool(action_head), constrain=as_bool(constrain))
  config.validate()
  return config


@gin.configurable
def rollout(exp_dir: str = gin.REQUIRED,
            generation: int | str = 1,
            split: str = 'train',
            questions_file: str | None = None,
            limit: int | str | None = None,
            repeats: int | str = 1,
            llm_backend: str = 'jax',
            model: Any = None,
            policy_checkpoint: str | None = None,
            hf_dir: str | None = None,
            vocab_path: str | None = 'vocab/spm.model',
            num_slots: int | str = 64,
            max_len: int | None = None,
            mesh_shape: Sequence[int] | None = None,
            openai_base_url: str = '',
            openai_model: str = '',
            api_key_env: str = 'OPENAI_API_KEY',
            exemplar_set: str | None = None,
            num_exemplars: int | str | None = 0,
            num_samples: int | str = 4,
            temperature: float | str = 0.5,
            max_tokens: int | str = 256,
            max_searches: int | str = 10,
            results_per_search: int | str = 3,
            max_attempts: int | str = 3,
            seed: int | str = 0,
            tools: Sequence[str] | str = prompts.DEFAULT_TOOLS,
            action_head: bool | str = False,
            constrain: bool | str = False,
            name_masking: bool | str = False,
            max_concurrent: int | str = 512,
            search_backend: str = 'bm25',
            search_http_config: Any = None,
            use_search_cache: bool = True,
            out_dir: str | None = None,
            process_index: int | str | None = None,
            process_count: int | str | None = None,
            progress: bool = True) -> dict[str, Any]:
  """Rolls out the policy on a question split (see the module docstring).

  Args:
    exp_dir: the experiment directory.
    generation: g; output goes to `gen_<g>/trajectories` unless `out_dir`.
    split: question split under `world/questions/`.
    questions_file: a JSONL of questions instead of the split.
    limit: only the first N questions.
    repeats: trajectories per question (R).
    llm_backend: 'jax' or 'openai'.
    model: `TransformerConfig` of the policy (`%MODEL`).
    policy_checkpoint: the policy's checkpoint directory.
    hf_dir: a Hugging Face checkpoint instead.
    vocab_path: SentencePiece model.
    num_slots: engine decode slots.
    max_len: engine context length.
    mesh_shape: engine mesh.
    openai_base_url: OpenAI-compatible server (llm_backend='openai').
    openai_model: its model name.
    api_key_env: environment variable with its key.
    exemplar_set: 'world', 'open_domain' or None (no exemplars).
    num_exemplars: shots per step; None = the paper's counts.
    num_samples: candidates per step.
    temperature: sampling temperature.
    max_tokens: new tokens per candidate.
    max_searches: search budget per trajectory.
    results_per_search: hits per search.
    max_attempts: sampling rounds per step before giving up.
    seed: base seed.
    tools: 'search', plus 'calculator' for `Calculate` decisions.
    action_head: the model continues each step's statement head
      (`AgentConfig.action_head`).
    constrain: decode each step inside its statement's grammar
      (`AgentConfig.constrain`).
    name_masking: the policy reads and writes entity names as placeholders
      (a policy trained with `rest.name_masking`, and in its mode: True or
      'ordered_years'; the world's names are used).
    max_concurrent: live agents at most.
    search_backend: 'bm25' or 'http'.
    search_http_config: `HttpSearchConfig` for 'http'.
    use_search_cache: use `EXP_DIR/search/cache.sqlite`.
    out_dir: override of the output directory (relative to exp_dir).
    process_index: this process (default: JAX's).
    process_count: processes (default: JAX's).
    progress: show the tqdm bar.

  Returns:
    The stats as a dict.
  """
  from restreact_jax import gin_utils  # pylint: disable=g-import-not-at-top
  from restreact_jax.commands import search as search_cmd  # pylint: disable=g-import-not-at-top
  g = _int(generation, 'generation')
  if questions_file:
    questions = rollout_lib.load_questions(under(exp_dir, questions_file))
  else:
    questions = rollout_lib.load_questions(
        pathlib.Path(exp_dir) / 'world' / 'questions' / f'{split}.jsonl')
  if limit not in (None, ''):
    questions = questions[:_int(limit, 'limit')]
  if process_index is None or process_count is None:
    from restreact_jax import distributed  # pylint: disable=g-import-not-at-top
    process_index, process_count = distributed.process_index(), distributed.process_count()
  config = make_agent_config(
      num_samples=num_samples, temperature=temperature, max_tokens=max_tokens,
      max_searches=max_searches, results_per_search=results_per_search,
      max_attempts=max_attempts, seed=seed,
      policy=policy_checkpoint or hf_dir or openai_model or llm_backend, tools=tools,
      action_head=action_head, constrain=constrain)
  prompter = prompts.Prompter(exemplar_set or None,
                              None if num_exemplars in (None, '', 'None') else
                              _int(num_exemplars, 'num_exemplars'))
  tool = search_cmd.make_search_tool(exp_dir, search_backend, search_http_config,
                                     as_bool(use_search_cache))
  llm = make_llm(exp_dir, backend=llm_backend, model=model,
                 policy_checkpoint=policy_checkpoint, hf_dir=hf_dir, vocab_path=vocab_path,
                 num_slots=_int(num_slots, 'num_slots'), max_len=max_len,
                 mesh_shape=mesh_shape, openai_base_url=openai_base_url,
                 openai_model=openai_model, api_key_env=api_key_env)
  from restreact_jax.agent import name_masking as masking_lib  # pylint: disable=g-import-not-at-top
  masking = masking_lib.as_mode(name_masking, 'name_masking')
  if masking:
    llm = masking_lib.MaskedLLM(llm, masking_lib.from_world(exp_dir, mode=masking))
  out = pathlib.Path(under(exp_dir, out_dir) or pathlib.Path(exp_dir) / f'gen_{g}' / 'trajectories')
  out.mkdir(parents=True, exist_ok=True)
  if int(process_index) == 0:
    gin_utils.write_config(out, 'rollout_config.gin')
  stats = rollout_lib.rollout(
      llm, tool, questions, out_dir=out, prompter=prompter, config=config,
      repeats=_int(repeats, 'repeats'), process_index=_int(process_index, 'process_index'),
      process_count=_int(process_count, 'process_count'),
      max_concurrent=_int(max_concurrent, 'max_concurrent'), show_progress=as_bool(progress))
  result = {'out_dir': str(out), **stats.to_json()}
  print(json.dumps(result))
  return result
