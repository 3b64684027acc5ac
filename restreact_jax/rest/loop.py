"""The self-improvement loop (arXiv 2312.10003 §3.6), phase by phase on EXP_DIR.

`self_improve` reads as the paper's algorithm:

  world → search index → seed exemplars → vocabulary → base LM (pretrained on
  the corpus) → gen 0 (the base fine-tuned on the exemplars, or a prompted
  HTTP model) → for g = 1..G: roll out the policy on the unlabeled training
  questions (R repeats) → rank every step's candidates (label-free) → build
  the mixture → fine-tune a policy of the same size → fine-tune the smaller
  students on the same data (self-distillation) → auto-eval all on dev →
  keep the new policy only if it beats the previous one → finally auto-eval
  on test and write the report.

Every phase runs through `Experiment.run` with its config fingerprint and the
phases it reads, so a rerun skips what is done, redoes what is stale, resumes
training from its Orbax checkpoint and rollouts from their shards. A `Runner`
restricted to some phases (`only`) runs just those and requires everything
before them to be done already (the `restreact rank/mixture/evaluate` commands).
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any, Callable, Mapping, Sequence

from restreact_jax import errors
from restreact_jax.models import prune
from restreact_jax.rest import experiment as experiment_lib
from restreact_jax.rest import phases
from restreact_jax.rest import pretrained as pretrained_lib
from restreact_jax.rest.phases import AgentSettings, Policy, TrainSettings

RANKERS = ('default', 'rules', 'consistency', 'oracle')
INIT_FROM = ('base', 'previous', 'gen_0')
STUDENT_INIT = ('base', 'pruned')


@dataclasses.dataclass(frozen=True)
class RestConfig:
  """Everything the loop needs (the `rest` command builds it from gin).

  Attributes:
    world: the synthetic world's `WorldConfig`.
    models: size name → `TransformerConfig` for the policy and every student.
    policy_size: the size that rolls out (the paper's L).
    student_sizes: sizes fine-tuned on each mixture (self-distillation). With
      a fine-tuned gen 0 every student first gets gen 0's own seed fine-tune
      (`gen_0/models/<size>`): it learns from the same demonstrations as the
      policy, then from every generation's ranked data (or the last one's:
      `distill_last_only`).
    generations: G, the number of self-improvement generations.
    vocab_size: SentencePiece pieces (at most every model's vocab_size).
    exemplar_set: the hand-written trajectories ('world' or 'open_domain').
    pretrain: base LM training (per size).
    pretrained_base: a directory written by `restreact pretrain_base`
      (`rest/pretrained.py`): its vocabulary replaces the `vocab` phase's and its
      weights each `base/<size>` pretraining, for the sizes it holds (it
      must hold the policy's; other sizes are pretrained on the world's
      corpus as without it). '': train the vocabulary and every base here.
    seed_finetune: gen 0: the base fine-tuned on the exemplars.
    finetune: a generation's policy fine-tune.
    distill: a generation's student fine-tunes.
    student_seed: the students' gen 0 seed fine-tune (None: `seed_finetune`).
    distill_last_only: students are fine-tuned on the last generation's data
      only (from their seed fine-tune), not on every generation's.
    init_from: 'base' (each generation starts from the base checkpoint),
      'previous' (from the previous generation's model of that size) or
      'gen_0' (from that size's gen 0 seed fine-tune: each generation's data
      is learnt afresh from the same start, as ReST-EM does, rather than on
      top of every earlier generation's).
    student_init: 'base' (a student starts from its own base and seed
      fine-tune, as above) or 'pruned' (every student fine-tune starts from
      that generation's policy cut to the student's shape, `models.prune`:
      evenly spaced layers and the most important MLP units; the student
      then needs no base or seed fine-tune of its own).
    repeats: trajectories per training question, by generation (g=1 first);
      later generations reuse the last value.
    train_limit: only the first N training questions (None: all).
    agent: sampling settings of rollouts and evaluation.
    num_samples_by_size: per-size override of `agent.num_samples`.
    ranker: 'default' (label-free: rules + self-consistency), 'rules',
      'consistency', or 'oracle' (gold labels; an ablation, labelled as such).
    ranker_by_generation: per-generation override of `ranker` (what
      `restreact rank --ranker=...` sets for the one generation it ranks).
    rule_weight: weight of the rule rater in 'default'.
    consistency_weight: weight of self-consistency in 'default'.
    mixture_rates: per-example weight per step type (0 or missing: left out);
      None: every type in proportion to its examples.
    seed_fraction: share of the seed exemplars mixed into every generation's
      training data (0, the paper's setting: no accumulation). A generation
      whose mixture is empty and whose seed_fraction is 0 trains nothing: its
      policy is kept from before and the decision says why.
    pilot_questions: the last N training questions are a labelled pilot set:
      gen 0 is fine-tuned on the exemplars plus a scripted demonstration of
      each (`agent.demonstrations`; the stand-in for the paper's prompted
      large model), and rollouts never see them. 0: the exemplars only.
    entity_tokens: make every entity name and year of the world one
      vocabulary piece (a name is copied as one token; see
      `phases.train_vocabulary`).
    vocab_model_type: SentencePiece 'unigram' or 'bpe'.
    name_masking: the models read and write entity names as placeholders
      numbered per text (`agent.name_masking`); corpus, seed and ranked
      examples are written masked, rollouts mask and unmask around the model.
    only_acceptable: train only on candidates the rater rules accept (the
      label-free "filter bad actions"; see `rest.mixture`).
    trajectory_filter: None, or 'oracle' (an ablation that uses labels): train
      only on the steps, as taken, of trajectories whose final answer is right
      by the gold answers — what a perfect trajectory-level filter would give.
    snippet_chars: the longest search snippet (whole sentences around the one
      that best matches the query; ~90 gives one sentence).
    rollout_num_samples: candidates per step in the training rollouts only
      (the ranker's choice; the paper samples 16 for its smallest model);
      None: the agent's `num_samples`. Evaluation keeps `agent`'s.
    rollout_temperature: sampling temperature of the training rollouts only
      (more varied candidates give the ranker more to choose from); None:
      the agent's.
    guided_rollouts: training rollouts continue every step with the rule
      rater's pick instead of the lowest perplexity (`feedback.guided`;
      label-free), so more trajectories reach later hops on sound ground.
      Evaluation always rolls out the policy alone.
    revise_summaries: with `guided_rollouts`, the rater also offers a
      grounded revision of each summary candidate (`feedback.revision`: the
      claim restated with the shown links' own sentences) and may pick it;
      the mixture then trains on it where the rater prefers it.
    eval_runs: trajectories per dev/test question (runs for mean ± std).
    dev_eval_runs: runs on dev, where they only decide keep/reject (None:
      `eval_runs`).
    dev_eval_students: also auto-eval the students on dev every generation
      (they take no part in the keep/reject decision; the test split reports
      them either way).
    test_all_generations: evaluate every generation's policy on test (not only
      the final one and gen 0), so the report shows the whole trend.
    eval_limit: only the first N dev/test questions (None: all).
    judge: 'matcher' or 'llm'.
    judge_openai_base_url: server of the LLM judge.
    judge_openai_model: its model name.
    min_improvement: a new policy is kept only if its dev accuracy exceeds the
      previous one's by more than this (percentage points).
    select_on_dev: auto-eval every policy on dev and keep a generation only
      if it beats the current policy there. False: the paper's protocol,
      every generation is kept and rolls out the next one; no dev auto-eval.
    gen0: 'finetune' or 'prompted' (an OpenAI-compatible model with few-shot
      prompts rolls out generation 1).
    gen0_openai_base_url: the prompted model's server.
    gen0_openai_model: its model name.
    gen0_num_exemplars: shots per step for the prompted model (None: paper).
    seed: root of the rollout seeds.
    mesh_shape: `(data, model)` mesh for training.
    test: evaluate the final models on the test split.
    heldout_eval: also auto-eval the models the test split reports on the
      unlabeled training questions that no rollout saw (those after
      `train_limit`; their answers are read only to judge, as the test
      split's). A second, larger held-out set from the same distribution,
      for a world whose test split is small (`heldout/eval/<model>/`).
    progress: draw tqdm bars.
  """
  world: Any
  models: Mapping[str, Any]
  policy_size: str
  student_sizes: tuple[str, ...] = ()
  generations: int = 2
  vocab_size: int = 2048
  exemplar_set: str = 'world'
  pretrain: TrainSettings = TrainSettings(steps=2000)
  pretrained_base: str = ''
  seed_finetune: TrainSettings = TrainSettings(steps=300)
  finetune: TrainSettings = TrainSettings(steps=500)
  distill: TrainSettings = TrainSettings(steps=500)
  student_seed: TrainSettings | None = None
  distill_last_only: bool = False
  init_from: str = 'base'
  student_init: str = 'base'
  repeats: tuple[int, ...] = (1, 4)
  train_limit: int | None = None
  agent: AgentSettings = AgentSettings()
  num_samples_by_size: Mapping[str, int] = dataclasses.field(default_factory=dict)
  ranker: str = 'default'
  ranker_by_generation: Mapping[int, str] = dataclasses.field(default_factory=dict)
  rule_weight: float = 1.0
  consistency_weight: float = 1.0
  mixture_rates: Mapping[str, float] | None = None
  seed_fraction: float = 0.0
  pilot_questions: int = 0
  entity_tokens: bool = False
  name_masking: bool = False
  only_acceptable: bool = False
  trajectory_filter: str | None = None
  snippet_chars: int = 200
  rollout_num_samples: int | None = None
  rollout_temperature: float | None = None
  guided_rollouts: bool = False
  revise_summaries: bool = False
  vocab_model_type: str = 'unigram'
  eval_runs: int = 3
  dev_eval_runs: int | None = None
  dev_eval_students: bool = True
  test_all_generations: bool = False
  eval_limit: int | None = None
  judge: str = 'matcher'
  judge_openai_base_url: str = ''
  judge_openai_model: str = ''
  min_improvement: float = 0.0
  select_on_dev: bool = True
  gen0: str = 'finetune'
  gen0_openai_base_url: str = ''
  gen0_openai_model: str = ''
  gen0_num_exemplars: int | None = None
  seed: int = 0
  mesh_shape: tuple[int, ...] = (-1, 1)
  test: bool = True
  heldout_eval: bool = False
  progress: bool = True

  def validate(self) -> None:
    """Raises `UserError` naming the first bad setting."""
    if self.policy_size not in self.models:
      raise errors.UserError(f'rest.policy_size {self.policy_size!r} is not in rest.models '
                             f'({", ".join(self.models)})')
    for size in self.student_sizes:
      if size not in self.models:
        raise errors.UserError(f'rest.student_sizes: {size!r} is not in rest.models '
                               f'({", ".join(self.models)})')
    if self.policy_size in self.student_sizes:
      raise errors.UserError('rest.student_sizes must not contain the policy size')
    if self.pretrained_base:
      base = pretrained_lib.load(self.pretrained_base)
      if bool(base.manifest.get('name_masking')) != self.name_masking:
        raise errors.UserError(
            f'rest.pretrained_base {base.root} was trained with name_masking='
            f'{bool(base.manifest.get("name_masking"))}; set rest.name_masking to match')
      # The policy's weights must be there (check_model names what is missing).
      if self.policy_size not in base.sizes:
        base.check_model(self.policy_size, self.models[self.policy_size])
      for size in (self.policy_size, *self.student_sizes):
        if size in base.sizes:
          base.check_model(size, self.models[size])
    if self.revise_summaries and not self.guided_rollouts:
      raise errors.UserError('rest.revise_summaries needs rest.guided_rollouts = True')
    if self.generations < 0:
      raise errors.UserError(f'rest.generations must be >= 0, got {self.generations}')
    if not self.repeats or any(int(r) < 1 for r in self.repeats):
      raise errors.UserError(f'rest.repeats must be integers >= 1, got {self.repeats}')
    for ranker in (self.ranker, *self.ranker_by_generation.values()):
      if ranker not in RANKERS:
        raise errors.UserError(f'rest.ranker {ranker!r}; choose one of {", ".join(RANKERS)}')
    if self.init_from not in INIT_FROM:
      raise errors.UserError(f'rest.init_from {self.init_from!r}; choose base, previous or gen_0')
    if self.init_from == 'gen_0' and self.gen0 != 'finetune':
      raise errors.UserError("rest.init_from = 'gen_0' needs a fine-tuned gen 0 (rest.gen0 = "
                             "'finetune')")
    if self.student_init not in STUDENT_INIT:
      raise errors.UserError(f'rest.student_init {self.student_init!r}; choose base or pruned')
    if self.student_init == 'pruned':
      for size in self.student_sizes:
        try:
          prune.check_prunable(self.models[self.policy_size], self.models[size])
        except errors.UserError as e:
          raise errors.UserError(f"rest.student_init = 'pruned', student {size!r}: {e}") from e
    if self.gen0 not in ('finetune', 'prompted'):
      raise errors.UserError(f"rest.gen0 {self.gen0!r}; choose 'finetune' or 'prompted'")
    if self.gen0 == 'prompted' and not self.gen0_openai_base_url:
      raise errors.UserError("rest.gen0 = 'prompted' needs rest.gen0_openai_base_url")
    if self.eval_runs < 1:
      raise errors.UserError(f'rest.eval_runs must be >= 1, got {self.eval_runs}')
    if self.dev_eval_runs is not None and self.dev_eval_runs < 1:
      raise errors.UserError(f'rest.dev_eval_runs must be >= 1, got {self.dev_eval_runs}')
    if self.heldout_eval and self.train_limit is None:
      raise errors.UserError('rest.heldout_eval needs rest.train_limit: the held-out questions '
                             'are the unlabeled training questions after it')
    if self.pilot_questions < 0:
      raise errors.UserError(f'rest.pilot_questions must be >= 0, got {self.pilot_questions}')
    if self.trajectory_filter not in (None, 'oracle'):
      raise errors.UserError(
          f"rest.trajectory_filter {self.trajectory_filter!r}; choose None or 'oracle'")
    if self.snippet_chars < 20:
      raise errors.UserError(f'rest.snippet_chars must be >= 20, got {self.snippet_chars}')
    if self.rollout_temperature is not None and not 0 <= self.rollout_temperature <= 10:
      raise errors.UserError(
          f'rest.rollout_temperature must be in [0, 10] or None, got {self.rollout_temperature}')
    if self.rollout_num_samples is not None and self.rollout_num_samples < 1:
      raise errors.UserError(
          f'rest.rollout_num_samples must be >= 1 or None, got {self.rollout_num_samples}')
    if self.vocab_model_type not in ('unigram', 'bpe'):
      raise errors.UserError(
          f"rest.vocab_model_type {self.vocab_model_type!r}; choose 'unigram' or 'bpe'")
    if self.vocab_size < 1:
      raise errors.UserError(f'rest.vocab_size must be >= 1, got {self.vocab_size}')
    for size, model in self.models.items():
      if model.vocab_size < self.vocab_size:
        raise errors.UserError(f'model {size!r} has vocab_size {model.vocab_size} < '
                               f'rest.vocab_size {self.vocab_size}')
    for name in ('pretrain', 'seed_finetune', 'finetune', 'distill', 'student_seed'):
      if getattr(self, name) is not None and getattr(self, name).steps < 1:
        raise errors.UserError(f'rest.{name} needs steps >= 1')

  def repeats_for(self, generation: int) -> int:
    return int(self.repeats[min(generation, len(self.repeats)) - 1])

  def agent_for(self, size: str | None) -> AgentSettings:
    n = self.num_samples_by_size.get(size) if size else None
    return dataclasses.replace(self.agent, num_samples=int(n)) if n else self.agent


def init_phase_for(cfg: RestConfig, g: int, size: str, previous: Policy | None) -> str:
  """The phase whose checkpoint generation g's `size` model starts from.

  A student cut from generation g's policy starts there; otherwise
  `cfg.init_from` decides: the previous generation's model of that size, the
  size's gen 0 seed fine-tune, or its base.
  """
  if previous is not None and previous.phase and (
      previous.phase.startswith(f'gen_{g}/pruned/') or cfg.init_from == 'previous'):
    return previous.phase
  if cfg.init_from == 'gen_0':
    return f'gen_0/models/{size}'
  return f'base/{size}'


class _Stop(Exception):
  """Every phase a restricted `Runner` was asked for is done."""


class Runner:
  """Runs phases through the experiment, optionally only some of them.

  Args:
    exp: the experiment directory.
    only: phase names to run; every other phase must already be done (its
      recorded result is used). None runs everything.
    log: progress lines.
  """

  def __init__(self, exp: experiment_lib.Experiment, only: Sequence[str] | None = None,
               log: Callable[[str], None] = print):
    self.exp = exp
    self.only = set(only) if only is not None else None
    self._pending = set(self.only or ())
    self.log = log

  def __call__(self, name: str, fn: Callable[[pathlib.Path], Any], *, output: str,
               config: Any = None, deps: Sequence[str] = (), resumable: bool = False) -> Any:
    if self.only is not None and name not in self.only:
      fp = experiment_lib.fingerprint(
          config, [f'{d}:{self.exp.fingerprint_of(d)}' for d in deps])
      if not self.exp.is_done(name, fp):
        state = 'is stale' if self.exp.record(name) else 'has not run'
        raise errors.UserError(
            f'phase {name!r} {state} in {self.exp.root}; it comes before '
            f'{", ".join(sorted(self._pending))}: run `restreact rest` first')
      return self.exp.record(name).result
    self.log(f'== phase {name}')
    result = self.exp.run(name, fn, output=output, config=config, deps=deps,
                          resumable=resumable)
    if self.only is not None:
      self._pending.discard(name)
      if not self._pending:
        raise _Stop()
    return result


# ---------------------------------------------------------------------------
# The algorithm.


def self_improve(cfg: RestConfig, exp: experiment_lib.Experiment, *,
                 only: Sequence[str] | None = None, config_text: str = '',
                 log: Callable[[str], None] = print) -> dict[str, Any]:
  """Runs (or resumes) the whole loop; see the module docstring.

  Args:
    cfg: the settings.
    exp: the experiment directory.
    only: run just these phases (everything before them must be done).
    config_text: the resolved gin config, saved in checkpoints.
    log: progress lines.

  Returns:
    `{"policy": label, "decisions": [...], "test": {...}}`.
  """
  cfg.validate()
  run = Runner(exp, only, log)
  steps = _Steps(cfg, exp, run, config_text, log)
  try:
    steps.world_and_index()
    steps.vocabulary()
    pruned = cfg.student_init == 'pruned'
    for size in (cfg.policy_size, *(() if pruned else cfg.student_sizes)):
      steps.pretrain(size)
    policy = steps.generation_zero()
    previous = {size: None if pruned else steps.seed_student(size) for size in cfg.student_sizes}
    best = steps.evaluate(policy, 'dev') if cfg.select_on_dev else None
    decisions = []
    previous[cfg.policy_size] = None
    for g in range(1, cfg.generations + 1):
      steps.rollout(g, policy)
      steps.rank(g)
      stats = steps.mixture(g)
      if not stats['examples'] and not cfg.seed_fraction:
        decisions.append(steps.select(g, None, None, policy, best))
        continue
      candidate = steps.finetune(g, cfg.policy_size, previous[cfg.policy_size] or policy)
      distill_now = not cfg.distill_last_only or g == cfg.generations
      students = [steps.finetune(g, size, steps.prune(g, size, candidate) if pruned
                                 else previous[size])
                  for size in cfg.student_sizes if distill_now]
      score = steps.evaluate(candidate, 'dev') if cfg.select_on_dev else None
      if cfg.dev_eval_students:
        for student in students:
          steps.evaluate(student, 'dev')
      decision = steps.select(g, candidate, score, policy, best)
      decisions.append(decision)
      if decision['kept']:
        policy, best = candidate, score
      previous = {**previous, cfg.policy_size: candidate, **{s.size: s for s in students}}
    test = steps.final_test(policy) if cfg.test else {}
    steps.report()
  except _Stop:
    return {'policy': None, 'decisions': [], 'test': {}}
  for split in ('test', 'heldout'):
    table = exp.root / 'report' / f'{split}.md'
    if table.is_file():
      log(f'rest: {split} auto-eval (accuracy %, mean ± std over runs)\n'
          f'{table.read_text().rstrip()}')
  log(f'rest: report {exp.root / "report" / "index.html"}')
  log(f'rest: final policy {policy.label}' + (f' (dev final {_fmt(best)})' if best else ''))
  return {'policy': policy.label, 'decisions': decisions, 'test': test}


def _fmt(stat: Mapping[str, Any] | None) -> str:
  if not stat:
    return 'n/a'
  return f'{stat["mean"]:.1f} ± {stat["std"]:.1f} over {stat["n_runs"]} runs'


class _Steps:
  """The loop's phases with their outputs, fingerprints and dependencies."""

  def __init__(self, cfg: RestConfig, exp: experiment_lib.Experiment, run: Runner,
               config_text: str, log: Callable[[str], None]):
    self.cfg = cfg
    self.exp = exp
    self.root = exp.root
    self.run = run
    self.config_text = config_text
    self.log = log
    self.vocab_path = str(self.root / 'vocab' / 'spm.model')
    self.eval_phases: list[str] = []

  # -- world, index, seed data, vocabulary ------------------------------------

  def world_and_index(self) -> None:
    self.run('world', lambda out: phases.build_world(out, self.cfg.world),
             output='world', config={'world': self.cfg.world})
    self.run('search', lambda out: phases.build_search_index(
        out, self.root / 'world' / 'corpus.jsonl'), output='search/bm25', deps=['world'])

  def vocabulary(self) -> None:
    cfg = self.cfg
    seed = self.run('gen_0/seed', lambda out: phases.write_seed(
        out, cfg.exemplar_set, exp_dir=self.root, pilot_questions=cfg.pilot_questions,
        results_per_search=cfg.agent.results_per_search, max_searches=cfg.agent.max_searches,
        tools=cfg.agent.tools, name_masking=cfg.name_masking,
        snippet_chars=cfg.snippet_chars),
                    output='gen_0/seed', deps=['world', 'search'],
                    config={'exemplar_set': cfg.exemplar_set, 'pilot': cfg.pilot_questions,
                            'results_per_search': cfg.agent.results_per_search,
                            'max_searches': cfg.agent.max_searches,
                            'tools': list(cfg.agent.tools), 'masking': cfg.name_masking,
                            'snippet_chars': cfg.snippet_chars,
                            'version': 2})
    if seed is not None and seed.get('pilot_demonstrations'):
      self.log(f'[gen_0/seed] {seed["examples"]} examples: the exemplars and '
               f'{seed["pilot_demonstrations"]} pilot demonstrations '
               f'({len(seed["pilot_skipped"])} pilot questions skipped); '
               f'{seed["unlabeled_questions"]} unlabeled training questions')
    entities = self.root / 'world' / 'entities.jsonl'

    def train_vocab(out: pathlib.Path) -> Any:
      corpus, symbols = self.root / 'world' / 'corpus.jsonl', []
      if cfg.entity_tokens:
        symbols += phases.entity_symbols(entities)
      if cfg.name_masking:
        from restreact_jax.agent import name_masking  # pylint: disable=g-import-not-at-top
        corpus = phases.write_masked_corpus(out, self.root)
        symbols += name_masking.PLACEHOLDERS
      if base is not None:
        from restreact_jax import vocab as vocab_lib  # pylint: disable=g-import-not-at-top
        path = base.install_vocab(out)
        return {'pieces': int(vocab_lib.load_vocabulary(str(path)).vocab_size),
                'pretrained_base': str(base.root)}
      return phases.train_vocabulary(
          out, [corpus, self.root / 'gen_0' / 'seed' / 'seed.jsonl'], cfg.vocab_size, symbols,
          cfg.vocab_model_type)

    base = pretrained_lib.load(cfg.pretrained_base) if cfg.pretrained_base else None
    config = {'vocab_size': cfg.vocab_size, 'entity_tokens': cfg.entity_tokens,
              'model_type': cfg.vocab_model_type, 'masking': cfg.name_masking}
    if base is not None:
      config = {'masking': cfg.name_masking, 'pretrained_base': base.describe()}
    result = self.run('vocab', train_vocab, output='vocab', config=config,
                      deps=['world', 'gen_0/seed'])
    self.align_vocab(int(result['pieces']))

  def align_vocab(self, pieces: int) -> None:
    """Gives every model exactly the trained vocabulary's size.

    SentencePiece may learn fewer pieces than asked for on a small corpus; a
    model with a larger output layer would then sample ids that decode to
    nothing. The change is part of every later phase's fingerprint.
    """
    models = {}
    for size, model in self.cfg.models.items():
      if model.vocab_size != pieces:
        self.log(f'[vocab] model {size!r}: vocab_size {model.vocab_size} -> {pieces} '
                 '(the trained vocabulary)')
        model = dataclasses.replace(model, vocab_size=pieces)
      models[size] = model
    self.cfg = dataclasses.replace(self.cfg, models=models)

  # -- training -------------------------------------------------------------

  def _train(self, name: str, size: str, task_fn: Callable[[], str], settings: TrainSettings,
             init: str | None, deps: Sequence[str], extra: Any = None) -> None:
    def fn(out: pathlib.Path) -> Any:
      task = task_fn()
      init_dir = str(self.root / init) if init else None
      return phases.train(out, model=self.cfg.models[size], task=task, settings=settings,
                          mesh_shape=self.cfg.mesh_shape, init_checkpoint=init_dir,
                          config_text=self.config_text, progress=self.cfg.progress)
    self.run(name, fn, output=name, resumable=True, deps=deps,
             config={'model': self.cfg.models[size], 'settings': settings, 'init': init,
                     'extra': extra})

  def pretrain(self, size: str) -> None:
    from tasks import rest as rest_tasks  # pylint: disable=g-import-not-at-top
    base = pretrained_lib.load(self.cfg.pretrained_base) if self.cfg.pretrained_base else None
    if base is not None and size in base.sizes:
      base.check_model(size, self.cfg.models[size])
      self.run(f'base/{size}', lambda out: {'checkpoint': str(base.install_checkpoint(size, out)),
                                            'pretrained_base': str(base.root)},
               output=f'base/{size}', deps=['vocab'],
               config={'model': self.cfg.models[size], 'pretrained_base': base.describe()})
      return
    self._train(f'base/{size}', size,
                lambda: rest_tasks.register_corpus(
                    self.root, self.vocab_path,
                    self.root / 'vocab' / 'corpus_masked.jsonl' if self.cfg.name_masking else None),
                dataclasses.replace(self.cfg.pretrain, task_feature_lengths={
                    'targets': self.cfg.pretrain.task_feature_lengths.get('targets', 256)}),
                None, ['world', 'vocab'])

  def _seed_finetune(self, size: str, settings: TrainSettings) -> Policy:
    """`size`'s gen 0: its base fine-tuned on the seed data."""
    from tasks import rest as rest_tasks  # pylint: disable=g-import-not-at-top
    name = f'gen_0/models/{size}'
    self._train(name, size, lambda: rest_tasks.register_seed(self.root, self.vocab_path),
                settings, f'base/{size}/checkpoints', ['gen_0/seed', 'vocab', f'base/{size}'])
    return self._policy(0, size, name)

  def generation_zero(self) -> Policy:
    """Gen 0: the base fine-tuned on the seed exemplars, or a prompted model."""
    cfg = self.cfg
    if cfg.gen0 == 'prompted':
      return Policy(label='gen_0/prompted', generation=0, backend='openai',
                    openai_base_url=cfg.gen0_openai_base_url,
                    openai_model=cfg.gen0_openai_model, exemplar_set=cfg.exemplar_set,
                    num_exemplars=cfg.gen0_num_exemplars)
    return self._seed_finetune(cfg.policy_size, cfg.seed_finetune)

  def seed_student(self, size: str) -> Policy | None:
    """A student's gen 0: its base fine-tuned on the seed data, as the policy's.

    None when gen 0 is a prompted model (no seed fine-tune to share): the
    student then starts from its base at generation 1.
    """
    cfg = self.cfg
    if cfg.gen0 == 'prompted':
      return None
    return self._seed_finetune(size, cfg.student_seed or cfg.seed_finetune)

  def prune(self, g: int, size: str, teacher: Policy) -> Policy:
    """Generation g's policy cut to `size`'s shape: where that student starts."""
    name = f'gen_{g}/pruned/{size}'
    self.run(name, lambda out: phases.prune_checkpoint(
        out, self.root / teacher.checkpoint, self.cfg.models[teacher.size],
        self.cfg.models[size]),
             output=name, deps=[teacher.phase],
             config={'teacher': self.cfg.models[teacher.size], 'student': self.cfg.models[size]})
    return Policy(label=f'gen_{g}/pruned/{size}', generation=g, size=size, phase=name,
                  checkpoint=f'{name}/checkpoints')

  def _policy(self, generation: int, size: str, phase: str) -> Policy:
    return Policy(label=f'gen_{generation}/{size}', generation=generation, size=size,
                  phase=phase, checkpoint=f'{phase}/checkpoints')

  def finetune(self, g: int, size: str, previous: Policy | None) -> Policy:
    """Fine-tunes `size` on generation g's mixture (policy) or distill task (student)."""
    from tasks import rest as rest_tasks  # pylint: disable=g-import-not-at-top
    cfg = self.cfg
    is_policy = size == cfg.policy_size
    init_phase = init_phase_for(cfg, g, size, previous)
    if is_policy:
      task_fn = lambda: rest_tasks.register_generation(  # noqa: E731
          self.root, g, self.vocab_path, cfg.mixture_rates, cfg.seed_fraction)
    else:
      task_fn = lambda: rest_tasks.register_distill(  # noqa: E731
          self.root, g, self.vocab_path, seed_fraction=cfg.seed_fraction)
    name = f'gen_{g}/models/{size}'
    deps = [f'gen_{g}/mixture', 'vocab', init_phase] + (['gen_0/seed'] if cfg.seed_fraction else [])
    settings = cfg.finetune if is_policy else cfg.distill
    self._train(name, size, task_fn, settings, f'{init_phase}/checkpoints', deps,
                extra={'seed_fraction': cfg.seed_fraction,
                       'rates': dict(cfg.mixture_rates) if cfg.mixture_rates else None})
    return self._policy(g, size, name)

  # -- rollouts, ranking, mixture ----------------------------------------------

  def _rollout_phase(self, name: str, output: str, policy: Policy, questions: str,
                     repeats: int, seed: int, limit: int | None,
                     num_samples: int | None = None, temperature: float | None = None,
                     guided: bool = False, revise: bool = False) -> Any:
    agent = self.cfg.agent_for(policy.size)
    if num_samples:
      agent = dataclasses.replace(agent, num_samples=int(num_samples))
    if temperature is not None:
      agent = dataclasses.replace(agent, temperature=float(temperature))
    deps = ['world', 'search'] + (['vocab', policy.phase] if policy.phase else [])
    questions_path = self._questions_path(questions)
    if questions in ('train', 'heldout'):
      deps.append('gen_0/seed' if questions == 'train' else 'heldout/questions')
    return self.run(
        name, lambda out: phases.rollout(
            out, exp_dir=self.root, policy=policy, models=self.cfg.models,
            vocab_path=self.vocab_path if policy.backend == 'jax' else None,
            questions_path=questions_path,
            repeats=repeats, seed=seed, agent=agent, limit=limit,
            progress=self.cfg.progress, name_masking=self.cfg.name_masking,
            snippet_chars=self.cfg.snippet_chars, guided=guided, revise=revise),
        output=output, resumable=True, deps=deps,
        config={'policy': policy.describe(), 'questions': questions, 'repeats': repeats,
                # Only when on, so that existing experiments keep their fingerprints.
                **({'guided': True} if guided else {}),
                **({'revise': True} if revise else {}),
                'masking': self.cfg.name_masking, 'snippet_chars': self.cfg.snippet_chars,
                'seed': seed, 'agent': agent, 'limit': limit,
                'model': self.cfg.models.get(policy.size) if policy.size else None})

  def _questions_path(self, split: str) -> pathlib.Path:
    if split == 'train':
      # Rollouts see only the unlabeled training questions (not the pilot).
      return self.root / 'gen_0' / 'seed' / 'train_unlabeled.jsonl'
    if split == 'heldout':
      return self.root / 'heldout' / 'questions.jsonl'
    return self.root / 'world' / 'questions' / f'{split}.jsonl'

  def heldout_questions(self) -> None:
    """`heldout/questions.jsonl`: the unlabeled training questions after `train_limit`."""
    limit = int(self.cfg.train_limit or 0)
    self.run('heldout/questions', lambda out: phases.write_heldout(
        out, self.root / 'gen_0' / 'seed' / 'train_unlabeled.jsonl', limit),
             output='heldout', deps=['gen_0/seed'], config={'train_limit': limit})

  def rollout(self, g: int, policy: Policy) -> None:
    # A new seed per generation: a policy kept over a generation must not
    # replay the very same trajectories.
    self._rollout_phase(f'gen_{g}/rollout', f'gen_{g}/trajectories', policy, 'train',
                        self.cfg.repeats_for(g), self.cfg.seed + 1000 * g, self.cfg.train_limit,
                        self.cfg.rollout_num_samples, self.cfg.rollout_temperature,
                        guided=self.cfg.guided_rollouts, revise=self.cfg.revise_summaries)

  def rank(self, g: int) -> None:
    cfg = self.cfg
    ranker = cfg.ranker_by_generation.get(g, cfg.ranker)
    if ranker == 'oracle':
      self.log(f'[gen_{g}/rank] ABLATION: the oracle ranker reads gold answers')
    self.run(f'gen_{g}/rank', lambda out: phases.rank(
        out, trajectories_dir=self.root / f'gen_{g}' / 'trajectories', ranker_name=ranker,
        rule_weight=cfg.rule_weight, consistency_weight=cfg.consistency_weight,
        questions_path=self.root / 'world' / 'questions' / 'train.jsonl',
        progress=cfg.progress),
             output=f'gen_{g}/rankings', deps=[f'gen_{g}/rollout'],
             config={'ranker': ranker, 'rule_weight': cfg.rule_weight,
                     'consistency_weight': cfg.consistency_weight})

  def mixture(self, g: int) -> dict[str, Any]:
    lengths = self.cfg.finetune.task_feature_lengths
    # One slot of the target is EOS; longer examples are dropped, not cut.
    max_in, max_out = int(lengths['inputs']), int(lengths['targets']) - 1
    stats = self.run(f'gen_{g}/mixture', lambda out: phases.build_mixture(
        out, trajectories_dir=self.root / f'gen_{g}' / 'trajectories',
        rankings_dir=self.root / f'gen_{g}' / 'rankings', vocab_path=self.vocab_path,
        max_input_length=max_in, max_target_length=max_out, exp_dir=self.root,
        name_masking=self.cfg.name_masking, only_acceptable=self.cfg.only_acceptable,
        trajectory_filter=self.cfg.trajectory_filter,
        questions_path=self.root / 'world' / 'questions' / 'train.jsonl'),
                     output=f'gen_{g}/ranked',
                     deps=[f'gen_{g}/rollout', f'gen_{g}/rank', 'vocab'],
                     config={'max_input_length': max_in, 'max_target_length': max_out,
                             'masking': self.cfg.name_masking,
                             'only_acceptable': self.cfg.only_acceptable,
                             **({'trajectory_filter': self.cfg.trajectory_filter}
                                if self.cfg.trajectory_filter else {})})
    if stats is not None:
      kept = ''
      if stats.get('trajectory_filter'):
        kept = (f' ({stats["trajectories"] - stats["filtered_trajectories"]} kept by the '
                f'{stats["trajectory_filter"]} trajectory filter)')
      self.log(f'[gen_{g}/mixture] {stats["examples"]} examples from {stats["trajectories"]} '
               f'trajectories{kept}: {stats["per_step_type"]}')
    return stats

  # -- evaluation and selection -------------------------------------------------

  def evaluate(self, policy: Policy, split: str, label: str | None = None) -> dict[str, Any]:
    """Auto-eval of `policy` on `split` with R runs; returns the final-answer stats."""
    cfg = self.cfg
    if split == 'dev':
      where = f'gen_{policy.generation}'
      key = policy.size or 'prompted'
      rollout_name, rollout_out = f'{where}/eval_rollout/{key}', f'{where}/eval_rollouts/{key}'
      eval_name, eval_out = f'{where}/eval/{key}', f'{where}/eval/{key}'
    else:
      key = label or policy.label.replace('/', '_')
      rollout_name, rollout_out = f'{split}/rollout/{key}', f'{split}/rollouts/{key}'
      eval_name, eval_out = f'{split}/eval/{key}', f'{split}/eval/{key}'
    # The same seeds for every model: differences come from the models.
    seed = cfg.seed + {'dev': 7_000_003, 'test': 9_000_011}.get(split, 5_000_017)
    runs = cfg.dev_eval_runs if split == 'dev' and cfg.dev_eval_runs else cfg.eval_runs
    self._rollout_phase(rollout_name, rollout_out, policy, split, runs, seed, cfg.eval_limit)
    questions_path = self._questions_path(split)
    judge = phases.make_judge(cfg.judge, cfg.judge_openai_base_url, cfg.judge_openai_model)
    result = self.run(eval_name, lambda out: phases.judge_rollouts(
        out, rollouts=self.root / rollout_out, questions_path=questions_path, judge=judge,
        runs=runs, limit=cfg.eval_limit, progress=cfg.progress),
                      output=eval_out, deps=[rollout_name, 'world'],
                      config={'judge': cfg.judge, 'judge_model': cfg.judge_openai_model,
                              'runs': runs, 'limit': cfg.eval_limit})
    self.eval_phases.append(eval_name)
    self.log(f'[{eval_name}] {policy.label} on {split}: final {_fmt(result["final"])}, '
             f'answer generation {_fmt(result["answer_generation"])}')
    return result['final']

  def select(self, g: int, candidate: Policy | None, score: Mapping[str, Any] | None,
             policy: Policy, best: Mapping[str, Any] | None) -> dict[str, Any]:
    """Keeps the candidate only if it beats the current policy on dev.

    `candidate` is None when the generation had nothing to train on; `score`
    and `best` are None without `select_on_dev` (every candidate is kept).
    """
    margin = self.cfg.min_improvement
    if candidate is None:
      kept, reason = False, 'the mixture has no examples; nothing was fine-tuned'
    elif not self.cfg.select_on_dev:
      kept, reason = True, 'select_on_dev is off: every generation is kept (the paper)'
    else:
      kept = float(score['mean']) > float(best['mean']) + margin
      reason = (f'dev final {score["mean"]:.2f} vs {best["mean"]:.2f} '
                f'(min improvement {margin:g})')
    decision = {'generation': g, 'candidate': candidate.label if candidate else None,
                'candidate_dev': dict(score) if score else None,
                'previous': policy.label, 'previous_dev': dict(best) if best else None,
                'min_improvement': margin, 'kept': kept, 'reason': reason,
                'policy_after': candidate.label if kept else policy.label}

    def write(out: pathlib.Path) -> dict[str, Any]:
      (out / 'decision.json').write_text(json.dumps(decision, indent=2, sort_keys=True) + '\n')
      return decision

    if self.cfg.select_on_dev:
      deps = [f'gen_{policy.generation}/eval/{policy.size or "prompted"}', f'gen_{g}/mixture']
      if candidate is not None:
        deps.append(f'gen_{g}/eval/{self.cfg.policy_size}')
    else:
      deps = [f'gen_{g}/mixture'] + (
          [f'gen_{g}/models/{self.cfg.policy_size}'] if candidate is not None else [])
    recorded = self.run(f'gen_{g}/select', write, output=f'gen_{g}/selection', deps=deps,
                        config={'min_improvement': margin, 'previous': policy.label,
                                **({} if self.cfg.select_on_dev else {'select_on_dev': False}),
                                'candidate': candidate.label if candidate else None})
    self.log(f'[gen_{g}/select] {recorded["candidate"]} dev {_fmt(recorded["candidate_dev"])} '
             f'vs {policy.label} {_fmt(best)}: {"KEPT" if recorded["kept"] else "rejected"} '
             f'({recorded["reason"]})')
    return recorded

  def final_test(self, policy: Policy) -> dict[str, Any]:
    """Test-split auto-eval of the final policy, its generation's students and gen 0."""
    cfg = self.cfg
    models = [policy]
    if cfg.test_all_generations:
      # Every trained generation, kept or not, and the last one's students, so
      # the trend shows on test even when dev kept none of them.
      trained = [g for g in range(1, cfg.generations + 1)
                 if self.exp.record(f'gen_{g}/models/{cfg.policy_size}')]
      models += [self._policy(g, cfg.policy_size, f'gen_{g}/models/{cfg.policy_size}')
                 for g in trained if g != policy.generation]
      if trained:
        last = trained[-1]
        models += [self._policy(last, s, f'gen_{last}/models/{s}') for s in cfg.student_sizes]
      if policy.generation >= 1:
        models.append(self._gen0_policy())
    elif policy.generation >= 1:
      models += [self._policy(policy.generation, s, f'gen_{policy.generation}/models/{s}')
                 for s in cfg.student_sizes]
      models.append(self._gen0_policy())
    results = {m.label: self.evaluate(m, 'test') for m in models}
    if cfg.heldout_eval:
      self.heldout_questions()
      for m in models:
        self.evaluate(m, 'heldout')
    return results

  def _gen0_policy(self) -> Policy:
    cfg = self.cfg
    if cfg.gen0 == 'prompted':
      return self.generation_zero()
    return self._policy(0, cfg.policy_size, f'gen_0/models/{cfg.policy_size}')

  def report(self) -> None:
    from restreact_jax.evaluation import report  # pylint: disable=g-import-not-at-top

    def write(out: pathlib.Path) -> dict[str, Any]:
      index = report.build_report(self.root)
      counts = {}
      for split in ('test', 'heldout'):
        rows = []
        for summary in sorted((self.root / split / 'eval').glob('*/summary.json')):
          s = json.loads(summary.read_text())
          rows.append(f'| {summary.parent.name} | {_cell(s.get("final"))} | '
                      f'{_cell(s.get("answer_generation"))} |')
        if rows:
          (out / f'{split}.md').write_text(
              '| model | final | answer generation |\n|---|---|---|\n' + '\n'.join(rows) + '\n')
        counts[f'{split}_models'] = len(rows)
      return {'index': str(index.relative_to(self.root)), **counts}

    self.run('report', write, output='report', resumable=True, deps=self.eval_phases,
             config={'version': 1})


def _cell(stat: Mapping[str, Any] | None) -> str:
  if not stat or stat.get('mean') is None:
    return 'N/A'
  return f'{stat["mean"]:.1f} ± {stat["std"]:.1f}'
