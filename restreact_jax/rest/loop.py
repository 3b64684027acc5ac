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

import concurrent.futures
import dataclasses
import json
import pathlib
from typing import Any, Callable, Mapping, Sequence

from restreact_jax import errors
from restreact_jax.rest import experiment as experiment_lib
from restreact_jax.rest import phases
from restreact_jax.rest import pretrained as pretrained_lib
from restreact_jax.rest.config import RestConfig
from restreact_jax.rest.phases import Policy, TrainSettings

# What the typing rater checks (`feedback.answer_kind`), in the fingerprints of
# the phases it judges: a rater that checks more redoes them.
TYPED = 'numbers, entities'


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
                            # 3: pilot demonstrations calculate (only with the
                            # calculator, so that other experiments keep theirs).
                            'version': 3 if 'calculator' in cfg.agent.tools else 2})
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
        corpus = phases.write_masked_corpus(out, self.root, cfg.name_masking)
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
             init: str | None, deps: Sequence[str], extra: Any = None,
             teacher: Policy | None = None) -> None:
    def fn(out: pathlib.Path) -> Any:
      task = task_fn()
      init_dir = str(self.root / init) if init else None
      return phases.train(out, model=self.cfg.models[size], task=task, settings=settings,
                          mesh_shape=self.cfg.mesh_shape, init_checkpoint=init_dir,
                          config_text=self.config_text, progress=self.cfg.progress,
                          teacher=(self.cfg.models[teacher.size],
                                   str(self.root / teacher.checkpoint)) if teacher else None)
    teacher_key = {'teacher': teacher.phase} if teacher and settings.distill_weight else {}
    self.run(name, fn, output=name, resumable=True,
             deps=[*deps, *([teacher.phase] if teacher_key else [])],
             config={'model': self.cfg.models[size], 'settings': settings.fingerprint_key(),
                     'init': init,
                     'extra': extra, **teacher_key})

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
    every = cfg.policy_all_generations if is_policy else cfg.distill_all_generations
    mixtures = tuple(range(1, g + 1)) if every else (g,)
    if is_policy:
      task_fn = lambda: rest_tasks.register_generation(  # noqa: E731
          self.root, g, self.vocab_path, cfg.mixture_rates, cfg.seed_fraction,
          cfg.seed_floor, generations=mixtures)
    else:
      # The student trains on its teacher's mixture, weighted the same way.
      task_fn = lambda: rest_tasks.register_distill(  # noqa: E731
          self.root, g, self.vocab_path, seed_fraction=cfg.seed_fraction,
          seed_floor=cfg.seed_floor, rates=cfg.mixture_rates, generations=mixtures)
    name = f'gen_{g}/models/{size}'
    deps = ([f'gen_{h}/mixture' for h in mixtures] + ['vocab', init_phase]
            + (['gen_0/seed'] if cfg.seed_fraction else []))
    settings = cfg.finetune_for(g) if is_policy else cfg.distill
    # A student distils its generation's policy (`distill.distill_weight`).
    teacher = (None if is_policy else
               self._policy(g, cfg.policy_size, f'gen_{g}/models/{cfg.policy_size}'))
    self._train(name, size, task_fn, settings, f'{init_phase}/checkpoints', deps,
                extra={'seed_fraction': cfg.seed_fraction,
                       **({'seed_floor': True} if cfg.seed_floor else {}),
                       'rates': dict(cfg.mixture_rates) if cfg.mixture_rates else None,
                       **({} if is_policy else {'weighted_like_policy': True}),
                       **({'all_generations': True} if mixtures != (g,) else {})},
                teacher=teacher)
    return self._policy(g, size, name)

  # -- rollouts, ranking, mixture ----------------------------------------------

  def _rollout_phase(self, name: str, output: str, policy: Policy, questions: str,
                     repeats: int, seed: int, limit: int | None,
                     num_samples: int | None = None, temperature: float | None = None,
                     guided: bool = False, revise: bool = False, revise_answers: bool = False,
                     revise_decisions: bool = False, compare: bool = False,
                     typed: bool = False, first: int = 0) -> Any:
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
            repeats=repeats, seed=seed, agent=agent, limit=limit, first=first,
            progress=self.cfg.progress, name_masking=self.cfg.name_masking,
            snippet_chars=self.cfg.snippet_chars, guided=guided, revise=revise,
            revise_answers=revise_answers, revise_decisions=revise_decisions,
            compare=compare, typed=typed, desc=name),
        output=output, resumable=True, deps=deps,
        config={'policy': policy.describe(), 'questions': questions, 'repeats': repeats,
                # Only when on, so that existing experiments keep their fingerprints.
                **({'guided': True} if guided else {}),
                **({'revise': True} if revise else {}),
                **({'revise_answers': True} if revise_answers else {}),
                **({'revise_decisions': True} if revise_decisions else {}),
                **({'compare': True} if compare and guided else {}),
                **({'typed': TYPED} if typed and guided else {}),
                **({'first': first} if first else {}),
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
    """`heldout/questions.jsonl`: the unlabeled training questions no rollout sees."""
    limit, start = int(self.cfg.train_limit or 0), self.cfg.heldout_start()
    self.run('heldout/questions', lambda out: phases.write_heldout(
        out, self.root / 'gen_0' / 'seed' / 'train_unlabeled.jsonl', start),
             output='heldout', deps=['gen_0/seed'],
             config={'train_limit': limit, **({'start': start} if start != limit else {})})

  def rollout(self, g: int, policy: Policy) -> None:
    # A new seed per generation: a policy kept over a generation must not
    # replay the very same trajectories.
    first, count = self.cfg.questions_window(g)
    self._rollout_phase(f'gen_{g}/rollout', f'gen_{g}/trajectories', policy, 'train',
                        self.cfg.repeats_for(g), self.cfg.seed + 1000 * g, count,
                        self.cfg.rollout_num_samples, self.cfg.rollout_temperature,
                        guided=self.cfg.guided_rollouts, revise=self.cfg.revise_summaries,
                        revise_answers=self.cfg.revise_answers,
                        revise_decisions=self.cfg.revise_decisions,
                        compare=self.cfg.compare_choices, typed=self.cfg.typed_answers,
                        first=first)

  def rank(self, g: int) -> None:
    cfg = self.cfg
    ranker = cfg.ranker_by_generation.get(g, cfg.ranker)
    if ranker == 'oracle':
      self.log(f'[gen_{g}/rank] ABLATION: the oracle ranker reads gold answers')
    self.run(f'gen_{g}/rank', lambda out: phases.rank(
        out, trajectories_dir=self.root / f'gen_{g}' / 'trajectories', ranker_name=ranker,
        rule_weight=cfg.rule_weight, consistency_weight=cfg.consistency_weight,
        questions_path=self.root / 'world' / 'questions' / 'train.jsonl',
        progress=cfg.progress, tools=cfg.agent.tools, compare=cfg.compare_choices,
        typed=cfg.typed_answers),
             output=f'gen_{g}/rankings', deps=[f'gen_{g}/rollout'],
             config={'ranker': ranker, 'rule_weight': cfg.rule_weight,
                     'consistency_weight': cfg.consistency_weight,
                     # Only with the calculator, so that other experiments
                     # keep their fingerprints.
                     **({'calculator': True} if 'calculator' in cfg.agent.tools else {}),
                     **({'compare': True} if cfg.compare_choices else {}),
                     **({'typed': TYPED} if cfg.typed_answers else {})})

  def mixture(self, g: int) -> dict[str, Any]:
    lengths = self.cfg.finetune_for(g).task_feature_lengths
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

  @staticmethod
  def _eval_phases(policy: Policy, split: str, label: str | None = None
                   ) -> tuple[str, str, str, str]:
    """(rollout phase, its output, eval phase, its output) of an auto-eval."""
    if split == 'dev':
      where = f'gen_{policy.generation}'
      key = policy.size or 'prompted'
      return (f'{where}/eval_rollout/{key}', f'{where}/eval_rollouts/{key}',
              f'{where}/eval/{key}', f'{where}/eval/{key}')
    key = label or policy.label.replace('/', '_')
    return (f'{split}/rollout/{key}', f'{split}/rollouts/{key}',
            f'{split}/eval/{key}', f'{split}/eval/{key}')

  def evaluate(self, policy: Policy, split: str, label: str | None = None) -> dict[str, Any]:
    """Auto-eval of `policy` on `split` with R runs; returns the final-answer stats."""
    cfg = self.cfg
    rollout_name, rollout_out, eval_name, eval_out = self._eval_phases(policy, split, label)
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
    results = self.evaluate_all(models, 'test')
    if cfg.heldout_eval:
      self.heldout_questions()
      self.evaluate_all(models, 'heldout')
    return results

  def evaluate_all(self, models: Sequence[Policy], split: str) -> dict[str, Any]:
    """`evaluate` of each model, `eval_workers` at a time (threads).

    Each model's rollout is its own phase with its own engine and seeds, so
    the outputs are those of evaluating one after another; the report lists
    the models in the order given whatever finishes first. On threads a model
    that fails does not stop the others: every finished phase is recorded,
    then the first error is raised. A multi-process job evaluates one model
    at a time (its processes must issue their collectives in one order).
    """
    from restreact_jax import distributed  # pylint: disable=g-import-not-at-top
    workers = min(self.cfg.eval_workers, len(models))
    if workers <= 1 or self.run.only is not None or distributed.process_count() > 1:
      return {m.label: self.evaluate(m, split) for m in models}
    first = len(self.eval_phases)
    with concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix='eval') as pool:
      futures = {m.label: pool.submit(self.evaluate, m, split) for m in models}
      concurrent.futures.wait(futures.values())
    done = self.eval_phases[first:]
    self.eval_phases[first:] = sorted(
        done, key=[self._eval_phases(m, split)[2] for m in models].index)
    return {label: future.result() for label, future in futures.items()}

  def _gen0_policy(self) -> Policy:
    cfg = self.cfg
    if cfg.gen0 == 'prompted':
      return self.generation_zero()
    return self._policy(0, cfg.policy_size, f'gen_0/models/{cfg.policy_size}')

  def report(self) -> None:
    from restreact_jax.evaluation import report  # pylint: disable=g-import-not-at-top

    def write(out: pathlib.Path) -> dict[str, Any]:
      del out  # build_report replaces `report/` as a whole.
      index = report.build_report(self.root)
      counts = {f'{split}_models': len(list((self.root / split / 'eval').glob('*/summary.json')))
                for split in report.SPLIT_TITLES}
      return {'index': str(index.relative_to(self.root)), **counts}

    self.run('report', write, output='report', resumable=True, deps=self.eval_phases,
             config={'version': 1})
