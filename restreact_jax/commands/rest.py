"""`restreact rest`: the whole self-improvement loop on one experiment directory.

  restreact rest --gin_file=gin/experiments/demo_cpu.gin --gin.EXP_DIR="'runs/demo'"

Prints a line per phase (`== phase gen_1/rollout`, `[gen_1/rollout] finished
in 12.3s`), the dev auto-eval of every model, each keep/reject decision, and
the final policy. Rerunning the same command resumes: done phases are skipped,
stale ones redone, training resumes from its checkpoint and rollouts from
their shards. `restreact rank`, `mixture` and `evaluate` run single phases
with the same bindings.
"""

from __future__ import annotations

import pathlib
from typing import Any, Mapping, Sequence

import gin

from restreact_jax import errors
from restreact_jax.rest.phases import AgentSettings, TrainSettings


def _opt_int(value: Any, name: str) -> int | None:
  if value in (None, '', 'None'):
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise errors.UserError(f'{name} must be an integer, got {value!r}') from None


@gin.configurable
def rest(exp_dir: str = gin.REQUIRED,
         models: Mapping[str, Any] = gin.REQUIRED,
         policy_size: str = gin.REQUIRED,
         student_sizes: Sequence[str] = (),
         generations: int | str = 2,
         world_seed: int = 0,
         num_entities: int = 400,
         num_train: int = 300,
         num_dev: int = 60,
         num_test: int = 60,
         qtype_weights: Mapping[str, float] | None = None,
         vocab_size: int = 2048,
         exemplar_set: str = 'world',
         pretrain: TrainSettings = TrainSettings(steps=2000),
         pretrained_base: str = '',
         seed_finetune: TrainSettings = TrainSettings(steps=300),
         finetune: TrainSettings = TrainSettings(steps=500),
         finetune_by_generation: Mapping[int, TrainSettings] | None = None,
         distill: TrainSettings | None = None,
         student_seed: TrainSettings | None = None,
         distill_last_only: bool = False,
         distill_all_generations: bool | str = False,
         policy_all_generations: bool | str = False,
         init_from: str = 'base',
         student_init: str = 'base',
         repeats: Sequence[int] = (1, 4),
         train_limit: int | None = None,
         fresh_questions: bool | str = False,
         train_limit_by_generation: Mapping[int, int] | None = None,
         agent: AgentSettings = AgentSettings(),
         num_samples_by_size: Mapping[str, int] | None = None,
         ranker: str = 'default',
         ranker_by_generation: Mapping[int, str] | None = None,
         rule_weight: float = 1.0,
         consistency_weight: float = 1.0,
         mixture_rates: Mapping[str, float] | None = None,
         seed_fraction: float = 0.0,
         seed_floor: bool | str = False,
         pilot_questions: int = 0,
         entity_tokens: bool = False,
         name_masking: bool | str = False,
         only_acceptable: bool = False,
         trajectory_filter: str | None = None,
         snippet_chars: int = 200,
         rollout_num_samples: int | None = None,
         rollout_temperature: float | None = None,
         guided_rollouts: bool | str = False,
         revise_summaries: bool | str = False,
         revise_answers: bool | str = False,
         revise_decisions: bool | str = False,
         compare_choices: bool | str = False,
         typed_answers: bool | str = False,
         vocab_model_type: str = 'unigram',
         eval_runs: int = 3,
         dev_eval_runs: int | None = None,
         dev_eval_students: bool | str = True,
         test_all_generations: bool | str = False,
         eval_limit: int | None = None,
         eval_workers: int = 1,
         heldout_eval: bool | str = False,
         judge: str = 'matcher',
         judge_openai_base_url: str = '',
         judge_openai_model: str = '',
         min_improvement: float = 0.0,
         select_on_dev: bool | str = True,
         gen0: str = 'finetune',
         gen0_openai_base_url: str = '',
         gen0_openai_model: str = '',
         gen0_num_exemplars: int | None = None,
         seed: int = 0,
         mesh_shape: Sequence[int] = (-1, 1),
         test: bool = True,
         progress: bool | str = True,
         only: Sequence[str] | str | None = None) -> dict[str, Any]:
  """Runs (or resumes) the self-improvement loop; see `rest.config.RestConfig`.

  Args:
    exp_dir: the experiment directory (`EXP_DIR`).
    models: size name → `TransformerConfig` (the policy and the students).
    policy_size: the size that rolls out.
    student_sizes: sizes distilled from each generation's mixture.
    generations: G (the command line may pass `--generations=4`).
    world_seed: the synthetic world's seed.
    num_entities: generated entities.
    num_train: unlabeled training questions.
    num_dev: dev questions (model selection).
    num_test: test questions (final numbers).
    qtype_weights: the world's question mix, question type -> share (None:
      the default mix, `world.questions.QTYPE_WEIGHTS`).
    vocab_size: SentencePiece pieces.
    exemplar_set: hand-written trajectories ('world' or 'open_domain').
    pretrain: base LM training settings.
    pretrained_base: a `restreact pretrain_base` directory whose vocabulary
      and weights replace vocabulary training and the pretraining of the
      sizes it holds ('': none).
    seed_finetune: gen 0 fine-tune on the exemplars.
    finetune: each generation's policy fine-tune.
    finetune_by_generation: per-generation override of `finetune` (whole
      TrainSettings, e.g. `{2: @gen2/rest.TrainSettings()}`).
    distill: the students' fine-tune (default: `finetune`).
    student_seed: the students' gen 0 seed fine-tune (default: `seed_finetune`).
    distill_last_only: fine-tune students on the last generation's data only.
    distill_all_generations: a student reads the ranked data of every
      generation up to its own, not its generation's only.
    policy_all_generations: the policy's generation g reads the ranked data
      of generations 1..g, not g's only.
    init_from: 'base', 'previous' or 'gen_0' (each generation from gen 0).
    student_init: 'base' (students have their own base and seed fine-tune) or
      'pruned' (each student fine-tune starts from its generation's policy
      cut to the student's layers and MLP units).
    repeats: trajectories per question by generation (last value repeats).
    train_limit: only the first N training questions.
    fresh_questions: generation g rolls out questions [(g-1)·N, g·N) of them.
    train_limit_by_generation: per-generation override of `train_limit`.
    agent: rollout sampling settings.
    num_samples_by_size: per-size candidates per step.
    ranker: 'default' (label-free), 'rules', 'consistency', 'oracle' (ablation).
    ranker_by_generation: per-generation override of `ranker`.
    rule_weight: rule rater weight in 'default'.
    consistency_weight: self-consistency weight in 'default'.
    mixture_rates: per-example weight per step type (0 or missing: left
      out; None: every type in proportion to its examples).
    seed_fraction: share of seed exemplars in every generation's data (0:
      the paper's setting).
    seed_floor: mix the seed in per step type, each type kept at least at
      its seed share.
    pilot_questions: labelled pilot questions (the last N of train): gen 0
      also learns from their scripted demonstrations; rollouts skip them.
    entity_tokens: every entity name and year of the world is one piece.
    vocab_model_type: SentencePiece 'unigram' or 'bpe'.
    name_masking: models see entity names as per-text placeholders;
      'ordered_years' numbers a text's years after its names, earliest first.
    only_acceptable: train only on candidates the rater rules accept.
    trajectory_filter: None, or 'oracle' (ablation, uses labels): train only on
      trajectories whose final answer is right, on the steps they took.
    snippet_chars: the longest search snippet.
    rollout_num_samples: candidates per step in training rollouts (None: the
      agent's num_samples).
    rollout_temperature: sampling temperature of training rollouts (None: the
      agent's).
    guided_rollouts: training rollouts continue with the rule rater's pick.
    revise_summaries: guided rollouts may take the rater's grounded revision
      of a summary.
    revise_answers: guided rollouts may take the answer the rater reads off
      the summary that completes the question's chain.
    revise_decisions: guided rollouts may stop (`Terminate`) where the
      summaries answer the question and no sample stops.
    compare_choices: the rater decides choice questions ("A or B?") by the
      years the summaries state.
    typed_answers: the rater rejects an answer of the wrong kind (a name for
      "When ...?", a bare year for "Who ...?", a city its sources call one
      for "Which country ...?").
    eval_runs: runs per dev/test question.
    dev_eval_runs: runs per dev question (default: `eval_runs`).
    dev_eval_students: auto-eval the students on dev every generation.
    test_all_generations: evaluate every generation's policy on test.
    eval_limit: only the first N dev/test questions.
    eval_workers: test models rolled out at once, on threads (same outputs).
    heldout_eval: also auto-eval the tested models on the unlabeled training
      questions that no rollout takes.
    judge: 'matcher' or 'llm'.
    judge_openai_base_url: the LLM judge's server.
    judge_openai_model: its model.
    min_improvement: keep a new policy only above previous + this (points).
    select_on_dev: keep/reject each generation on dev (False: keep all, no
      dev auto-eval; the paper's protocol).
    gen0: 'finetune' or 'prompted'.
    gen0_openai_base_url: the prompted gen-0 model's server.
    gen0_openai_model: its model.
    gen0_num_exemplars: shots per step for the prompted model (None: paper).
    seed: root of rollout seeds.
    mesh_shape: training mesh `(data, model)`.
    test: evaluate the final models on the test split.
    progress: tqdm bars.
    only: run just these phases (comma-separated on the command line).

  Returns:
    The loop's summary.
  """
  from restreact_jax import distributed  # pylint: disable=g-import-not-at-top
  from restreact_jax import gin_utils  # pylint: disable=g-import-not-at-top
  from restreact_jax.agent import name_masking as masking_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax.commands.rollout import as_bool  # pylint: disable=g-import-not-at-top
  from restreact_jax.rest import config as config_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax.rest import experiment as experiment_lib  # pylint: disable=g-import-not-at-top
  from restreact_jax.rest import loop  # pylint: disable=g-import-not-at-top
  from restreact_jax.world import build  # pylint: disable=g-import-not-at-top
  import tasks  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import

  world = build.WorldConfig(seed=int(world_seed), num_entities=int(num_entities),
                            num_train=int(num_train), num_dev=int(num_dev),
                            num_test=int(num_test),
                            qtype_weights=dict(qtype_weights) if qtype_weights else None)
  world.validate()
  cfg = config_lib.RestConfig(
      world=world, models=dict(models), policy_size=str(policy_size),
      student_sizes=tuple(student_sizes), generations=_opt_int(generations, 'generations'),
      vocab_size=int(vocab_size), exemplar_set=exemplar_set, pretrain=pretrain,
      pretrained_base=str(pretrained_base or ''),
      seed_finetune=seed_finetune, finetune=finetune,
      finetune_by_generation={int(k): v for k, v in (finetune_by_generation or {}).items()},
      distill=distill or finetune,
      student_seed=student_seed, distill_last_only=as_bool(distill_last_only),
      distill_all_generations=as_bool(distill_all_generations),
      policy_all_generations=as_bool(policy_all_generations),
      init_from=init_from, student_init=str(student_init), repeats=tuple(int(r) for r in repeats),
      train_limit=_opt_int(train_limit, 'train_limit'),
      fresh_questions=as_bool(fresh_questions),
      train_limit_by_generation={int(k): int(v)
                                 for k, v in (train_limit_by_generation or {}).items()},
      agent=agent,
      num_samples_by_size=dict(num_samples_by_size or {}), ranker=ranker,
      ranker_by_generation={int(k): str(v) for k, v in (ranker_by_generation or {}).items()},
      rule_weight=float(rule_weight), consistency_weight=float(consistency_weight),
      mixture_rates=dict(mixture_rates) if mixture_rates else None,
      seed_fraction=float(seed_fraction), seed_floor=as_bool(seed_floor),
      pilot_questions=int(pilot_questions),
      entity_tokens=as_bool(entity_tokens), vocab_model_type=str(vocab_model_type),
      name_masking=masking_lib.as_mode(name_masking), only_acceptable=as_bool(only_acceptable),
      trajectory_filter=(None if trajectory_filter in (None, '', 'none', 'None')
                         else str(trajectory_filter)),
      snippet_chars=int(snippet_chars),
      rollout_num_samples=int(rollout_num_samples) if rollout_num_samples else None,
      rollout_temperature=(None if rollout_temperature in (None, '', 'None')
                           else float(rollout_temperature)),
      guided_rollouts=as_bool(guided_rollouts),
      revise_summaries=as_bool(revise_summaries),
      revise_answers=as_bool(revise_answers),
      revise_decisions=as_bool(revise_decisions), compare_choices=as_bool(compare_choices),
      typed_answers=as_bool(typed_answers),
      eval_runs=int(eval_runs), dev_eval_runs=_opt_int(dev_eval_runs, 'dev_eval_runs'),
      dev_eval_students=as_bool(dev_eval_students),
      test_all_generations=as_bool(test_all_generations),
      eval_limit=_opt_int(eval_limit, 'eval_limit'), eval_workers=int(eval_workers),
      judge=judge,
      judge_openai_base_url=judge_openai_base_url, judge_openai_model=judge_openai_model,
      min_improvement=float(min_improvement), select_on_dev=as_bool(select_on_dev), gen0=gen0,
      gen0_openai_base_url=gen0_openai_base_url, gen0_openai_model=gen0_openai_model,
      gen0_num_exemplars=gen0_num_exemplars, seed=int(seed),
      mesh_shape=tuple(int(x) for x in mesh_shape), test=as_bool(test),
      heldout_eval=as_bool(heldout_eval),
      progress=as_bool(progress))
  if isinstance(only, str):
    only = [p.strip() for p in only.split(',') if p.strip()]
  root = pathlib.Path(exp_dir)
  primary = distributed.is_primary()
  if primary:
    gin_utils.write_config(root)
  exp = experiment_lib.Experiment(root, is_primary=primary)
  config_path = root / 'config.gin'
  config_text = config_path.read_text() if config_path.exists() else ''
  return loop.self_improve(cfg, exp, only=only, config_text=config_text)
