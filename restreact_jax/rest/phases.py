"""The phases of the self-improvement loop, each a unit of work on EXP_DIR.

Each function here does one phase's work into the directory it is given (the
temporary directory of an atomic phase, or the phase's own directory for a
resumable one) and returns a small JSON-able result for the manifest.
`rest.loop` decides the order, the fingerprints and the dependencies.

Determinism: every phase is a function of its config and inputs. Trajectory
shards are read in (question id, repeat) order, never in the order rollouts
happened to finish, so a resumed rollout feeds the same bytes downstream;
sampling seeds derive from the trajectory's coordinates; training resumes
from its Orbax checkpoint and data position.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import pathlib
import shutil
from typing import Any, Mapping, Sequence

import numpy as np

from restreact_jax import errors
from restreact_jax.models import configs as model_configs

# ---------------------------------------------------------------------------
# Settings shared by phases.


@dataclasses.dataclass(frozen=True)
class TrainSettings:
  """One training run (pretraining, seed fine-tuning, a generation's fine-tune).

  Attributes:
    steps: train until this step.
    batch_size: global batch size.
    learning_rate: peak learning rate.
    warmup_steps: linear warmup.
    weight_decay: AdamW decoupled weight decay.
    clip_norm: gradient clip (0 disables).
    z_loss: z-loss coefficient.
    checkpoint_period: save every N steps (a kill loses at most N steps).
    keep_checkpoints: checkpoints kept.
    task_feature_lengths: e.g. `{'inputs': 1024, 'targets': 256}`.
    pack: pack examples per row.
    seed: init, step and data-order seed.
    prompt_loss: also train on the prompt tokens of inputs/targets examples
      (a small model learns to copy names and facts from them much sooner;
      the targets are what the policy must produce either way).
    average_last: hand on the mean of the parameters over the last N steps
      (`averaging.tail_average`; 0: the last step's).
    distill_weight: a student's share of the loss given to the KL to its
      teacher's distributions (`distillation`; 0: its teacher's sampled steps
      only, the paper's self-distillation). Read where a teacher exists: the
      loop's students.
    distill_temperature: the temperature of that KL.
    soup: fine-tune this many models from the same start, with data-order
      seeds `seed, seed + 1, ...`, and hand on the mean of their final
      parameters (a uniform model soup); 1: one run.
  """
  steps: int
  batch_size: int = 16
  learning_rate: float = 1e-3
  warmup_steps: int = 50
  weight_decay: float = 0.0
  clip_norm: float = 1.0
  z_loss: float = 1e-4
  checkpoint_period: int = 100
  keep_checkpoints: int = 2
  task_feature_lengths: Mapping[str, int] = dataclasses.field(
      default_factory=lambda: {'inputs': 1024, 'targets': 256})
  pack: bool = False
  seed: int = 0
  prompt_loss: bool = False
  average_last: int = 0
  distill_weight: float = 0.0
  distill_temperature: float = 1.0
  soup: int = 1

  def fingerprint_key(self) -> dict[str, Any]:
    """The settings as fingerprinted.

    A field added later is left out at its default, so experiments that never
    set it keep their fingerprints.
    """
    key = dataclasses.asdict(self)
    for name, default in (('average_last', 0), ('distill_weight', 0.0),
                          ('distill_temperature', 1.0), ('soup', 1)):
      if key[name] == default:
        del key[name]
    return key


@dataclasses.dataclass(frozen=True)
class AgentSettings:
  """How the agent samples during rollouts and evaluation.

  Attributes:
    num_samples: candidates per step (paper: 4; 16 for the smallest model).
    temperature: sampling temperature (paper: 0.5).
    max_tokens: new tokens per candidate.
    max_searches: search budget per trajectory (paper: 10).
    results_per_search: hits per search (paper: top-3).
    max_attempts: sampling rounds per step before a trajectory fails.
    num_slots: engine decode slots.
    max_concurrent: live agents at most.
    tools: the agent's tools: ('search',) or ('search', 'calculator'); a
      calculation uses one unit of `max_searches`.
    action_head: the model continues each step's statement head
      (`AgentConfig.action_head`).
    constrain: decode each step inside its statement's grammar
      (`AgentConfig.constrain`).
  """
  num_samples: int = 4
  temperature: float = 0.5
  max_tokens: int = 256
  max_searches: int = 10
  results_per_search: int = 3
  max_attempts: int = 3
  num_slots: int = 64
  max_concurrent: int = 512
  tools: tuple[str, ...] = ('search',)
  action_head: bool = False
  constrain: bool = False


@dataclasses.dataclass(frozen=True)
class Policy:
  """A model that can roll out: a checkpoint of ours or a prompted HTTP LLM.

  Attributes:
    label: e.g. 'gen_1/xs'.
    generation: the generation that produced it.
    size: model size name (None for an HTTP model).
    phase: the manifest phase whose output holds the checkpoint (None for HTTP).
    checkpoint: checkpoint directory relative to EXP_DIR.
    backend: 'jax' or 'openai'.
    openai_base_url: server of an 'openai' policy.
    openai_model: its model name.
    exemplar_set: few-shot exemplars in prompts (prompted policies); None for
      fine-tuned ones, which see the compact prompt they were trained on.
    num_exemplars: shots per step (None = the paper's counts).
  """
  label: str
  generation: int
  size: str | None = None
  phase: str | None = None
  checkpoint: str | None = None
  backend: str = 'jax'
  openai_base_url: str = ''
  openai_model: str = ''
  exemplar_set: str | None = None
  num_exemplars: int | None = 0

  def describe(self) -> dict[str, Any]:
    """What identifies the policy in fingerprints (no machine paths)."""
    return dataclasses.asdict(self)


# ---------------------------------------------------------------------------
# Helpers.


def sorted_shards(directory: str | pathlib.Path) -> list[str]:
  return sorted(glob.glob(str(pathlib.Path(directory) / 'shard-*.jsonl')))


def read_trajectories(directory: str | pathlib.Path) -> list[dict[str, Any]]:
  """All trajectories of a rollout directory in (question id, repeat) order.

  Shards list trajectories in the order they finished, which differs between
  an uninterrupted and a resumed rollout; sorting makes downstream phases
  independent of it.
  """
  from restreact_jax.rest import mixture  # pylint: disable=g-import-not-at-top
  rows = list(mixture.read_jsonl(sorted_shards(directory)))
  return sorted(rows, key=lambda t: (str(t['question_id']), int(t.get('repeat', 0))))


def params_digest(params: Any) -> str:
  """sha256 over every parameter's path, dtype, shape and bytes."""
  import jax  # pylint: disable=g-import-not-at-top
  h = hashlib.sha256()
  for path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    arr = np.asarray(jax.device_get(leaf))
    h.update(jax.tree_util.keystr(path).encode())
    h.update(str(arr.dtype).encode() + str(arr.shape).encode())
    h.update(np.ascontiguousarray(arr).tobytes())
  return h.hexdigest()[:16]


def token_length_fn(vocab_path: str | None):
  """Length in tokens under the experiment's vocabulary (for length filters)."""
  from restreact_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  vocabulary = vocab_lib.load_vocabulary(vocab_path)
  return lambda text: len(vocabulary.encode(text))


# ---------------------------------------------------------------------------
# World, search index, seed exemplars, vocabulary.


def build_world(out: pathlib.Path, world_config: Any) -> dict[str, Any]:
  from restreact_jax.world import build  # pylint: disable=g-import-not-at-top
  world = build.build_world(world_config)
  build.write_world(world, out)
  return world.summary()['counts']


def build_search_index(out: pathlib.Path, corpus: pathlib.Path) -> dict[str, Any]:
  from restreact_jax.search import bm25  # pylint: disable=g-import-not-at-top
  bm25.build_index(corpus, out)
  return dict(bm25.index_meta(out) or {})


def write_seed(out: pathlib.Path, exemplar_set: str, *, exp_dir: pathlib.Path,
               pilot_questions: int = 0, results_per_search: int = 3,
               max_searches: int = 10, tools: Sequence[str] = ('search',),
               name_masking: bool | str = False, snippet_chars: int = 200) -> dict[str, Any]:
  """Gen 0's training data, and the training questions the loop may use unlabeled.

  The last `pilot_questions` training questions are the labelled pilot: each
  gets a scripted demonstration (`agent.demonstrations`) that joins the
  hand-written exemplars in `seed.tfrecord` (with the calculator among
  `tools`, an arithmetic one calculates its answer). The others are written to
  `train_unlabeled.jsonl`, the only training questions rollouts see.

  Returns:
    Counts: seed examples (per step type), pilot questions demonstrated and
    skipped, unlabeled questions.
  """
  from restreact_jax.agent import demonstrations as demos_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent import prompts  # pylint: disable=g-import-not-at-top
  from restreact_jax import jsonl  # pylint: disable=g-import-not-at-top
  from restreact_jax.commands import search as search_cmd  # pylint: disable=g-import-not-at-top
  from tasks import rest as rest_tasks  # pylint: disable=g-import-not-at-top
  train_path = exp_dir / 'world' / 'questions' / 'train.jsonl'
  train = list(jsonl.iter_jsonl(train_path))
  if not 0 <= pilot_questions < len(train):
    raise errors.UserError(f'rest.pilot_questions must be in [0, {len(train)}) (the training '
                           f'questions in {train_path}), got {pilot_questions}')
  cut = len(train) - pilot_questions
  unlabeled, pilot = train[:cut], train[cut:]
  demos: list[Any] = []
  skipped: list[str] = []
  if pilot:
    tool = search_cmd.make_search_tool(exp_dir, 'bm25', None, use_cache=False,
                                       max_snippet_chars=snippet_chars)
    demos, skipped = demos_lib.demonstrate_all(
        pilot, tool, results_per_search=results_per_search,
        calculate=prompts.has_calculator(tools))
    with open(out / 'pilot.jsonl', 'w', encoding='utf-8') as f:
      for demo in demos:
        f.write(json.dumps(demos_lib.to_json(demo), sort_keys=True) + '\n')
  with open(out / 'train_unlabeled.jsonl', 'w', encoding='utf-8') as f:
    for q in unlabeled:
      f.write(json.dumps(q, sort_keys=True) + '\n')
  transform = masker(exp_dir, name_masking).mask_pair if name_masking else None
  result = rest_tasks.write_seed(out, exemplar_set, demos, max_searches, tools, transform)
  result.update({'pilot_demonstrations': len(demos), 'pilot_skipped': skipped,
                 'unlabeled_questions': len(unlabeled)})
  return result


def write_heldout(out: pathlib.Path, unlabeled_path: pathlib.Path, start: int
                  ) -> dict[str, Any]:
  """`out/questions.jsonl`: the unlabeled training questions no rollout sees.

  Rollouts take those before `start` (`RestConfig.heldout_start`); the rest
  are a held-out set from the training distribution (`rest.heldout_eval`).
  """
  from restreact_jax import jsonl  # pylint: disable=g-import-not-at-top
  rows = list(jsonl.iter_jsonl_files([unlabeled_path]))
  heldout = rows[start:]
  if not heldout:
    raise errors.UserError(f'rest.heldout_eval: no unlabeled training questions after the '
                           f'{start} that rollouts take ({len(rows)} in {unlabeled_path})')
  with open(out / 'questions.jsonl', 'w', encoding='utf-8') as f:
    for q in heldout:
      f.write(json.dumps(q, sort_keys=True) + '\n')
  return {'questions': len(heldout), 'first': heldout[0].get('id'), 'last': heldout[-1].get('id')}


def masker(exp_dir: pathlib.Path, mode: bool | str = True):
  """The world's `NameMasker` (every entity name and year of `world/entities.jsonl`).

  `mode` is `rest.name_masking` (`agent.name_masking.MODES`).
  """
  from restreact_jax.agent import name_masking  # pylint: disable=g-import-not-at-top
  return name_masking.from_world(exp_dir, mode=mode)


def write_masked_corpus(out: pathlib.Path, exp_dir: pathlib.Path,
                        mode: bool | str = True) -> pathlib.Path:
  """`out/corpus_masked.jsonl`: every passage with its names masked (own table)."""
  from restreact_jax import jsonl  # pylint: disable=g-import-not-at-top
  m = masker(exp_dir, mode)
  path = out / 'corpus_masked.jsonl'
  with open(path, 'w', encoding='utf-8') as f:
    for doc in jsonl.iter_jsonl(pathlib.Path(exp_dir) / 'world' / 'corpus.jsonl'):
      table = m.table(str(doc.get('title', '')), str(doc['text']))
      f.write(json.dumps({**doc, 'title': m.mask(str(doc.get('title', '')), table),
                          'text': m.mask(str(doc['text']), table)}, sort_keys=True) + '\n')
  return path


def entity_symbols(entities_path: pathlib.Path) -> list[str]:
  """The world's entity names and years, in file order (for `train_vocabulary`)."""
  from restreact_jax import jsonl  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent import name_masking  # pylint: disable=g-import-not-at-top
  return name_masking.world_symbols(jsonl.iter_jsonl(entities_path))


def train_vocabulary(out: pathlib.Path, inputs: Sequence[pathlib.Path],
                     vocab_size: int, entity_symbols: Sequence[str] = (),
                     model_type: str = 'unigram') -> dict[str, Any]:
  """Trains the experiment's SentencePiece model.

  `entity_symbols` (the world's entity names and years, when
  `rest.entity_tokens`) each become one piece, wherever they occur: a model
  then copies a name from the question or a snippet as one token instead of
  spelling it piece by piece, and prompts get shorter. They count toward
  `vocab_size`.
  """
  from restreact_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
  symbols = (*vocab_lib.CODE_SYMBOLS, *entity_symbols)
  if model_type not in ('unigram', 'bpe'):
    raise errors.UserError(f"rest.vocab_model_type {model_type!r}; choose 'unigram' or 'bpe'")
  if len(symbols) + 300 > vocab_size:
    raise errors.UserError(
        f'rest.vocab_size {vocab_size} leaves no room for the {len(symbols)} code and entity '
        f'symbols plus bytes; use at least {len(symbols) + 600}')
  path = vocab_lib.train_sentencepiece(inputs, out / 'spm.model', vocab_size=vocab_size,
                                       model_type=model_type, user_symbols=symbols)
  return {'pieces': int(vocab_lib.load_vocabulary(path).vocab_size),
          'entity_symbols': len(entity_symbols)}


# ---------------------------------------------------------------------------
# Training.


def train(model_dir: pathlib.Path, *, model: model_configs.TransformerConfig,
          task: str, settings: TrainSettings, mesh_shape: Sequence[int],
          init_checkpoint: str | None, config_text: str, progress: bool,
          teacher: tuple[model_configs.TransformerConfig, str] | None = None
          ) -> dict[str, Any]:
  """Trains (or resumes training) `model` on a registered task into `model_dir`.

  Args:
    model_dir: the phase directory; checkpoints go to `model_dir/checkpoints`.
    model: the architecture.
    task: a registered seqio task or mixture.
    settings: steps, batch, optimizer, lengths, seed.
    mesh_shape: `(data, model)` mesh.
    init_checkpoint: start from these params when the run has no checkpoint.
    config_text: the resolved gin config saved in checkpoints.
    progress: show the trainer's tqdm bar.
    teacher: `(architecture, checkpoint directory)` of the model to distil
      from when `settings.distill_weight` is set.

  Returns:
    `{"step", "loss", "accuracy", "params_digest"}` (and `distill_kl`; with
    `settings.soup > 1`, `members`: each member's result).
  """
  if settings.soup > 1:
    return _train_soup(model_dir, model=model, task=task, settings=settings,
                       mesh_shape=mesh_shape, init_checkpoint=init_checkpoint,
                       config_text=config_text, progress=progress, teacher=teacher)
  from restreact_jax import data as data_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax import distillation  # pylint: disable=g-import-not-at-top
  from restreact_jax import partitioning  # pylint: disable=g-import-not-at-top
  from restreact_jax import trainer  # pylint: disable=g-import-not-at-top
  try:
    mesh = partitioning.make_mesh(tuple(mesh_shape))
  except ValueError as e:
    raise errors.UserError(f'rest.mesh_shape: {e}') from None
  distill = None
  if settings.distill_weight:
    if teacher is None:
      raise errors.UserError(f'{model_dir.name}: distill_weight is set but this model has no '
                             'teacher (only the loop\'s students do)')
    distill = distillation.Teacher(teacher[0], settings.distill_weight,
                                   settings.distill_temperature)
  data = data_lib.DataConfig(task, dict(settings.task_feature_lengths), settings.batch_size,
                             pack=settings.pack, seed=settings.seed,
                             loss_on_targets_only=not settings.prompt_loss)
  result = trainer.train_loop(
      model, mesh, partitioning.logical_axis_rules(False),
      trainer.OptimizerConfig(learning_rate=settings.learning_rate,
                              warmup_steps=min(settings.warmup_steps, settings.steps),
                              weight_decay=settings.weight_decay, clip_norm=settings.clip_norm,
                              average_last_steps=settings.average_last),
      data,
      trainer.LoopConfig(train_steps=settings.steps, checkpoint_period=settings.checkpoint_period,
                         keep_checkpoints=settings.keep_checkpoints, z_loss=settings.z_loss,
                         seed=settings.seed),
      model_dir=model_dir, init_checkpoint=init_checkpoint, config_text=config_text,
      progress=progress, teacher=distill, teacher_checkpoint=teacher[1] if distill else None)
  last = result.history[-1] if result.history else {}
  return {'step': int(result.state.step), 'loss': last.get('loss'),
          'accuracy': last.get('accuracy'), 'params_digest': params_digest(result.state.params),
          **({'distill_kl': last.get('distill_kl')} if distill else {})}


def _host_params(checkpoint_dir: str | pathlib.Path,
                 model: model_configs.TransformerConfig) -> Any:
  """The latest params of a checkpoint directory, as host arrays."""
  import jax  # pylint: disable=g-import-not-at-top
  from restreact_jax import partitioning  # pylint: disable=g-import-not-at-top
  from restreact_jax import trainer  # pylint: disable=g-import-not-at-top
  mesh = partitioning.make_mesh((1, 1), devices=jax.devices()[:1])
  return jax.device_get(trainer.load_params(str(checkpoint_dir), model, mesh,
                                            partitioning.logical_axis_rules(False)))


def _save_params(directory: pathlib.Path, params: Any, step: int, config_gin: str = '') -> None:
  """Saves `params` alone as a checkpoint at `step` (what `trainer.load_params` reads).

  A directory that already holds `step` is left as it is.
  """
  from restreact_jax import checkpoints  # pylint: disable=g-import-not-at-top
  with checkpoints.Checkpointer(directory, max_to_keep=1) as ckpt:
    if ckpt.latest_step() != step:
      ckpt.save({'params': params}, checkpoints.Meta(step=step, data_position=0,
                                                     config_gin=config_gin))
      ckpt.wait()


def _train_soup(model_dir: pathlib.Path, *, settings: TrainSettings, model, **kwargs
                ) -> dict[str, Any]:
  """`settings.soup` runs from the same start in `model_dir/soup_<k>`, averaged.

  Each member is an ordinary resumable run with data-order seed
  `settings.seed + k`; the mean of their final params is saved to
  `model_dir/checkpoints` at step `settings.steps` (params only, as a pruned
  checkpoint is), which is what later phases read.
  """
  import jax  # pylint: disable=g-import-not-at-top
  members = []
  for k in range(settings.soup):
    member = dataclasses.replace(settings, seed=settings.seed + k, soup=1)
    members.append(train(model_dir / f'soup_{k}', settings=member, model=model, **kwargs))
  total = None
  for k in range(settings.soup):
    params = _host_params(model_dir / f'soup_{k}' / 'checkpoints', model)
    total = params if total is None else jax.tree.map(np.add, total, params)
  soup = jax.tree.map(lambda x: (x / settings.soup).astype(x.dtype), total)
  # A rerun after a kill may find the soup saved already.
  _save_params(model_dir / 'checkpoints', soup, settings.steps, kwargs.get('config_text', ''))
  mean = lambda key: (float(np.mean([m[key] for m in members]))  # noqa: E731
                      if all(m.get(key) is not None for m in members) else None)
  return {'step': settings.steps, 'loss': mean('loss'), 'accuracy': mean('accuracy'),
          'params_digest': params_digest(soup), 'members': members}


def prune_checkpoint(out: pathlib.Path, teacher_checkpoint: pathlib.Path,
                     teacher: model_configs.TransformerConfig,
                     student: model_configs.TransformerConfig) -> dict[str, Any]:
  """Writes the teacher's latest params cut to `student` (`models.prune`) to `out/checkpoints`.

  Returns:
    `{"kept_layers", "params", "teacher_params", "params_digest"}`.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from restreact_jax.models import prune  # pylint: disable=g-import-not-at-top
  prune.check_prunable(teacher, student)
  params = _host_params(teacher_checkpoint, teacher)
  pruned = prune.prune_params(params, teacher, student)
  _save_params(out / 'checkpoints', pruned, 0)
  count = lambda tree: int(sum(np.size(x) for x in jax.tree.leaves(tree)))  # noqa: E731
  return {'kept_layers': prune.kept_layers(teacher.num_layers, student.num_layers),
          'params': count(pruned), 'teacher_params': count(params),
          'params_digest': params_digest(pruned)}


# ---------------------------------------------------------------------------
# Rollouts and evaluation.


def make_llm(exp_dir: pathlib.Path, policy: Policy, models: Mapping[str, Any],
             vocab_path: str | None, agent: AgentSettings):
  """The policy behind the `LLM` door."""
  from restreact_jax.commands import rollout as rollout_cmd  # pylint: disable=g-import-not-at-top
  model = models.get(policy.size) if policy.size else None
  # Absolute paths: `make_llm` resolves relative ones under `exp_dir`, which
  # would name a relative EXP_DIR twice.
  exp_dir = pathlib.Path(exp_dir).resolve()
  return rollout_cmd.make_llm(
      str(exp_dir), backend=policy.backend, model=model,
      policy_checkpoint=str(exp_dir / policy.checkpoint) if policy.checkpoint else None,
      vocab_path=str(pathlib.Path(vocab_path).resolve()) if vocab_path else None,
      num_slots=agent.num_slots,
      openai_base_url=policy.openai_base_url, openai_model=policy.openai_model)


def rollout(out: pathlib.Path, *, exp_dir: pathlib.Path, policy: Policy,
            models: Mapping[str, Any], vocab_path: str | None, questions_path: pathlib.Path,
            repeats: int, seed: int, agent: AgentSettings, limit: int | None,
            progress: bool, name_masking: bool | str = False,
            snippet_chars: int = 200, guided: bool = False,
            revise: bool = False, revise_answers: bool = False,
            revise_decisions: bool = False, compare: bool = False, typed: bool = False,
            first: int = 0, desc: str = 'rollout') -> dict[str, Any]:
  """Rolls `policy` out on a question file into `out` (resumes its shard).

  The questions are the file's first `limit` (None: all); with `first`, the
  `limit` from question `first` on, and fewer left there is one clear error.

  With `name_masking` the policy reads and writes placeholders for names
  (`agent.name_masking`); the trajectories hold the real names. With
  `guided` every step continues with the rule rater's pick
  (`feedback.guided`), not the lowest perplexity; with `revise` the rater
  may also pick a grounded revision of a summary (`feedback.revision`), with
  `revise_answers` the answer it reads off the summaries, with
  `revise_decisions` a `Terminate` once the summaries answer the question;
  with `compare` the rater decides choice questions by the summaries' years,
  with `typed` it rejects an answer of the wrong kind
  (`rule_ranker.RuleRanker`). `desc` labels the progress bar.

  Returns:
    Counts of the whole directory (not only this run's part), so a resumed
    phase records the same result as an uninterrupted one.
  """
  from restreact_jax import distributed  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent import prompts  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent import rollout as rollout_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent.agent import AgentConfig  # pylint: disable=g-import-not-at-top
  from restreact_jax.commands import search as search_cmd  # pylint: disable=g-import-not-at-top
  questions = rollout_lib.load_questions(questions_path)
  if first and (not limit or len(questions) < first + limit):
    raise errors.UserError(
        f'{questions_path}: {len(questions)} questions, too few for {limit} from question '
        f'{first} on (rest.fresh_questions: each generation its train limit, one after '
        'another)')
  if limit:
    questions = questions[first:first + limit]
  config = AgentConfig(num_samples=agent.num_samples, temperature=agent.temperature,
                       max_tokens=agent.max_tokens, max_searches=agent.max_searches,
                       results_per_search=agent.results_per_search,
                       max_attempts=agent.max_attempts, base_seed=seed, policy=policy.label,
                       tools=prompts.normalize_tools(agent.tools),
                       action_head=agent.action_head, constrain=agent.constrain)
  prompter = prompts.Prompter(policy.exemplar_set, policy.num_exemplars)
  tool = search_cmd.make_search_tool(exp_dir, 'bm25', None, use_cache=True,
                                     max_snippet_chars=snippet_chars)
  llm = make_llm(exp_dir, policy, models, vocab_path, agent)
  if name_masking:
    from restreact_jax.agent import name_masking as masking_lib  # pylint: disable=g-import-not-at-top
    llm = masking_lib.MaskedLLM(llm, masker(exp_dir, name_masking))
  chooser = None
  if guided:
    from restreact_jax.feedback import guided as guided_lib  # pylint: disable=g-import-not-at-top
    from restreact_jax.feedback import rule_ranker  # pylint: disable=g-import-not-at-top
    chooser = guided_lib.RankerChooser(rule_ranker.RuleRanker(
        calculator=prompts.has_calculator(agent.tools), compare=compare, typed=typed),
                                       revise=revise,
                                       revise_answers=revise_answers,
                                       revise_decisions=revise_decisions)
  rollout_lib.rollout(llm, tool, questions, out_dir=out, prompter=prompter, config=config,
                      repeats=repeats, process_index=distributed.process_index(),
                      process_count=distributed.process_count(),
                      max_concurrent=agent.max_concurrent, show_progress=progress,
                      chooser=chooser, desc=desc)
  trajectories = read_trajectories(out)
  ok = sum(t.get('status') == 'ok' for t in trajectories)
  result = {'trajectories': len(trajectories), 'ok': ok, 'failed': len(trajectories) - ok,
            'steps': sum(len(t.get('steps') or []) for t in trajectories),
            'questions': len(questions), 'repeats': repeats}
  if chooser is not None:
    # This run's share of steps where the rater's pick was not the lowest
    # perplexity (a resumed phase counts only what it rolled out itself).
    result['guided'] = {'picks': chooser.picks, 'overrides': chooser.overrides,
                        **({'revisions': chooser.revisions_taken}
                           if revise or revise_answers or revise_decisions else {})}
  return result


def make_judge(judge: str, judge_openai_base_url: str = '', judge_openai_model: str = ''):
  """'matcher' (alias-aware span match) or 'llm' (the paper's prompt over HTTP)."""
  from restreact_jax.evaluation import judge as judge_lib  # pylint: disable=g-import-not-at-top
  if judge == 'matcher':
    return judge_lib.MatcherJudge()
  if judge == 'llm':
    if not judge_openai_base_url:
      raise errors.UserError("rest.judge = 'llm' needs rest.judge_openai_base_url")
    from restreact_jax.agent.backends import OpenAICompletionsLLM  # pylint: disable=g-import-not-at-top
    return judge_lib.LLMJudge(OpenAICompletionsLLM(judge_openai_base_url, judge_openai_model))
  raise errors.UserError(f"unknown judge {judge!r}; choose 'matcher' or 'llm'")


def judge_rollouts(out: pathlib.Path, *, rollouts: pathlib.Path, questions_path: pathlib.Path,
                   judge: Any, runs: int, limit: int | None, progress: bool) -> dict[str, Any]:
  """Auto-eval of a rollout directory: `summary.json` + `results.jsonl` into `out`."""
  from restreact_jax.evaluation import autoeval  # pylint: disable=g-import-not-at-top
  questions = autoeval.load_jsonl(questions_path)
  if limit:
    questions = questions[:limit]
  index = autoeval.index_questions(questions, str(questions_path))
  result = autoeval.evaluate(read_trajectories(rollouts), index, judge, expected_runs=runs,
                             progress=progress)
  autoeval.write_result(result, out)
  s = result.summary
  return {'final': s['final'], 'answer_generation': s['answer_generation'],
          'n_questions': s['n_questions']}


# ---------------------------------------------------------------------------
# Ranking and the mixture.


def make_ranker(name: str, trajectories: Sequence[Mapping[str, Any]], *,
                rule_weight: float, consistency_weight: float,
                questions_path: pathlib.Path | None = None, calculator: bool = False,
                compare: bool = False, typed: bool = False):
  """The ranker by name.

  'default' is label-free: the rater rules plus self-consistency, weighted.
  'oracle' reads gold answers and is for ablations only (every row it makes
  says `oracle: true`). `calculator`: the agent had the calculator;
  `compare`: the rater decides choice questions, `typed`: it rejects answers
  of the wrong kind (`rule_ranker.RuleRanker`).
  """
  from restreact_jax.feedback import consistency  # pylint: disable=g-import-not-at-top
  from restreact_jax.feedback import oracle  # pylint: disable=g-import-not-at-top
  from restreact_jax.feedback import rankers  # pylint: disable=g-import-not-at-top
  from restreact_jax.feedback import rule_ranker  # pylint: disable=g-import-not-at-top
  if name == 'default':
    rules = rule_ranker.RuleRanker(calculator=calculator, compare=compare, typed=typed)
    return rankers.WeightedRanker([(rules, rule_weight),
                                   (consistency.SelfConsistencyRanker(trajectories),
                                    consistency_weight)])
  if name == 'rules':
    return rule_ranker.RuleRanker(calculator=calculator, compare=compare, typed=typed)
  if name == 'consistency':
    return consistency.SelfConsistencyRanker(trajectories)
  if name == 'oracle':
    from restreact_jax.evaluation import autoeval  # pylint: disable=g-import-not-at-top
    if questions_path is None:
      raise errors.UserError('the oracle ranker needs the questions with their answers')
    index = autoeval.index_questions(autoeval.load_jsonl(questions_path), str(questions_path))
    return oracle.OracleRanker({k: v['answers'] for k, v in index.items()})
  raise errors.UserError(
      f"unknown ranker {name!r}; choose 'default', 'rules', 'consistency' or 'oracle'")


def rank(out: pathlib.Path, *, trajectories_dir: pathlib.Path, ranker_name: str,
         rule_weight: float, consistency_weight: float, questions_path: pathlib.Path,
         progress: bool, tools: Sequence[str] = ('search',),
         compare: bool = False, typed: bool = False) -> dict[str, Any]:
  """Ranks every step's candidates; writes `rankings.jsonl` into `out`.

  `tools`: the agent's tools (with the calculator, the rater reads quantity
  questions for the years a calculation needs). `compare`: the rater decides
  choice questions by the summaries' years; `typed`: it rejects answers of
  the wrong kind.
  """
  from restreact_jax.agent import prompts  # pylint: disable=g-import-not-at-top
  from restreact_jax.feedback import rankers  # pylint: disable=g-import-not-at-top
  from restreact_jax.feedback import rule_ranker  # pylint: disable=g-import-not-at-top
  trajectories = read_trajectories(trajectories_dir)
  if not trajectories:
    raise errors.UserError(f'no trajectories to rank in {trajectories_dir}')
  calculator = prompts.has_calculator(tools)
  ranker = make_ranker(ranker_name, trajectories, rule_weight=rule_weight,
                       consistency_weight=consistency_weight, questions_path=questions_path,
                       calculator=calculator, compare=compare, typed=typed)
  ranked = rankers.rank_trajectories(ranker, trajectories, progress=progress)
  # Label-free quality flags beside every ranking (the mixture may filter on
  # them): which candidates the rater rules accept.
  rules = rule_ranker.RuleRanker(calculator=calculator, compare=compare, typed=typed)
  with open(out / 'rankings.jsonl', 'w', encoding='utf-8') as f:
    for context, candidates, ranking in ranked:
      row = rankers.ranking_row(context, ranking)
      row['acceptable'] = [rules.acceptable(context, c) for c in candidates]
      f.write(json.dumps(row, sort_keys=True) + '\n')
  result = {'ranker': ranker.name, 'ranked_steps': len(ranked),
            'oracle': any(r.oracle for _, _, r in ranked)}
  if ranker_name != 'oracle' and questions_path is not None and questions_path.exists():
    # Analysis only (never used for training): how often the label-free pick is
    # one the gold answers would also pick.
    oracle_ranker = make_ranker('oracle', trajectories, rule_weight=rule_weight,
                                consistency_weight=consistency_weight,
                                questions_path=questions_path)
    oracle_ranked = rankers.rank_trajectories(oracle_ranker, trajectories, progress=False)
    agreement = oracle_agreement(ranked, oracle_ranked)
    (out / 'oracle_agreement.json').write_text(
        json.dumps(agreement, indent=2, sort_keys=True) + '\n')
    result['oracle_agreement'] = agreement['all']
  return result


def oracle_agreement(ranked: Sequence[Any], oracle_ranked: Sequence[Any]) -> dict[str, Any]:
  """Share of steps whose top pick is among the oracle's best, per step type.

  Only steps where the oracle discriminates (its scores are not all equal)
  count; `informative_steps` says how many that was.
  """
  per_type: dict[str, list[bool]] = {}
  for (context, _, ranking), (_, _, gold) in zip(ranked, oracle_ranked, strict=True):
    scores = list(gold.scores)
    if not ranking.order or len(set(scores)) < 2:
      continue
    agrees = scores[ranking.order[0]] == max(scores)
    per_type.setdefault(context.step_type, []).append(agrees)
  flat = [a for v in per_type.values() for a in v]
  return {
      'all': sum(flat) / len(flat) if flat else None,
      'informative_steps': len(flat),
      'per_step_type': {k: {'agreement': sum(v) / len(v), 'steps': len(v)}
                        for k, v in sorted(per_type.items())},
  }


def build_mixture(out: pathlib.Path, *, trajectories_dir: pathlib.Path,
                  rankings_dir: pathlib.Path, vocab_path: str | None,
                  max_input_length: int | None, max_target_length: int | None,
                  exp_dir: pathlib.Path | None = None,
                  name_masking: bool | str = False, only_acceptable: bool = False,
                  trajectory_filter: str | None = None,
                  questions_path: pathlib.Path | None = None) -> dict[str, Any]:
  """Per-step-type TFRecords + `stats.json` into `out`, with the rankings beside them.

  With `name_masking` the examples are written masked (lengths are counted on
  the masked text the model trains on). With `only_acceptable` targets are
  restricted to candidates the rater rules accept (`mixture` module docstring).
  With `trajectory_filter='oracle'` (an ablation) only trajectories whose
  final answer matches the gold answers in `questions_path` are kept, and
  their steps are trained on as taken (the rankings are not used).
  """
  from restreact_jax.rest import mixture  # pylint: disable=g-import-not-at-top
  length_fn = token_length_fn(vocab_path)
  m = masker(exp_dir, name_masking) if name_masking else None
  if m is not None:
    plain_length_fn = length_fn
    length_fn = lambda text: plain_length_fn(m.mask(text, m.table(text)))  # noqa: E731
  rows = mixture.load_ranking_rows([rankings_dir / 'rankings.jsonl'])
  acceptable = None
  if only_acceptable:
    acceptable = {key: list(row.get('acceptable') or ()) for key, row in rows.items()}
  rankings = {key: list(row['order']) for key, row in rows.items()}
  keep = None
  if trajectory_filter == 'oracle':
    keep = mixture.gold_answer_filter(questions_path)
    rankings, acceptable = {}, None  # the steps that reached the answer, as taken
  elif trajectory_filter:
    raise errors.UserError(f"trajectory_filter {trajectory_filter!r}; choose None or 'oracle'")
  examples, stats = mixture.build_examples(
      read_trajectories(trajectories_dir), rankings,
      length_fn=length_fn, max_input_length=max_input_length,
      max_target_length=max_target_length, acceptable=acceptable, keep=keep,
      filter_name=trajectory_filter or '')
  if m is not None:
    examples = [dataclasses.replace(e, **dict(zip(('inputs', 'targets'),
                                                   m.mask_pair(e.inputs, e.targets))))
                for e in examples]
  mixture.write_tfrecords(examples, out)
  stats_json = dataclasses.asdict(stats)
  (out / 'stats.json').write_text(json.dumps(stats_json, indent=2, sort_keys=True) + '\n')
  # The report reads ranking rows from `ranked/*.jsonl`.
  shutil.copyfile(rankings_dir / 'rankings.jsonl', out / 'rankings.jsonl')
  return stats_json
