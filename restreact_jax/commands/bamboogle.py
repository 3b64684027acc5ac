"""`restreact bamboogle`: auto-eval of a prompted real model on Bamboogle / BamTwoogle.

  restreact bamboogle --gin_file=gin/experiments/bamboogle_gemma_2b.gin \
      --gin.EXP_DIR="'runs/gemma_bamboogle'" --gin.HF_DIR="'/ckpt/gemma-2b'" \
      --gin.SEARCH_URL="'https://search.example.com/api?q={query}&n={k}'"

The paper's evaluation of a prompted model (Table 1, "prompted L"; Table 4):
the policy, a Hugging Face checkpoint imported onto the mesh (or an
OpenAI-compatible server), answers every question of each dataset `runs` times
with the few-shot open-domain prompts and an HTTP search API; an LLM judge (the
same model, an HTTP model, or the alias matcher) then judges both the drafted
and the final answer. Per dataset it writes

  EXP_DIR/<dataset>/questions.jsonl        the questions evaluated (with answers)
  EXP_DIR/<dataset>/rollouts/run.json      what produced the rollouts
  EXP_DIR/<dataset>/rollouts/shard-*.jsonl one trajectory per (question, run)
  EXP_DIR/<dataset>/eval/{results.jsonl, summary.json}

and prints `final` and `answer_generation` accuracy as mean ± std over runs.
Running it again resumes: finished trajectories are kept, and a summary whose
inputs did not change is not judged again. Rollouts made by a different policy
or agent setting are refused rather than mixed.
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Sequence

import gin

from restreact_jax import errors
from restreact_jax.agent import prompts
from restreact_jax.agent import rollout as rollout_lib
from restreact_jax.commands import rollout as rollout_cmd
from restreact_jax.llm import LLM

JUDGES = ('policy', 'openai', 'matcher')
RUN_FILE = 'run.json'


def _int(value: Any, name: str) -> int:
  try:
    return int(value)
  except (TypeError, ValueError):
    raise errors.UserError(f'bamboogle: {name} must be an integer, got {value!r}') from None


def _opt_int(value: Any, name: str) -> int | None:
  return None if value in (None, '', 'None') else _int(value, name)


def _datasets(datasets: Sequence[str] | str) -> list[str]:
  from restreact_jax.datasets import benchmarks  # pylint: disable=g-import-not-at-top
  names = [d.strip() for d in (datasets.split(',') if isinstance(datasets, str) else datasets)]
  names = [d for d in names if d]
  if not names:
    raise errors.UserError('bamboogle: datasets is empty; name bamboogle and/or bamtwoogle')
  for name in names:
    if name not in benchmarks.FILES:
      raise errors.UserError(
          f'bamboogle: unknown dataset {name!r}; known: {", ".join(sorted(benchmarks.FILES))}')
  return names


def load_questions(name: str, questions_file: str | None, limit: int | None) -> list[dict]:
  """The evaluation questions of one dataset (a shipped one, or a user file).

  Args:
    name: 'bamboogle' or 'bamtwoogle' (ignored when `questions_file` is set).
    questions_file: a JSONL/CSV question file with answers instead.
    limit: only the first N questions.

  Returns:
    `{"id", "question", "answers", ...}` dicts in file order.
  """
  if questions_file:
    from restreact_jax.datasets import question_file  # pylint: disable=g-import-not-at-top
    rows = question_file.load_question_file(questions_file, strict=True).questions
    unlabeled = [r['id'] for r in rows if not r['answers']]
    if unlabeled:
      raise errors.UserError(f'{questions_file}: question {unlabeled[0]!r} has no answer; '
                             'evaluation needs reference answers')
  else:
    from restreact_jax.datasets import benchmarks  # pylint: disable=g-import-not-at-top
    rows = benchmarks.load(name)
  return rows[:limit] if limit else rows


def _hf_config(hf_dir: pathlib.Path) -> dict[str, Any]:
  path = hf_dir / 'config.json'
  if not hf_dir.is_dir():
    raise errors.UserError(f'bamboogle: HF_DIR {hf_dir} is not a directory (set HF_DIR to a '
                           'Hugging Face safetensors checkpoint directory)')
  if not path.is_file():
    raise errors.UserError(f'bamboogle: {path} is missing (HF_DIR must hold config.json and '
                           '*.safetensors)')
  try:
    return json.loads(path.read_text())
  except ValueError as e:
    raise errors.UserError(f'{path}: invalid JSON ({e})') from None


def _token_id(value: Any) -> int | None:
  """A config.json token id; a list (several EOS ids) gives its first."""
  if isinstance(value, list):
    value = value[0] if value else None
  return value if isinstance(value, int) else None


def resolve_vocab_path(hf_dir: pathlib.Path, vocab_path: str | None) -> str | None:
  """`vocab_path`, or the checkpoint's own SentencePiece model when None.

  Args:
    hf_dir: the checkpoint directory.
    vocab_path: a SentencePiece model, '' for bytes, None for
      `<hf_dir>/tokenizer.model`.

  Returns:
    The path to load ('' or None selects bytes).
  """
  if vocab_path is not None:
    return vocab_path
  spm_path = hf_dir / 'tokenizer.model'
  if spm_path.is_file():
    return str(spm_path)
  raise errors.UserError(
      f'bamboogle: {hf_dir} has no tokenizer.model (a SentencePiece model); set '
      'bamboogle.vocab_path to one, or serve the model with an OpenAI-compatible server '
      "and use llm_backend = 'openai'")


def make_policy_llm(*, llm_backend: str, hf_dir: str | None, vocab_path: str | None,
                    dtype: str | None, bos_id: int | None, mesh_shape: Sequence[int] | None,
                    num_slots: int, max_len: int | None, openai_base_url: str,
                    openai_model: str, api_key_env: str) -> LLM:
  """The policy behind the `LLM` door: an imported checkpoint or a server.

  Args:
    llm_backend: 'jax' (import `hf_dir` and run our engine) or 'openai'.
    hf_dir: the Hugging Face safetensors directory ('jax').
    vocab_path: see `resolve_vocab_path`.
    dtype: parameter/compute dtype; None keeps the checkpoint's.
    bos_id: first prompt token; None reads `bos_token_id` from config.json.
    mesh_shape: the `('data', 'model')` mesh; None runs on one device.
    num_slots: engine decode slots.
    max_len: engine context length (None: the model's).
    openai_base_url: server URL ('openai').
    openai_model: model name sent to it.
    api_key_env: environment variable with its key.

  Returns:
    An `LLM`.
  """
  if llm_backend == 'openai':
    return rollout_cmd.make_llm('.', backend='openai', openai_base_url=openai_base_url,
                                openai_model=openai_model, api_key_env=api_key_env)
  if llm_backend != 'jax':
    raise errors.UserError(f"bamboogle: llm_backend must be 'jax' or 'openai', got {llm_backend!r}")
  if not hf_dir:
    raise errors.UserError('bamboogle: the jax backend needs HF_DIR (bamboogle.hf_dir), a '
                           'Hugging Face safetensors checkpoint directory')
  root = pathlib.Path(hf_dir)
  hf = _hf_config(root)
  from restreact_jax import engine as engine_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax import partitioning  # pylint: disable=g-import-not-at-top
  from restreact_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax.models import hf_import  # pylint: disable=g-import-not-at-top
  vocab = vocab_lib.load_vocabulary(resolve_vocab_path(root, vocab_path))
  if vocab.vocab_size > int(hf.get('vocab_size', 0)):
    raise errors.UserError(
        f'bamboogle: the vocabulary has {vocab.vocab_size} tokens but {root}/config.json '
        f'has vocab_size {hf.get("vocab_size")}; the tokenizer does not belong to this model')
  rules = partitioning.logical_axis_rules()
  mesh = partitioning.make_mesh(tuple(mesh_shape)) if mesh_shape else None
  config, params = hf_import.load_hf_checkpoint(root, mesh=mesh, rules=rules, dtype=dtype)
  if bos_id is None:
    bos_id = _token_id(hf.get('bos_token_id'))
  return engine_lib.Engine(
      config, params, vocab, num_slots=num_slots, max_len=max_len, mesh=mesh, rules=rules,
      truncate_prompts=True, bos_id=0 if bos_id is None else bos_id,
      eos_id=_token_id(hf.get('eos_token_id')))


def make_judge(judge: str, policy: LLM | None, *, openai_base_url: str = '',
               openai_model: str = '', api_key_env: str = 'OPENAI_API_KEY',
               max_tokens: int = 128) -> Any:
  """The auto-eval judge.

  Args:
    judge: 'policy' (the LLM judge prompt on the policy model itself),
      'openai' (the LLM judge on an OpenAI-compatible server) or 'matcher'.
    policy: the policy's `LLM` (for 'policy').
    openai_base_url: the judge server ('openai').
    openai_model: its model name.
    api_key_env: environment variable with its key.
    max_tokens: the judge's budget for reasoning and verdict.

  Returns:
    A `Judge`.
  """
  from restreact_jax.evaluation import judge as judge_lib  # pylint: disable=g-import-not-at-top
  if judge == 'matcher':
    return judge_lib.MatcherJudge()
  if judge == 'policy':
    if policy is None:
      raise errors.UserError("bamboogle: judge = 'policy' needs the policy model")
    return judge_lib.LLMJudge(policy, max_tokens=max_tokens, name='llm_judge(policy)')
  if judge == 'openai':
    if not openai_base_url:
      raise errors.UserError("bamboogle: judge = 'openai' needs judge_openai_base_url")
    from restreact_jax.agent.backends import OpenAICompletionsLLM  # pylint: disable=g-import-not-at-top
    return judge_lib.LLMJudge(
        OpenAICompletionsLLM(openai_base_url, openai_model, api_key_env=api_key_env),
        max_tokens=max_tokens, name=f'llm_judge({openai_model or "openai"})')
  raise errors.UserError(f'bamboogle: unknown judge {judge!r}; choose one of {", ".join(JUDGES)}')


def check_run_file(rollouts: pathlib.Path, description: dict[str, Any]) -> None:
  """Refuses to resume rollouts another policy or agent setting made.

  Args:
    rollouts: the dataset's rollout directory.
    description: what produces this run's rollouts (JSON-able).
  """
  from restreact_jax.rest import experiment  # pylint: disable=g-import-not-at-top
  path = rollouts / RUN_FILE
  if path.is_file():
    try:
      previous = json.loads(path.read_text())
    except ValueError:
      previous = None
    if previous != json.loads(json.dumps(description)):
      changed = sorted(k for k in set(description) | set(previous or {})
                       if (previous or {}).get(k) != description.get(k))
      raise errors.UserError(
          f'{path}: the rollouts here were made with other settings ({", ".join(changed)}); '
          'use a new EXP_DIR or remove the directory')
  elif any(rollouts.glob('shard-*.jsonl')):
    raise errors.UserError(f'{rollouts}: holds trajectories but no {RUN_FILE}; use a new EXP_DIR')
  else:
    experiment.write_json_atomic(path, description)


def search_identity(backend: str, http_config: Any, tool: Any) -> str:
  """What decides the search results (not timeouts or retries), as a short hash."""
  from restreact_jax.rest import experiment  # pylint: disable=g-import-not-at-top
  if backend == 'http' and http_config is not None:
    fields = ('url', 'method', 'body', 'results_path', 'title_field', 'snippet_field',
              'id_field', 'max_snippet_chars')
    return experiment.fingerprint({f: getattr(http_config, f) for f in fields})
  return f'{backend}:{getattr(tool, "config_hash", "")}'


def pending(rollouts: pathlib.Path, questions: Sequence[dict], runs: int) -> int:
  """Trajectories not yet written, over all shards of the directory."""
  done: set[tuple[str, int]] = set()
  for shard in sorted(rollouts.glob('shard-*.jsonl')):
    done |= rollout_lib.repair_and_read_keys(shard)
  return sum((str(q['id']), r) not in done for q in questions for r in range(runs))


def _describe_summary(name: str, s: dict[str, Any]) -> str:
  def acc(kind: str) -> str:
    return f'{s[kind]["mean"]:.1f} ± {s[kind]["std"]:.1f}'
  sources = ', '.join(f'{k}: {v}' for k, v in sorted(s['judge']['sources'].items()))
  return (f'{name}: final {acc("final")} | answer_generation {acc("answer_generation")} '
          f'(% over {s["final"]["n_runs"]} runs of {s["n_questions"]} questions; '
          f'judge {s["judge"]["name"]}: {sources})')


@gin.configurable
def bamboogle(exp_dir: str = gin.REQUIRED,
              datasets: Sequence[str] | str = ('bamboogle',),
              questions_file: str | None = None,
              limit: int | str | None = None,
              runs: int | str = 10,
              llm_backend: str = 'jax',
              hf_dir: str | None = None,
              vocab_path: str | None = None,
              dtype: str | None = None,
              bos_id: int | str | None = None,
              mesh_shape: Sequence[int] | None = None,
              num_slots: int | str = 64,
              max_len: int | str | None = None,
              openai_base_url: str = '',
              openai_model: str = '',
              api_key_env: str = 'OPENAI_API_KEY',
              exemplar_set: str | None = 'open_domain',
              num_exemplars: int | str | None = None,
              num_samples: int | str = 4,
              temperature: float | str = 0.5,
              max_tokens: int | str = 256,
              max_searches: int | str = 10,
              results_per_search: int | str = 3,
              max_attempts: int | str = 3,
              seed: int | str = 0,
              max_concurrent: int | str = 512,
              search_backend: str = 'http',
              search_http_config: Any = None,
              use_search_cache: bool | str = True,
              judge: str = 'policy',
              judge_openai_base_url: str = '',
              judge_openai_model: str = '',
              judge_api_key_env: str = 'OPENAI_API_KEY',
              judge_max_tokens: int | str = 128,
              progress: bool | str = True) -> dict[str, Any]:
  """Rolls the policy out on each dataset `runs` times and auto-evaluates it.

  Args:
    exp_dir: the experiment directory (`EXP_DIR`).
    datasets: 'bamboogle' and/or 'bamtwoogle' (a list, or comma-separated).
    questions_file: a labelled question file to evaluate instead (its
      outputs go under the first dataset name).
    limit: only the first N questions of each dataset.
    runs: trajectories per question (the paper: 10).
    llm_backend: 'jax' (import `hf_dir`) or 'openai' (a completions server).
    hf_dir: the Hugging Face safetensors checkpoint (`HF_DIR`).
    vocab_path: SentencePiece model; None = `<hf_dir>/tokenizer.model`.
    dtype: parameter/compute dtype; None = the checkpoint's.
    bos_id: first prompt token; None = config.json's `bos_token_id`.
    mesh_shape: `('data', 'model')` mesh of the engine (`MESH_SHAPE`).
    num_slots: engine decode slots.
    max_len: engine context length; over-long prompts are cut from the left.
    openai_base_url: the policy's server ('openai').
    openai_model: its model name.
    api_key_env: environment variable with the policy server's key.
    exemplar_set: few-shot exemplars ('open_domain' for real questions).
    num_exemplars: shots per step; None = the paper's counts.
    num_samples: candidates per step (paper: 4).
    temperature: sampling temperature (paper: 0.5).
    max_tokens: new tokens per candidate.
    max_searches: search budget per trajectory (paper: 10).
    results_per_search: hits per search (paper: 3).
    max_attempts: sampling rounds per step before a trajectory fails.
    seed: base sampling seed.
    max_concurrent: live agents at most.
    search_backend: 'http' (the `search_http_config` API) or 'bm25'
      (`EXP_DIR/search/bm25`).
    search_http_config: a `@search.HttpSearchConfig()` for 'http'.
    use_search_cache: keep results in `EXP_DIR/search/cache.sqlite`.
    judge: 'policy', 'openai' or 'matcher' (see `make_judge`).
    judge_openai_base_url: the judge's server (judge='openai').
    judge_openai_model: its model name.
    judge_api_key_env: environment variable with the judge server's key.
    judge_max_tokens: the judge's token budget.
    progress: show tqdm bars.

  Returns:
    `{dataset: summary}`.
  """
  from restreact_jax import distributed  # pylint: disable=g-import-not-at-top
  from restreact_jax import gin_utils  # pylint: disable=g-import-not-at-top
  from restreact_jax.commands import search as search_cmd  # pylint: disable=g-import-not-at-top
  from restreact_jax.evaluation import autoeval  # pylint: disable=g-import-not-at-top
  from restreact_jax.rest import experiment  # pylint: disable=g-import-not-at-top

  # Everything a person can get wrong is checked before a model is loaded.
  names = _datasets(datasets)
  if questions_file:
    names = names[:1]
  n_runs = _int(runs, 'runs')
  if n_runs < 1:
    raise errors.UserError(f'bamboogle: runs must be >= 1, got {n_runs}')
  if judge not in JUDGES:
    raise errors.UserError(f'bamboogle: unknown judge {judge!r}; choose one of {", ".join(JUDGES)}')
  if judge == 'openai' and not judge_openai_base_url:
    raise errors.UserError("bamboogle: judge = 'openai' needs judge_openai_base_url")
  if llm_backend == 'jax':
    if not hf_dir:
      raise errors.UserError('bamboogle: the jax backend needs HF_DIR (bamboogle.hf_dir), a '
                             'Hugging Face safetensors checkpoint directory')
    _hf_config(pathlib.Path(hf_dir))
  show = rollout_cmd.as_bool(progress)
  agent_config = rollout_cmd.make_agent_config(
      num_samples=num_samples, temperature=temperature, max_tokens=max_tokens,
      max_searches=max_searches, results_per_search=results_per_search,
      max_attempts=max_attempts, seed=seed,
      policy=pathlib.Path(hf_dir).name if llm_backend == 'jax' else openai_model or 'openai')
  shots = _opt_int(num_exemplars, 'num_exemplars')
  prompter = prompts.Prompter(exemplar_set or None, shots)
  tool = search_cmd.make_search_tool(exp_dir, search_backend, search_http_config,
                                     rollout_cmd.as_bool(use_search_cache))
  n_limit = _opt_int(limit, 'limit')
  root = pathlib.Path(exp_dir)
  process_index, process_count = distributed.process_index(), distributed.process_count()

  work: list[tuple[str, list[dict], pathlib.Path]] = []
  for name in names:
    questions = load_questions(name, questions_file, n_limit)
    rollouts = root / name / 'rollouts'
    rollouts.mkdir(parents=True, exist_ok=True)
    check_run_file(rollouts, {
        'dataset': name if not questions_file else pathlib.Path(questions_file).name,
        'agent': dataclasses.asdict(agent_config), 'exemplar_set': exemplar_set, 'num_exemplars': shots,
        'llm_backend': llm_backend, 'search_backend': search_backend,
        'search': search_identity(search_backend, search_http_config, tool)})
    work.append((name, questions, rollouts))

  if any(pending(rollouts, qs, n_runs) for _, qs, rollouts in work):
    # A search API that is down should fail now, not after a long model load.
    tool.search([work[0][1][0]['question']], agent_config.results_per_search)
  loaded: list[LLM] = []

  def policy() -> LLM:
    # Loaded once, and only when something is left to roll out or to judge.
    if not loaded:
      loaded.append(make_policy_llm(
          llm_backend=llm_backend, hf_dir=hf_dir, vocab_path=vocab_path, dtype=dtype,
          bos_id=_opt_int(bos_id, 'bos_id'), mesh_shape=mesh_shape,
          num_slots=_int(num_slots, 'num_slots'), max_len=_opt_int(max_len, 'max_len'),
          openai_base_url=openai_base_url, openai_model=openai_model, api_key_env=api_key_env))
    return loaded[0]

  if process_index == 0:
    gin_utils.write_config(root)

  summaries: dict[str, Any] = {}
  for name, questions, rollouts in work:
    if pending(rollouts, questions, n_runs):
      rollout_lib.rollout(
          policy(), tool, [(q['id'], q['question']) for q in questions], out_dir=rollouts,
          prompter=prompter, config=agent_config, repeats=n_runs, process_index=process_index,
          process_count=process_count, max_concurrent=_int(max_concurrent, 'max_concurrent'),
          show_progress=show)
    distributed.barrier(f'bamboogle-{name}-rollouts')
    if process_index != 0:
      continue
    questions_path = root / name / 'questions.jsonl'
    autoeval._atomic_write(  # pylint: disable=protected-access
        questions_path, ''.join(json.dumps(q, ensure_ascii=False) + '\n' for q in questions))
    shards = sorted(rollouts.glob('shard-*.jsonl'))
    judge_description = {'judge': judge, 'model': judge_openai_model if judge == 'openai' else
                         agent_config.policy, 'max_tokens': _int(judge_max_tokens, 'judge_max_tokens')}
    inputs = experiment.fingerprint(
        {'judge': judge_description, 'runs': n_runs},
        [experiment.file_digest(p) for p in [questions_path, *shards]])
    summary_path = root / name / 'eval' / 'summary.json'
    if summary_path.is_file():
      previous = json.loads(summary_path.read_text())
      if previous.get('inputs_fingerprint') == inputs:
        summaries[name] = previous
        print(_describe_summary(name, previous) + ' [already judged]')
        continue
    the_judge = make_judge(judge, policy() if judge == 'policy' else None, openai_base_url=judge_openai_base_url,
                           openai_model=judge_openai_model, api_key_env=judge_api_key_env,
                           max_tokens=_int(judge_max_tokens, 'judge_max_tokens'))
    index = autoeval.index_questions(questions, str(questions_path))
    trajectories = [t for p in shards for t in autoeval.load_jsonl(p)]
    result = autoeval.evaluate(trajectories, index, the_judge, expected_runs=n_runs,
                               progress=show)
    result.summary.update({'dataset': name, 'runs': n_runs, 'inputs_fingerprint': inputs,
                           'policy': agent_config.policy})
    autoeval.write_result(result, root / name / 'eval')
    summaries[name] = result.summary
    print(_describe_summary(name, result.summary))
  if process_index == 0:
    print(json.dumps({name: {k: s[k] for k in ('final', 'answer_generation', 'n_questions')}
                      for name, s in summaries.items()}))
  return summaries
