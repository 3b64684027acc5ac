"""SeqIO tasks of the self-improvement loop, registered at run time over EXP_DIR.

Stable names (the loop, `restreact train` and notebooks use them):

* `restreact_corpus` — language modelling on `world/corpus.jsonl` (the base
  model's "pre-training");
* `restreact_gen0_seed` — the hand-written exemplar trajectories, one example
  per step: the prompt exactly as the agent renders it for a fine-tuned policy
  (no exemplars in the prompt) → the exemplar's action + `# [END]`;
* `restreact_gen{g}_{step_type}` — generation g's ranked examples of one step
  type (`gen_{g}/ranked/<step_type>.tfrecord`, written by the mixture phase);
* `restreact_gen{g}_mixture` — those tasks mixed, at rates proportional to
  their example counts by default, or at given per-step-type rates;
* `restreact_gen{g}_distill` — the same ranked data for the smaller students
  (self-distillation): as one task (plus, optionally, more files, e.g. from
  extra trajectories per question), or weighted per step type as the
  policy's mixture weighs them;
* `restreact_bamboogle` / `restreact_bamtwoogle` — the paper's validation and
  test questions (`inputs` = question, `targets` = answer) with an
  alias-aware accuracy metric.

Every training task reads TFRecord files, so order and restarts are
deterministic for a seed (see `tasks.common`).
"""

from __future__ import annotations

import json
import os
import pathlib
from typing import Any, Callable, Mapping, Sequence

import seqio
import tensorflow as tf

from restreact_jax import errors, jsonl
from restreact_jax.llm import END_MARKER
from tasks import common

STEP_TYPES = ('decision', 'summarize', 'answer', 'relevance', 'grounding')
CORPUS_TASK = 'restreact_corpus'
SEED_TASK = 'restreact_gen0_seed'
BAMBOOGLE_TASK = 'restreact_bamboogle'
BAMTWOOGLE_TASK = 'restreact_bamtwoogle'
SEED_FILE = 'seed.tfrecord'


def step_task_name(generation: int, step_type: str) -> str:
  return f'restreact_gen{int(generation)}_{step_type}'


def mixture_name(generation: int) -> str:
  return f'restreact_gen{int(generation)}_mixture'


def distill_task_name(generation: int) -> str:
  return f'restreact_gen{int(generation)}_distill'


def ranked_dir(exp_dir: str | os.PathLike[str], generation: int) -> pathlib.Path:
  return pathlib.Path(exp_dir) / f'gen_{int(generation)}' / 'ranked'


# ---------------------------------------------------------------------------
# Corpus.


def register_corpus(exp_dir: str | os.PathLike[str],
                    vocab_path: str | os.PathLike[str] | None,
                    corpus_jsonl: str | os.PathLike[str] | None = None) -> str:
  """Registers `restreact_corpus` over `EXP_DIR/world/corpus.jsonl`.

  Args:
    exp_dir: the experiment directory.
    vocab_path: SentencePiece model (None: bytes).
    corpus_jsonl: another corpus file instead (e.g. the name-masked one);
      its TFRecord goes beside it.

  Returns:
    The task name.
  """
  if corpus_jsonl is not None:
    path = pathlib.Path(corpus_jsonl)
    common.register_corpus_task(CORPUS_TASK, path, vocab_path,
                                tfrecord=path.with_suffix('.tfrecord'))
    return CORPUS_TASK
  world = pathlib.Path(exp_dir) / 'world'
  common.register_corpus_task(CORPUS_TASK, world / 'corpus.jsonl', vocab_path,
                              tfrecord=world / 'corpus.tfrecord')
  return CORPUS_TASK


# ---------------------------------------------------------------------------
# Seed exemplars (generation 0).


def seed_examples(exemplar_set: str = 'world', demonstrations: Sequence[Any] = (),
                  max_searches: int = 10, tools: Sequence[str] = ('search',),
                  transform: Callable[[str, str], tuple[str, str]] | None = None
                  ) -> list[dict[str, str]]:
  """The exemplar trajectories (and pilot demonstrations) as examples, one per step.

  The prompt is the no-exemplar preamble plus the state, i.e. what
  `prompts.Prompter(None, 0)` shows a fine-tuned policy at that step; the
  target is the exemplar's action as a model writes it, ending with the stop
  marker (the same form the mixture builder gives ranked targets).

  Args:
    exemplar_set: 'world' or 'open_domain'.
    demonstrations: more `prompts.ExemplarTrajectory`s (the scripted pilot
      demonstrations of `agent.demonstrations`), after the exemplars.
    max_searches: the search budget the prompts show (the agent's).
    tools: the agent's tools (the decision docstring names them).
    transform: applied to every `(inputs, targets)` (e.g. name masking).

  Returns:
    Records with `inputs`, `targets`, `step_type` and `question_id`, in
    exemplar-file and step order.
  """
  from restreact_jax.agent import prompts  # pylint: disable=g-import-not-at-top
  out = []
  for trajectory in (*prompts.load_exemplar_set(exemplar_set), *demonstrations):
    steps = prompts.exemplar_steps(trajectory, max_searches)
    qid = trajectory.name if ':' in trajectory.name else f'exemplar:{trajectory.name}'
    for step_type in STEP_TYPES:
      for state, target in steps[step_type]:
        inputs = prompts.compact_preamble(step_type, tools) + state
        # Sampled text is cut *before* the stop string, so a rollout's
        # candidate keeps the two spaces; the target matches that form.
        targets = f'{target}  {END_MARKER}'
        if transform is not None:
          inputs, targets = transform(inputs, targets)
        out.append({'inputs': inputs, 'targets': targets, 'step_type': step_type,
                    'question_id': qid})
  return out


def write_seed(out_dir: str | os.PathLike[str], exemplar_set: str = 'world',
               demonstrations: Sequence[Any] = (), max_searches: int = 10,
               tools: Sequence[str] = ('search',),
               transform: Callable[[str, str], tuple[str, str]] | None = None) -> dict[str, Any]:
  """Writes `seed.tfrecord` and `seed.jsonl` (for the vocabulary) into `out_dir`.

  Args:
    out_dir: e.g. `EXP_DIR/gen_0/seed`.
    exemplar_set: which hand-written set.
    demonstrations: pilot demonstrations to add (see `seed_examples`).
    max_searches: the search budget the prompts show.
    tools: the agent's tools.
    transform: applied to every `(inputs, targets)` (e.g. name masking).

  Returns:
    `{"examples": n, "per_step_type": {...}}`.
  """
  out = pathlib.Path(out_dir)
  records = seed_examples(exemplar_set, demonstrations, max_searches, tools, transform)
  common.write_examples(out / SEED_FILE, records)
  with open(out / 'seed.jsonl', 'w', encoding='utf-8') as f:
    for r in records:
      f.write(json.dumps(r, sort_keys=True) + '\n')
  per_type = {t: sum(r['step_type'] == t for r in records) for t in STEP_TYPES}
  return {'examples': len(records), 'per_step_type': per_type}


def _seed_dir(exp_dir: str | os.PathLike[str],
              seed_dir: str | os.PathLike[str] | None = None) -> pathlib.Path:
  return pathlib.Path(seed_dir) if seed_dir else pathlib.Path(exp_dir) / 'gen_0' / 'seed'


def register_seed(exp_dir: str | os.PathLike[str],
                  vocab_path: str | os.PathLike[str] | None,
                  seed_dir: str | os.PathLike[str] | None = None,
                  step_type: str | None = None) -> str:
  """Registers `restreact_gen0_seed` over `EXP_DIR/gen_0/seed/seed.tfrecord`.

  Args:
    exp_dir: the experiment directory.
    vocab_path: SentencePiece model (None: bytes).
    seed_dir: where `write_seed` wrote (default `gen_0/seed`).
    step_type: only that step type's examples, as `restreact_gen0_seed_<type>`.

  Returns:
    The task name.
  """
  name = SEED_TASK if step_type is None else f'{SEED_TASK}_{step_type}'
  common.register_text_to_text_task(name, [str(_seed_dir(exp_dir, seed_dir) / SEED_FILE)],
                                    vocab_path, step_type=step_type)
  return name


def seed_counts(exp_dir: str | os.PathLike[str],
                seed_dir: str | os.PathLike[str] | None = None) -> dict[str, int]:
  """Seed examples per step type (from the `seed.jsonl` `write_seed` wrote)."""
  path = _seed_dir(exp_dir, seed_dir) / 'seed.jsonl'
  if not path.is_file():
    raise errors.UserError(f'no seed examples at {path}; run the seed phase first')
  counts = dict.fromkeys(STEP_TYPES, 0)
  for record in jsonl.iter_jsonl(path):
    step_type = str(record.get('step_type', ''))
    if step_type not in counts:
      raise errors.UserError(f'{path}: unknown step type {step_type!r}')
    counts[step_type] += 1
  return counts


def seed_floor_rates(own: Mapping[str, float], seed: Mapping[str, int],
                     seed_fraction: float) -> dict[str, float]:
  """Per-step-type rates of the seed data when every type keeps its seed share.

  A generation's own data (weights `own`, summing to 1 - seed_fraction) can
  leave a step type nearly out — the rater accepts few answer steps — and
  fine-tuning on it then wears that step down. Here each type's seed
  examples get rate `max(f * s_t, s_t - own_t)`, `s_t` the type's share of the
  seed data: the seed's usual share f of it, raised so that the type's own
  and seed data together reach at least `s_t` (the mixture's rates are
  normalised afterwards, so the own data's share shrinks a little).

  Args:
    own: the generation's own data per step type, as mixture weights.
    seed: seed examples per step type.
    seed_fraction: f.

  Returns:
    `{step_type: rate}` for the types with seed examples.
  """
  total = sum(seed.values())
  rates = {}
  for step_type, n in seed.items():
    if n > 0:
      share = n / total
      rates[step_type] = max(seed_fraction * share, share - float(own.get(step_type, 0.0)))
  return rates


# ---------------------------------------------------------------------------
# Generation g: ranked step tasks, their mixture, the distillation task.


def read_stats(exp_dir: str | os.PathLike[str], generation: int) -> dict[str, Any]:
  """`gen_{g}/ranked/stats.json` (the mixture phase's counts)."""
  path = ranked_dir(exp_dir, generation) / 'stats.json'
  if not path.is_file():
    raise errors.UserError(f'generation {generation}: no mixture stats at {path}; '
                           'run the mixture phase first')
  try:
    return json.loads(path.read_text())
  except json.JSONDecodeError as e:
    raise errors.UserError(f'{path}: not valid JSON ({e.msg})') from None


def mixture_rates(counts: Mapping[str, int],
                  rates: Mapping[str, float] | None = None) -> dict[str, float]:
  """Mixing rate per step type with examples.

  Rates are per-example weights: a type's rate is its example count times its
  weight, so `{'decision': 1.0, 'summarize': 1.0}` mixes the two in proportion
  to their examples and leaves the other types out (a per-task rate would
  repeat a type with 10 examples as often as one with 100).

  Args:
    counts: examples per step type.
    rates: per-example weight per step type (missing types get 0); None means
      weight 1 for every type.

  Returns:
    `{step_type: rate}` for every type with examples and a positive rate.
  """
  if rates is not None:
    unknown = sorted(set(rates) - set(STEP_TYPES))
    if unknown:
      raise errors.UserError(f'mixture rates name unknown step types {unknown}; '
                             f'known: {", ".join(STEP_TYPES)}')
    if any(float(r) < 0 for r in rates.values()):
      raise errors.UserError(f'mixture rates must be >= 0, got {dict(rates)}')
  out = {}
  for step_type in STEP_TYPES:
    n = int(counts.get(step_type, 0))
    rate = float(n) * (1.0 if rates is None else float(rates.get(step_type, 0.0)))
    if n > 0 and rate > 0:
      out[step_type] = rate
  return out


def _with_seed(name: str, parts: Sequence[tuple[str, float]],
               exp_dir: str | os.PathLike[str], vocab_path: str | os.PathLike[str] | None,
               seed_fraction: float, own_types: Mapping[str, float] | None = None) -> str:
  """Registers mixture `name` of `parts`, topped up with seed exemplars.

  With `seed_fraction` f > 0 the seed task gets rate f and `parts` share
  1 - f in proportion to their rates (the seed task alone when there are no
  parts). f = 0 is the paper's setting: a generation trains on its own data.
  With `own_types` (the parts' weight per step type, any scale) the seed
  data is mixed per step type instead, each type kept at least at its seed
  share (`seed_floor_rates`).
  """
  if not 0.0 <= seed_fraction < 1.0:
    raise errors.UserError(f'seed_fraction must be in [0, 1), got {seed_fraction}')
  total = sum(rate for _, rate in parts)
  tasks = [(task, (1.0 - seed_fraction) * rate / total) for task, rate in parts if total > 0]
  if seed_fraction > 0 and own_types is not None:
    own_total = sum(own_types.values()) if tasks else 0.0
    own = {t: (1.0 - seed_fraction) * w / own_total for t, w in own_types.items()
           if own_total > 0}
    floor = seed_floor_rates(own, seed_counts(exp_dir), seed_fraction)
    tasks += [(register_seed(exp_dir, vocab_path, step_type=t), rate)
              for t, rate in floor.items() if rate > 0]
  elif seed_fraction > 0:
    tasks.append((register_seed(exp_dir, vocab_path), seed_fraction if tasks else 1.0))
  if not tasks:
    raise errors.UserError(f'{name}: no examples to train on')
  common.register_mixture(name, tasks)
  return name


def _per_type_tasks(prefix: str, paths: Mapping[str, Sequence[str]],
                    chosen: Mapping[str, float], vocab_path: str | os.PathLike[str] | None,
                    ) -> list[tuple[str, float]]:
  """Registers `{prefix}{step_type}` over its files for each chosen type.

  Tasks of this prefix left from an earlier registration are removed first.
  Returns `(task, rate)` pairs in `chosen`'s order.
  """
  for step_type in STEP_TYPES:
    common.remove(prefix + step_type)
  for step_type in chosen:
    common.register_text_to_text_task(prefix + step_type, paths[step_type], vocab_path)
  return [(prefix + step_type, rate) for step_type, rate in chosen.items()]


def _ranked_files(exp_dir: str | os.PathLike[str], generations: Sequence[int],
                  ) -> tuple[dict[str, int], dict[str, list[str]]]:
  """Ranked examples per step type over `generations`, and their files."""
  counts, paths = {}, {}
  for g in generations:
    for step_type, n in read_stats(exp_dir, g).get('per_step_type', {}).items():
      if int(n) > 0:
        counts[step_type] = counts.get(step_type, 0) + int(n)
        paths.setdefault(step_type, []).append(str(ranked_dir(exp_dir, g) / f'{step_type}.tfrecord'))
  return counts, paths


def register_generation(exp_dir: str | os.PathLike[str], generation: int,
                        vocab_path: str | os.PathLike[str] | None,
                        rates: Mapping[str, float] | None = None,
                        seed_fraction: float = 0.0, seed_floor: bool = False,
                        generations: Sequence[int] | None = None) -> str:
  """Registers generation g's step tasks and their mixture.

  Args:
    exp_dir: the experiment directory.
    generation: g >= 1.
    vocab_path: SentencePiece model (None: bytes).
    rates: per-example weight per step type (see `mixture_rates`); None:
      every type in proportion to its examples.
    seed_fraction: share of seed exemplars mixed in (0: none, the paper's way).
    seed_floor: mix the seed in per step type, each type kept at least at its
      share of the seed data (`seed_floor_rates`).
    generations: the generations whose ranked data the mixture reads, e.g.
      every one up to `generation` (ReST's growing dataset, each step type
      one task over all their files); None: `generation`'s only.

  Returns:
    The mixture name `restreact_gen{g}_mixture`.

  Raises:
    UserError: nothing to train on (no ranked examples with a positive rate
      and no seed share).
  """
  counts, paths = _ranked_files(exp_dir, (generation,) if generations is None else generations)
  chosen = mixture_rates(counts, rates)
  if not chosen and seed_fraction <= 0:
    raise errors.UserError(
        f'generation {generation}: the mixture has no examples to train on '
        f'(per step type: {dict(counts)}, rates: {dict(rates) if rates else "proportional"})')
  tasks = _per_type_tasks(step_task_name(generation, ''), paths, chosen, vocab_path)
  return _with_seed(mixture_name(generation), tasks, exp_dir, vocab_path, seed_fraction,
                    chosen if seed_floor else None)


def register_distill(exp_dir: str | os.PathLike[str], generation: int,
                     vocab_path: str | os.PathLike[str] | None,
                     extra_files: Sequence[str] = (), seed_fraction: float = 0.0,
                     seed_floor: bool = False,
                     rates: Mapping[str, float] | None = None,
                     generations: Sequence[int] | None = None) -> str:
  """Registers `restreact_gen{g}_distill`: generation g's ranked data for the students.

  Args:
    exp_dir: the experiment directory.
    generation: g >= 1.
    vocab_path: SentencePiece model (None: bytes).
    extra_files: more TFRecord files or globs of `inputs`/`targets` (e.g. a
      mixture built from more trajectories per question).
    seed_fraction: share of seed exemplars mixed in (then the name is a
      mixture of the ranked data and the seed task).
    seed_floor: see `register_generation` (the ranked files' step types
      weighted by their counts; extra files count as none).
    rates: per-example weight per step type, as the policy's mixture weighs
      them (`mixture_rates`): the student then trains on the same mixture as
      its teacher, one task per step type. None: every ranked example once, as
      one task.
    generations: the generations whose ranked data the student reads, e.g.
      every one up to `generation` (the data its teacher was trained on over
      the loop); None: `generation`'s only.

  Returns:
    The task (or mixture) name.
  """
  counts, paths = _ranked_files(exp_dir, (generation,) if generations is None else generations)
  name = distill_task_name(generation)
  if rates is not None:
    if extra_files:
      raise errors.UserError(f'{name}: extra_files cannot be weighted by step type; '
                             'pass rates=None to add files')
    chosen = mixture_rates(counts, rates)
    if not chosen and seed_fraction <= 0:
      raise errors.UserError(f'generation {generation}: no ranked examples to distill from '
                             f'(per step type: {dict(counts)}, rates: {dict(rates)})')
    parts = _per_type_tasks(f'{name}_', paths, chosen, vocab_path)
    if not seed_fraction and len(parts) == 1:
      return parts[0][0]
    return _with_seed(name, parts, exp_dir, vocab_path, seed_fraction,
                      chosen if seed_floor else None)
  files = [f for t in STEP_TYPES for f in paths.get(t, ())]
  files += [str(f) for f in extra_files]
  if seed_fraction > 0:
    parts = []
    if files:
      common.register_text_to_text_task(name + '_ranked', files, vocab_path)
      parts.append((name + '_ranked', 1.0))
    own = {t: float(n) for t, n in counts.items()}
    return _with_seed(name, parts, exp_dir, vocab_path, seed_fraction,
                      own if seed_floor else None)
  if not files:
    raise errors.UserError(f'generation {generation}: no ranked examples to distill from')
  common.register_text_to_text_task(name, files, vocab_path)
  return name


# ---------------------------------------------------------------------------
# Bamboogle / BamTwoogle.


def accuracy_metric(targets: Sequence[str], predictions: Sequence[str]) -> dict[str, float]:
  """Alias-aware accuracy (%): a prediction is right if it contains the answer."""
  from restreact_jax.evaluation import matcher  # pylint: disable=g-import-not-at-top
  if not targets:
    return {'accuracy': 0.0}
  hits = sum(matcher.matches(str(p), [str(t)]) for t, p in zip(targets, predictions))
  return {'accuracy': 100.0 * hits / len(targets)}


def _benchmark_fn(name: str) -> Callable[..., tf.data.Dataset]:
  def dataset_fn(split: str, shuffle_files: bool, seed: int | None = None) -> tf.data.Dataset:
    del split, shuffle_files, seed  # one split, one in-memory shard
    from restreact_jax.datasets import benchmarks  # pylint: disable=g-import-not-at-top
    rows = benchmarks.load(name)
    return tf.data.Dataset.from_tensor_slices({
        'id': [str(r['id']) for r in rows],
        'inputs': [str(r['question']) for r in rows],
        'targets': [str(r['answer']) for r in rows],
    })
  return dataset_fn


def register_benchmarks(vocab_path: str | os.PathLike[str] | None = None) -> list[str]:
  """Registers `restreact_bamboogle` (split 'validation') and `restreact_bamtwoogle` ('test').

  Args:
    vocab_path: SentencePiece model (None: bytes).

  Returns:
    The two task names.
  """
  from restreact_jax.datasets import benchmarks  # pylint: disable=g-import-not-at-top
  names = []
  for task, dataset, split in ((BAMBOOGLE_TASK, 'bamboogle', 'validation'),
                               (BAMTWOOGLE_TASK, 'bamtwoogle', 'test')):
    common.remove(task)
    seqio.TaskRegistry.add(
        task,
        source=seqio.FunctionDataSource(_benchmark_fn(dataset), splits=(split,),
                                        num_input_examples={split: benchmarks.SIZES[dataset]}),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        output_features=common.output_features(vocab_path),
        metric_fns=[accuracy_metric],
    )
    names.append(task)
  return names
