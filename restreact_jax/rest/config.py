"""`RestConfig`: everything the self-improvement loop needs, validated.

The `rest` command builds it from gin; `rest.loop.self_improve` runs it.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from restreact_jax import errors
from restreact_jax.agent import name_masking as masking_lib
from restreact_jax.models import prune
from restreact_jax.rest import pretrained as pretrained_lib
from restreact_jax.rest.phases import AgentSettings, TrainSettings

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
    finetune_by_generation: per-generation override of `finetune`, e.g.
      `{2: @gen2/rest.TrainSettings()}` (a whole TrainSettings: a scoped one
      does not inherit `finetune`'s bindings).
    distill: a generation's student fine-tunes; its `distill_weight` adds
      the KL to the generation's policy's distributions (`distillation`).
    student_seed: the students' gen 0 seed fine-tune (None: `seed_finetune`).
    distill_last_only: students are fine-tuned on the last generation's data
      only (from their seed fine-tune), not on every generation's.
    distill_all_generations: a student's fine-tune reads the ranked data of
      every generation up to its own (what its teacher was trained on over
      the loop), not its generation's only.
    policy_all_generations: the same for the policy: generation g's
      fine-tune reads the ranked data of generations 1..g (ReST's growing
      dataset), not g's only.
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
    fresh_questions: generation g rolls out its own window of the unlabeled
      training questions, `[(g-1)·train_limit, g·train_limit)`, instead of
      every generation the first `train_limit` (needs `train_limit`).
    train_limit_by_generation: per-generation override of `train_limit`,
      e.g. `{2: 120}`; with `fresh_questions` the windows follow one another
      (gen 1 `[0, 80)`, gen 2 `[80, 200)`).
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
    seed_floor: mix the seed data in per step type, each type kept at least
      at its share of the seed data (the rater accepts few answer steps, so
      without it later generations train the answer step less and less;
      `tasks.rest.seed_floor_rates`). Needs seed_fraction > 0.
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
      'ordered_years': the same, a text's years numbered after its names,
      earliest first (the smaller placeholder is the earlier year).
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
    revise_answers: with `guided_rollouts`, the rater also offers at every
      answer step the answer it reads off the summary that completes the
      question's chain (`feedback.revision.revise_answer`), which a step
      whose samples all fail to parse can continue with; the mixture trains
      on it where the rater accepts it.
    revise_decisions: with `guided_rollouts`, the rater also offers
      `Terminate` at a decision step whose summaries already answer the
      question when no sample stops (`feedback.revision.revise_decision`).
    compare_choices: the rater (ranking, guided rollouts, revised answers)
      decides choice questions ("Who was born first, A or B?") by the years
      the summaries state: it rejects the wrong option and writes the right
      one (`feedback.comparison`). Label-free.
    typed_answers: the rater (ranking, guided rollouts) rejects an answer
      whose conclusion is not the kind the question asks for: a name for
      "When ...?", a bare year for "Who / Where / Which ...?", a name its
      sources call a city for "Which country ...?", a person or a company
      for "Where ...?" (`feedback.answer_kind`). Label-free.
    eval_runs: trajectories per dev/test question (runs for mean ± std).
    dev_eval_runs: runs on dev, where they only decide keep/reject (None:
      `eval_runs`).
    dev_eval_students: also auto-eval the students on dev every generation
      (they take no part in the keep/reject decision; the test split reports
      them either way).
    test_all_generations: evaluate every generation's policy on test (not only
      the final one and gen 0), so the report shows the whole trend.
    eval_limit: only the first N dev/test questions (None: all).
    eval_workers: the final test's models are rolled out this many at a time,
      each in its own thread of this process (they share the cores: one
      rollout keeps two CPU cores ~80 % busy). Outputs and fingerprints do
      not depend on it. Multi-process jobs evaluate one model at a time.
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
      `train_limit`, or after every generation's window with
      `fresh_questions`; their answers are read only to judge, as the test
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
  finetune_by_generation: Mapping[int, TrainSettings] = dataclasses.field(default_factory=dict)
  distill: TrainSettings = TrainSettings(steps=500)
  student_seed: TrainSettings | None = None
  distill_last_only: bool = False
  distill_all_generations: bool = False
  policy_all_generations: bool = False
  init_from: str = 'base'
  student_init: str = 'base'
  repeats: tuple[int, ...] = (1, 4)
  train_limit: int | None = None
  fresh_questions: bool = False
  train_limit_by_generation: Mapping[int, int] = dataclasses.field(default_factory=dict)
  agent: AgentSettings = AgentSettings()
  num_samples_by_size: Mapping[str, int] = dataclasses.field(default_factory=dict)
  ranker: str = 'default'
  ranker_by_generation: Mapping[int, str] = dataclasses.field(default_factory=dict)
  rule_weight: float = 1.0
  consistency_weight: float = 1.0
  mixture_rates: Mapping[str, float] | None = None
  seed_fraction: float = 0.0
  seed_floor: bool = False
  pilot_questions: int = 0
  entity_tokens: bool = False
  name_masking: bool | str = False
  only_acceptable: bool = False
  trajectory_filter: str | None = None
  snippet_chars: int = 200
  rollout_num_samples: int | None = None
  rollout_temperature: float | None = None
  guided_rollouts: bool = False
  revise_summaries: bool = False
  revise_answers: bool = False
  revise_decisions: bool = False
  compare_choices: bool = False
  typed_answers: bool = False
  vocab_model_type: str = 'unigram'
  eval_runs: int = 3
  dev_eval_runs: int | None = None
  dev_eval_students: bool = True
  test_all_generations: bool = False
  eval_limit: int | None = None
  eval_workers: int = 1
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
    masking_lib.as_mode(self.name_masking)
    if self.pretrained_base:
      base = pretrained_lib.load(self.pretrained_base)
      if bool(base.manifest.get('name_masking')) != bool(self.name_masking):
        raise errors.UserError(
            f'rest.pretrained_base {base.root} was trained with name_masking='
            f'{bool(base.manifest.get("name_masking"))}; set rest.name_masking to match')
      # The policy's weights must be there (check_model names what is missing).
      if self.policy_size not in base.sizes:
        base.check_model(self.policy_size, self.models[self.policy_size])
      for size in (self.policy_size, *self.student_sizes):
        if size in base.sizes:
          base.check_model(size, self.models[size])
    if self.seed_floor and not self.seed_fraction > 0:
      raise errors.UserError('rest.seed_floor needs rest.seed_fraction > 0')
    if self.revise_summaries and not self.guided_rollouts:
      raise errors.UserError('rest.revise_summaries needs rest.guided_rollouts = True')
    if self.revise_answers and not self.guided_rollouts:
      raise errors.UserError('rest.revise_answers needs rest.guided_rollouts = True')
    if self.revise_decisions and not self.guided_rollouts:
      raise errors.UserError('rest.revise_decisions needs rest.guided_rollouts = True')
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
    if self.eval_workers < 1:
      raise errors.UserError(f'rest.eval_workers must be >= 1, got {self.eval_workers}')
    if self.heldout_eval and self.train_limit is None:
      raise errors.UserError('rest.heldout_eval needs rest.train_limit: the held-out questions '
                             'are the unlabeled training questions after it')
    if self.train_limit_by_generation and self.train_limit is None:
      raise errors.UserError('rest.train_limit_by_generation needs rest.train_limit (the '
                             'generations it does not name)')
    if any(int(n) < 1 for n in self.train_limit_by_generation.values()):
      raise errors.UserError('rest.train_limit_by_generation: limits must be >= 1, got '
                             f'{dict(self.train_limit_by_generation)}')
    if self.fresh_questions and self.train_limit is None:
      raise errors.UserError('rest.fresh_questions needs rest.train_limit: each generation '
                             'rolls out the next train_limit unlabeled questions')
    unlabeled = self.world.num_train - self.pilot_questions
    if self.fresh_questions and self.generations and self.heldout_start() > unlabeled:
      raise errors.UserError(
          f'rest.fresh_questions: {self.generations} generations need '
          f'{self.heldout_start()} unlabeled training questions, the world has {unlabeled} '
          f'(num_train {self.world.num_train} - pilot_questions {self.pilot_questions}); '
          'lower train_limit or set fresh_questions = False')
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
    if any(int(g) < 1 or int(g) > self.generations for g in self.finetune_by_generation):
      raise errors.UserError('rest.finetune_by_generation: generations must be in 1..'
                             f'{self.generations}, got {sorted(self.finetune_by_generation)}')
    named = [(name, getattr(self, name)) for name in
             ('pretrain', 'seed_finetune', 'finetune', 'distill', 'student_seed')]
    named += [(f'finetune_by_generation[{g}]', settings)
              for g, settings in sorted(self.finetune_by_generation.items())]
    for name, settings in named:
      if settings is None:
        continue
      if settings.steps < 1:
        raise errors.UserError(f'rest.{name} needs steps >= 1')
      if settings.average_last < 0:
        raise errors.UserError(f'rest.{name} needs average_last >= 0')
      if settings.soup < 1:
        raise errors.UserError(f'rest.{name} needs soup >= 1')
      if settings.distill_weight and name != 'distill':
        raise errors.UserError(f'rest.{name}.distill_weight: only the students (rest.distill) '
                               'have a teacher to distil')
      if not 0.0 <= settings.distill_weight <= 1.0 or settings.distill_temperature <= 0.0:
        raise errors.UserError(f'rest.{name} needs 0 <= distill_weight <= 1 and '
                               'distill_temperature > 0')

  def finetune_for(self, generation: int) -> TrainSettings:
    """The policy's fine-tune settings in generation g."""
    return self.finetune_by_generation.get(generation, self.finetune)

  def train_limit_for(self, generation: int) -> int | None:
    """How many unlabeled training questions generation g rolls out (None: all)."""
    return self.train_limit_by_generation.get(generation, self.train_limit)

  def questions_window(self, generation: int) -> tuple[int, int | None]:
    """(first, count) of the unlabeled training questions generation g rolls out."""
    if not self.fresh_questions:
      return 0, self.train_limit_for(generation)
    first = sum(int(self.train_limit_for(g) or 0) for g in range(1, generation))
    return first, self.train_limit_for(generation)

  def heldout_start(self) -> int:
    """The first unlabeled training question that no rollout sees."""
    limits = [int(self.train_limit_for(g) or 0) for g in range(1, self.generations + 1)]
    if self.fresh_questions:
      return sum(limits)
    return max(limits, default=int(self.train_limit or 0))

  def repeats_for(self, generation: int) -> int:
    return int(self.repeats[min(generation, len(self.repeats)) - 1])

  def agent_for(self, size: str | None) -> AgentSettings:
    n = self.num_samples_by_size.get(size) if size else None
    return dataclasses.replace(self.agent, num_samples=int(n)) if n else self.agent
