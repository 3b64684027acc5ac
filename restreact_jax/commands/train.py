"""`restreact train`: train (or fine-tune) a model on a seqio task or mixture.

  restreact train --gin_file=gin/experiments/smoke.gin --gin.TRAIN_STEPS=100 \
      --gin.EXP_DIR="'runs/x'"

Outputs go to `model_dir` (relative to `exp_dir`): `config.gin`,
`checkpoints/` (state, data position, config) and `tensorboard/`. Running the
same command again with more steps resumes from the last checkpoint.
"""

from __future__ import annotations

import os
import pathlib
from typing import Mapping, Sequence

import gin

from restreact_jax import errors


@gin.configurable
def train(model=gin.REQUIRED,
          exp_dir: str = gin.REQUIRED,
          mixture_or_task_name: str = gin.REQUIRED,
          train_steps: int = gin.REQUIRED,
          task_feature_lengths: Mapping[str, int] = gin.REQUIRED,
          batch_size: int = 32,
          model_dir: str | None = None,
          pack: bool = False,
          eval_split: str | None = None,
          eval_period: int = 0,
          eval_steps: int | None = None,
          checkpoint_period: int = 1000,
          keep_checkpoints: int = 3,
          init_checkpoint: str | None = None,
          mesh_shape: Sequence[int] = (-1, 1),
          fsdp: bool = False,
          learning_rate: float = 1e-3,
          warmup_steps: int = 100,
          decay_steps: int | None = None,
          end_learning_rate_fraction: float = 0.1,
          weight_decay: float = 0.01,
          clip_norm: float = 1.0,
          average_last_steps: int = 0,
          num_microbatches: int = 1,
          z_loss: float = 1e-4,
          seed: int = 0,
          corpus_jsonl: str | None = None,
          text_to_text_files: Sequence[str] | None = None,
          vocab_path: str | None = None,
          teacher_model=None,
          teacher_checkpoint: str | None = None,
          distill_weight: float = 0.5,
          distill_temperature: float = 1.0,
          progress: bool = True):
  """Trains `model` on `mixture_or_task_name` up to step `train_steps`.

  Args:
    model: a `models.TransformerConfig` (usually `%MODEL`).
    exp_dir: the experiment directory.
    mixture_or_task_name: a registered seqio task or mixture; with
      `corpus_jsonl` or `text_to_text_files` it is registered here first.
    train_steps: train until this step (a rerun with more steps resumes).
    task_feature_lengths: e.g. `{'inputs': 512, 'targets': 128}`.
    batch_size: global batch size.
    model_dir: outputs, relative to `exp_dir` (default: `exp_dir` itself).
    pack: pack several examples per row.
    eval_split: evaluate on this split (None: no eval).
    eval_period: evaluate every N steps.
    eval_steps: eval batches per evaluation (None: the whole split).
    checkpoint_period: save every N steps (and at the end).
    keep_checkpoints: checkpoints kept.
    init_checkpoint: start from these params (fine-tuning) when `model_dir`
      has no checkpoint yet; relative paths are under `exp_dir`.
    mesh_shape: `(data, model)`; one -1 takes the remaining devices.
    fsdp: also shard parameters over `data`.
    learning_rate: peak learning rate.
    warmup_steps: linear warmup steps.
    decay_steps: end of the cosine decay (default `train_steps`).
    end_learning_rate_fraction: final learning rate / peak.
    weight_decay: AdamW decoupled weight decay.
    clip_norm: global gradient-norm clip (0 disables).
    average_last_steps: save the mean of the parameters over the last N steps
      as the final checkpoint's (0: the last step's).
    num_microbatches: gradient accumulation per step.
    z_loss: z-loss coefficient.
    seed: init, step and data seed.
    corpus_jsonl: register `mixture_or_task_name` as LM over this corpus
      (relative to `exp_dir`); its TFRecord copy goes to `model_dir/data/`.
    text_to_text_files: register `mixture_or_task_name` as inputs→targets
      over these TFRecord files or globs (relative to `exp_dir`).
    vocab_path: SentencePiece model for the registered task ('' or None:
      bytes; relative to `exp_dir`).
    teacher_model: distil toward this model's distributions (a
      `models.TransformerConfig` with `model`'s vocabulary; `distillation`).
    teacher_checkpoint: the teacher's checkpoint directory (latest step;
      relative paths are under `exp_dir`); set with `teacher_model`.
    distill_weight: the KL's share of the loss, in (0, 1].
    distill_temperature: the KL's temperature.
    progress: show a progress bar.

  Returns:
    The `trainer.LoopResult`.
  """
  # Heavy imports stay inside so `restreact --help` is quick.
  from restreact_jax import data as data_lib
  from restreact_jax import distillation
  from restreact_jax import gin_utils
  from restreact_jax import partitioning
  from restreact_jax import trainer
  import tasks  # noqa: F401  (built-in seqio tasks)
  from tasks import common

  exp = pathlib.Path(exp_dir)
  under_exp = lambda p: str(p if os.path.isabs(p) else exp / p)  # noqa: E731
  out_dir = pathlib.Path(under_exp(model_dir)) if model_dir else exp
  vocab = under_exp(vocab_path) if vocab_path else None
  if corpus_jsonl and text_to_text_files:
    raise errors.UserError('train: set corpus_jsonl or text_to_text_files, not both')
  if corpus_jsonl:
    # The tokenizable copy lives with this run's outputs, not in world/.
    common.register_corpus_task(mixture_or_task_name, under_exp(corpus_jsonl), vocab,
                                tfrecord=out_dir / 'data' / 'corpus.tfrecord')
  elif text_to_text_files:
    common.register_text_to_text_task(mixture_or_task_name,
                                      [under_exp(f) for f in text_to_text_files], vocab)

  if (teacher_model is None) != (not teacher_checkpoint):
    raise errors.UserError('train: set teacher_model and teacher_checkpoint together')
  teacher = (distillation.Teacher(teacher_model, float(distill_weight),
                                  float(distill_temperature)) if teacher_model else None)
  lengths = dict(task_feature_lengths)
  train_data = data_lib.DataConfig(mixture_or_task_name, lengths, batch_size, pack=pack,
                                   seed=seed)
  _check_vocab_fits(model, mixture_or_task_name)
  eval_data = None
  if eval_split:
    eval_data = data_lib.DataConfig(mixture_or_task_name, lengths, batch_size, split=eval_split,
                                    shuffle=False, num_epochs=1 if eval_steps is None else None,
                                    pack=pack, seed=seed)
  try:
    mesh = partitioning.make_mesh(tuple(mesh_shape))
  except ValueError as e:
    raise errors.UserError(f'train.mesh_shape: {e}') from None

  out_dir.mkdir(parents=True, exist_ok=True)
  config_path = gin_utils.write_config(out_dir)
  result = trainer.train_loop(
      model, mesh, partitioning.logical_axis_rules(fsdp),
      trainer.OptimizerConfig(learning_rate=learning_rate, warmup_steps=warmup_steps,
                              decay_steps=decay_steps,
                              end_learning_rate_fraction=end_learning_rate_fraction,
                              weight_decay=weight_decay, clip_norm=clip_norm,
                              average_last_steps=int(average_last_steps)),
      train_data,
      trainer.LoopConfig(train_steps=train_steps, checkpoint_period=checkpoint_period,
                         eval_period=eval_period if eval_data else 0, eval_steps=eval_steps,
                         keep_checkpoints=keep_checkpoints, num_microbatches=num_microbatches,
                         z_loss=z_loss, seed=seed),
      model_dir=out_dir,
      eval_data=eval_data,
      init_checkpoint=under_exp(init_checkpoint) if init_checkpoint else None,
      config_text=config_path.read_text(),
      progress=progress,
      teacher=teacher,
      teacher_checkpoint=under_exp(teacher_checkpoint) if teacher_checkpoint else None)
  last = result.history[-1] if result.history else {}
  summary = ', '.join(f'{k}={last[k]:.4g}' for k in ('loss', 'accuracy', 'distill_kl')
                      if k in last)
  print(f'train: step {int(result.state.step)} in {out_dir}'
        + (f' ({summary})' if summary else ' (already done)'))
  return result


def _check_vocab_fits(model, name: str) -> None:
  """The model's vocabulary must cover every token id the task produces."""
  import seqio
  provider = seqio.get_mixture_or_task(name) if name in (
      *seqio.TaskRegistry.names(), *seqio.MixtureRegistry.names()) else None
  if provider is None:
    return  # data.get_dataset reports the unknown name with suggestions
  for feature_name, feature in provider.output_features.items():
    if feature.vocabulary.vocab_size > model.vocab_size:
      raise errors.UserError(
          f'{name!r} feature {feature_name!r} has {feature.vocabulary.vocab_size} token ids but '
          f'the model vocab_size is {model.vocab_size}; set VOCAB_SIZE >= '
          f'{feature.vocabulary.vocab_size}')
