"""Training: the train state, a pure jitted `train_step`, `eval_step`, the loop.

The step is one pure function of `(state, batch, rng)`: microbatches are
accumulated inside it with `lax.scan`, the loss is cross-entropy on target
tokens only (prompt tokens and padding have weight 0) plus an optional z-loss
(and, when distilling, a KL to a fixed teacher's distributions,
`distillation`), and AdamW applies the update. It is jitted once with explicit shardings for the
state (derived from the model's logical axis names through
`restreact_jax.partitioning`) and the batch, and the state is donated.

`train_loop` is the driver: set up (restore or initialize), run steps reading
metrics one step behind so dispatch stays asynchronous, evaluate and
checkpoint periodically. A non-finite loss stops training with a `UserError`
naming the step; a state is only ever saved after its loss was checked.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import pathlib
import time
from typing import Any, Callable, Iterable, Mapping

import flax.linen as nn
import flax.struct
import jax
import jax.numpy as jnp
import optax
from jax.sharding import Mesh, NamedSharding

from restreact_jax import averaging
from restreact_jax import checkpoints
from restreact_jax import data as data_lib
from restreact_jax import distillation
from restreact_jax import errors
from restreact_jax import partitioning
from restreact_jax.models import configs
from restreact_jax.models import transformer

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


@flax.struct.dataclass
class TrainState:
  """Everything a training step changes: step counter, params, optimizer state."""
  step: jax.Array
  params: Any
  opt_state: Any


# ----------------------------------------------------------------------------
# Optimizer.


@dataclasses.dataclass(frozen=True)
class OptimizerConfig:
  """AdamW with linear warmup, cosine decay and global-norm clipping.

  Attributes:
    learning_rate: peak learning rate.
    warmup_steps: linear warmup from 0 to the peak.
    decay_steps: end of the cosine decay (default: the run's train steps).
    end_learning_rate_fraction: final rate as a fraction of the peak.
    weight_decay: decoupled weight decay on matrices (not norms or biases).
    b1: Adam first-moment decay.
    b2: Adam second-moment decay.
    eps: Adam epsilon.
    clip_norm: clip gradients to this global norm (0 disables).
    average_last_steps: hand on the mean of the parameters over the run's
      last N steps instead of the last step's (`averaging.tail_average`; 0:
      off). The window is counted back from `decay_steps`.
  """
  learning_rate: float = 1e-3
  warmup_steps: int = 100
  decay_steps: int | None = None
  end_learning_rate_fraction: float = 0.1
  weight_decay: float = 0.01
  b1: float = 0.9
  b2: float = 0.95
  eps: float = 1e-8
  clip_norm: float = 1.0
  average_last_steps: int = 0


def learning_rate_schedule(config: OptimizerConfig, total_steps: int) -> optax.Schedule:
  """Linear warmup to the peak, then cosine decay to the end fraction.

  Args:
    config: optimizer settings.
    total_steps: the run's length (used when `config.decay_steps` is None).

  Returns:
    step → learning rate.
  """
  decay_steps = max(config.decay_steps or total_steps, config.warmup_steps + 1)
  return optax.warmup_cosine_decay_schedule(
      init_value=0.0,
      peak_value=config.learning_rate,
      warmup_steps=config.warmup_steps,
      decay_steps=decay_steps,
      end_value=config.learning_rate * config.end_learning_rate_fraction)


def make_optimizer(config: OptimizerConfig, total_steps: int) -> optax.GradientTransformation:
  """AdamW over the schedule, after global-norm clipping (and tail averaging).

  Args:
    config: optimizer settings.
    total_steps: the run's length.

  Returns:
    The optax transformation.
  """
  # Decay matrices only: norm scales and biases are one-dimensional.
  decay_mask = lambda params: jax.tree.map(lambda p: p.ndim > 1, params)  # noqa: E731
  adamw = optax.adamw(learning_rate_schedule(config, total_steps), b1=config.b1, b2=config.b2,
                      eps=config.eps, weight_decay=config.weight_decay, mask=decay_mask)
  chain = [optax.clip_by_global_norm(config.clip_norm)] if config.clip_norm > 0 else []
  chain.append(adamw)
  if config.average_last_steps > 0:
    chain.append(averaging.tail_average(config.average_last_steps, total_steps))
  return chain[0] if len(chain) == 1 else optax.chain(*chain)


# ----------------------------------------------------------------------------
# Loss and steps.


def model_inputs(batch: Batch) -> dict[str, jax.Array | None]:
  """The model's keyword arguments for a seqio decoder batch."""
  return {'positions_BxL': batch.get('decoder_positions'),
          'segment_ids_BxL': batch.get('decoder_segment_ids')}


def cross_entropy_sums(logits_BxLxV: jax.Array, targets_BxL: jax.Array,
                       weights_BxL: jax.Array, z_loss: float = 0.0) -> dict[str, jax.Array]:
  """Weighted sums of the token cross-entropy, z-loss and correct predictions.

  Sums (not means) so microbatches add up exactly to the full batch; the step
  divides by the total weight at the end.

  Args:
    logits_BxLxV: float32 logits.
    targets_BxL: target ids.
    weights_BxL: 1 on trained (target) tokens, 0 on prompt and padding.
    z_loss: coefficient of `logsumexp(logits)**2` (keeps logits from drifting).

  Returns:
    `{'ce': ..., 'z': ..., 'correct': ..., 'weight': ...}` float32 scalars.
  """
  logits_BxLxV = logits_BxLxV.astype(jnp.float32)
  weights_BxL = weights_BxL.astype(jnp.float32)
  log_z_BxL = jax.nn.logsumexp(logits_BxLxV, axis=-1)
  target_logit_BxL = jnp.take_along_axis(logits_BxLxV, targets_BxL[..., None], axis=-1)[..., 0]
  ce_BxL = log_z_BxL - target_logit_BxL
  correct_BxL = (jnp.argmax(logits_BxLxV, axis=-1) == targets_BxL).astype(jnp.float32)
  return {
      'ce': jnp.sum(ce_BxL * weights_BxL),
      'z': z_loss * jnp.sum(jnp.square(log_z_BxL) * weights_BxL),
      'correct': jnp.sum(correct_BxL * weights_BxL),
      'weight': jnp.sum(weights_BxL),
  }


def loss_fn(params: Any, batch: Batch, rng: jax.Array, teacher_params: Any = None, *,
            model: nn.Module, z_loss: float,
            teacher: distillation.Teacher | None = None) -> tuple[jax.Array, dict[str, jax.Array]]:
  """Summed training loss of one (micro)batch and its metric sums.

  With a `teacher`, the loss mixes the cross-entropy with the KL to the
  teacher's distributions (`distillation`); the `ce` sum stays the plain
  cross-entropy, and `kl` is added to the sums.
  """
  logits_BxLxV, _ = model.apply({'params': params}, batch['decoder_input_tokens'],
                                mode=transformer.Mode.TRAIN, rngs={'dropout': rng},
                                **model_inputs(batch))
  sums = cross_entropy_sums(logits_BxLxV, batch['decoder_target_tokens'],
                            batch['decoder_loss_weights'], z_loss)
  if teacher is None:
    return sums['ce'] + sums['z'], sums
  teacher_logits_BxLxV, _ = transformer.Transformer(teacher.config).apply(
      {'params': teacher_params}, batch['decoder_input_tokens'],
      mode=transformer.Mode.TRAIN, **model_inputs(batch))
  sums['kl'] = distillation.kl_sums(logits_BxLxV, teacher_logits_BxLxV,
                                    batch['decoder_loss_weights'], teacher.temperature)
  loss = (1.0 - teacher.weight) * sums['ce'] + teacher.weight * sums['kl'] + sums['z']
  return loss, sums


def _split_microbatches(batch: Batch, num_microbatches: int) -> Batch:
  """`[B, L]` → `[M, B/M, L]`, microbatch m taking rows m, m+M, ...

  Taking strided rows keeps each device's rows on that device (the batch is
  sharded in contiguous blocks over `data`), so no data moves.
  """

  def split(x):
    x = x.reshape(x.shape[0] // num_microbatches, num_microbatches, *x.shape[1:])
    x = jnp.swapaxes(x, 0, 1)
    return nn.with_logical_constraint(x, (None, 'batch', 'length'))

  return jax.tree.map(split, batch)


def train_step(state: TrainState, batch: Batch, rng: jax.Array, teacher_params: Any = None, *,
               model: nn.Module, optimizer: optax.GradientTransformation,
               schedule: optax.Schedule, num_microbatches: int = 1, z_loss: float = 0.0,
               teacher: distillation.Teacher | None = None) -> tuple[TrainState, Metrics]:
  """One optimizer step over `batch`, accumulating gradients over microbatches.

  Args:
    state: the train state (donated by the jitted caller).
    batch: seqio decoder features, `[B, L]` each.
    rng: a PRNG key; folded with the step.
    teacher_params: the teacher's params when distilling (held fixed).
    model: the linen module.
    optimizer: the optax transformation.
    schedule: the learning-rate schedule (for the metrics).
    num_microbatches: gradient-accumulation steps inside this step.
    z_loss: z-loss coefficient.
    teacher: distil toward this teacher's distributions (`distillation`).

  Returns:
    `(new_state, metrics)`; metrics are replicated scalars (with a teacher,
    `distill_kl` is the mean KL per target token at its temperature).
  """
  rng = jax.random.fold_in(rng, state.step)
  grad_fn = jax.grad(functools.partial(loss_fn, model=model, z_loss=z_loss, teacher=teacher),
                     has_aux=True)
  micro = _split_microbatches(batch, num_microbatches)

  def accumulate(carry, inputs):
    grads_acc, sums_acc = carry
    microbatch, index = inputs
    grads, sums = grad_fn(state.params, microbatch, jax.random.fold_in(rng, index),
                          teacher_params)
    return (jax.tree.map(jnp.add, grads_acc, grads), jax.tree.map(jnp.add, sums_acc, sums)), None

  zeros = jax.tree.map(jnp.zeros_like, state.params)
  zero_sums = {k: jnp.zeros((), jnp.float32)
               for k in ('ce', 'z', 'correct', 'weight', *(('kl',) if teacher else ()))}
  (grads, sums), _ = jax.lax.scan(accumulate, (zeros, zero_sums),
                                  (micro, jnp.arange(num_microbatches)))
  # Mean over all target tokens of the whole batch, as one big batch would be.
  weight = jnp.maximum(sums['weight'], 1.0)
  grads = jax.tree.map(lambda g: g / weight, grads)
  updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
  params = optax.apply_updates(state.params, updates)
  metrics = {
      'loss': sums['ce'] / weight,
      'z_loss': sums['z'] / weight,
      'accuracy': sums['correct'] / weight,
      'target_tokens': sums['weight'],
      'grad_norm': optax.global_norm(grads),
      'learning_rate': schedule(state.step),
  }
  if teacher is not None:
    # The KL over T**2, so it reads as nats whatever the temperature.
    metrics['distill_kl'] = sums['kl'] / weight / jnp.square(jnp.float32(teacher.temperature))
  return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics


def eval_step(params: Any, batch: Batch, *, model: nn.Module) -> dict[str, jax.Array]:
  """Metric sums of one eval batch (`ce`, `correct`, `weight`); add, then divide."""
  logits_BxLxV, _ = model.apply({'params': params}, batch['decoder_input_tokens'],
                                mode=transformer.Mode.TRAIN, **model_inputs(batch))
  sums = cross_entropy_sums(logits_BxLxV, batch['decoder_target_tokens'],
                            batch['decoder_loss_weights'])
  del sums['z']
  return sums


# ----------------------------------------------------------------------------
# State, shardings and compiled steps.


def _in_context(fn: Callable[..., Any], mesh: Mesh, rules: partitioning.Rules):
  """Runs `fn` with the mesh and logical rules the model's constraints read."""

  @functools.wraps(fn)
  def wrapped(*args, **kwargs):
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return fn(*args, **kwargs)

  return wrapped


def _init_tokens(config: configs.TransformerConfig) -> jax.Array:
  return jnp.zeros((1, min(8, config.max_len)), jnp.int32)


def param_shardings(config: configs.TransformerConfig, mesh: Mesh,
                    rules: partitioning.Rules) -> tuple[Any, Any]:
  """The params' abstract shapes and their shardings under `rules`.

  Args:
    config: the model.
    mesh: the device mesh.
    rules: logical-axis rules.

  Returns:
    `(abstract_params, shardings)`, both unboxed trees of the params' structure.
  """
  model = transformer.Transformer(config)
  boxed = _in_context(jax.eval_shape, mesh, rules)(
      functools.partial(model.init, mode=transformer.Mode.TRAIN), jax.random.key(0),
      _init_tokens(config))['params']
  shardings = partitioning.boxed_shardings(boxed, mesh, rules)
  abstract = nn.unbox(boxed)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return abstract, shardings


def state_shardings(config: configs.TransformerConfig, mesh: Mesh, rules: partitioning.Rules,
                    optimizer: optax.GradientTransformation) -> tuple[TrainState, TrainState]:
  """Abstract train state and its shardings.

  Optimizer moments take their parameter's sharding; every other optimizer
  leaf (step counts) is replicated explicitly on the mesh, never left on one
  device.

  Args:
    config: the model.
    mesh: the device mesh.
    rules: logical-axis rules.
    optimizer: the optax transformation.

  Returns:
    `(abstract_state, shardings)` as `TrainState`s.
  """
  abstract_params, p_shardings = param_shardings(config, mesh, rules)
  abstract_opt = jax.eval_shape(optimizer.init, abstract_params)
  replicated = partitioning.replicated(mesh)
  opt_shardings = optax.tree_map_params(
      optimizer, lambda _, s: s, abstract_opt, p_shardings,
      transform_non_params=lambda _: replicated,
      is_leaf=lambda x: isinstance(x, NamedSharding))
  shardings = TrainState(step=replicated, params=p_shardings, opt_state=opt_shardings)
  abstract = TrainState(step=jax.ShapeDtypeStruct((), jnp.int32), params=abstract_params,
                        opt_state=abstract_opt)
  abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                          abstract, shardings)
  return abstract, shardings


def _state_initializer(config: configs.TransformerConfig, mesh: Mesh,
                       rules: partitioning.Rules, optimizer: optax.GradientTransformation,
                       shardings: TrainState) -> Callable[[jax.Array], TrainState]:
  """A jitted `rng -> TrainState` that creates the state in its shardings."""
  model = transformer.Transformer(config)

  def init(key):
    params = nn.unbox(model.init(key, _init_tokens(config), mode=transformer.Mode.TRAIN)['params'])
    return TrainState(step=jnp.zeros((), jnp.int32), params=params,
                      opt_state=optimizer.init(params))

  return _in_context(jax.jit(init, out_shardings=shardings), mesh, rules)


def init_state(config: configs.TransformerConfig, mesh: Mesh, rules: partitioning.Rules,
               rng: jax.Array, optimizer: optax.GradientTransformation) -> TrainState:
  """A freshly initialized train state, created directly in its shardings.

  Args:
    config: the model.
    mesh: the device mesh.
    rules: logical-axis rules.
    rng: init key.
    optimizer: the optax transformation.

  Returns:
    The sharded `TrainState` at step 0.
  """
  _, shardings = state_shardings(config, mesh, rules, optimizer)
  return _state_initializer(config, mesh, rules, optimizer, shardings)(rng)


def load_params(checkpoint_dir: str | os.PathLike[str], config: configs.TransformerConfig,
                mesh: Mesh, rules: partitioning.Rules, step: int | None = None) -> Any:
  """Restores only the params of a training checkpoint, sharded for `mesh`.

  Args:
    checkpoint_dir: a directory written by `train_loop` (or `checkpoints`).
    config: the model the params belong to.
    mesh: the device mesh to place them on.
    rules: logical-axis rules.
    step: which checkpoint; None takes the latest.

  Returns:
    The params pytree.
  """
  abstract_params, _ = param_shardings(config, mesh, rules)
  with checkpoints.Checkpointer(checkpoint_dir, create=False) as ckpt:
    return ckpt.restore_params(abstract_params, step)


@dataclasses.dataclass(frozen=True)
class CompiledSteps:
  """The jitted train and eval steps bound to a model, optimizer and mesh."""
  train: Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]
  eval: Callable[[Any, Batch], dict[str, jax.Array]]


def compile_steps(config: configs.TransformerConfig, mesh: Mesh, rules: partitioning.Rules,
                  optimizer: optax.GradientTransformation, schedule: optax.Schedule,
                  shardings: TrainState, num_microbatches: int = 1,
                  z_loss: float = 0.0,
                  teacher: distillation.Teacher | None = None) -> CompiledSteps:
  """Jits `train_step` (state donated) and `eval_step` with explicit shardings.

  Args:
    config: the model.
    mesh: the device mesh.
    rules: logical-axis rules.
    optimizer: the optax transformation.
    schedule: its learning-rate schedule.
    shardings: the train state's shardings (`state_shardings`).
    num_microbatches: gradient-accumulation steps per train step.
    z_loss: z-loss coefficient.
    teacher: distil toward it; the train step then takes the teacher's
      params, sharded by the same rules, as a fourth argument.

  Returns:
    The compiled steps (they enter the mesh and rules themselves).
  """
  model = transformer.Transformer(config)
  batch_sharding = partitioning.batch_sharding(mesh, 2)
  replicated = partitioning.replicated(mesh)
  teacher_shardings = (() if teacher is None
                       else (param_shardings(teacher.config, mesh, rules)[1],))
  train = jax.jit(
      functools.partial(train_step, model=model, optimizer=optimizer, schedule=schedule,
                        num_microbatches=num_microbatches, z_loss=z_loss, teacher=teacher),
      in_shardings=(shardings, batch_sharding, replicated, *teacher_shardings),
      out_shardings=(shardings, replicated),
      donate_argnums=(0,))
  evaluate = jax.jit(functools.partial(eval_step, model=model),
                     in_shardings=(shardings.params, batch_sharding),
                     out_shardings=replicated)
  return CompiledSteps(train=_in_context(train, mesh, rules),
                       eval=_in_context(evaluate, mesh, rules))


@dataclasses.dataclass(frozen=True)
class Program:
  """Everything compiled for one (model, mesh, optimizer, step) combination."""
  optimizer: optax.GradientTransformation
  schedule: optax.Schedule
  abstract_state: TrainState
  shardings: TrainState
  steps: CompiledSteps
  init: Callable[[jax.Array], TrainState]


def build_program(config: configs.TransformerConfig, mesh: Mesh, rules: partitioning.Rules,
                  optimizer_config: OptimizerConfig, num_microbatches: int = 1,
                  z_loss: float = 0.0, teacher: distillation.Teacher | None = None) -> Program:
  """Builds (once per distinct argument set) the optimizer, shardings and steps.

  Cached so that a process training many models of one shape (generations,
  students, resumed runs) traces and compiles each step function once.

  Args:
    config: the model.
    mesh: the device mesh.
    rules: logical-axis rules.
    optimizer_config: AdamW settings; `decay_steps` must be set.
    num_microbatches: gradient accumulation per step.
    z_loss: z-loss coefficient.
    teacher: distil toward this teacher (`distillation.Teacher`).

  Returns:
    The `Program`.
  """
  if optimizer_config.decay_steps is None:
    raise ValueError('build_program needs optimizer_config.decay_steps')
  # Positional and normalized, so equal settings always hit the same entry.
  return _build_program(config, mesh, tuple(tuple(r) for r in rules), optimizer_config,
                        int(num_microbatches), float(z_loss), teacher)


@functools.lru_cache(maxsize=8)
def _build_program(config, mesh, rules, optimizer_config, num_microbatches, z_loss,
                   teacher) -> Program:
  optimizer, schedule, abstract, shardings, init = _build_state(config, mesh, rules,
                                                                optimizer_config)
  steps = compile_steps(config, mesh, rules, optimizer, schedule, shardings, num_microbatches,
                        z_loss, teacher)
  return Program(optimizer, schedule, abstract, shardings, steps, init)


@functools.lru_cache(maxsize=8)
def _build_state(config, mesh, rules, optimizer_config):
  """The part of a program that does not depend on the step's options."""
  optimizer = make_optimizer(optimizer_config, optimizer_config.decay_steps)
  schedule = learning_rate_schedule(optimizer_config, optimizer_config.decay_steps)
  abstract, shardings = state_shardings(config, mesh, rules, optimizer)
  init = _state_initializer(config, mesh, rules, optimizer, shardings)
  return optimizer, schedule, abstract, shardings, init


# ----------------------------------------------------------------------------
# The loop.


@dataclasses.dataclass(frozen=True)
class LoopConfig:
  """How long to train and what to do periodically.

  Attributes:
    train_steps: train until the state's step reaches this.
    checkpoint_period: save every N steps (and always at the end).
    eval_period: evaluate every N steps (0 disables).
    eval_steps: eval batches per evaluation (None: the whole eval split).
    keep_checkpoints: how many checkpoints to keep.
    num_microbatches: gradient accumulation per step.
    z_loss: z-loss coefficient.
    seed: init and step PRNG seed.
    log_period: write scalars every N steps.
  """
  train_steps: int
  checkpoint_period: int = 1000
  eval_period: int = 0
  eval_steps: int | None = None
  keep_checkpoints: int = 3
  num_microbatches: int = 1
  z_loss: float = 1e-4
  seed: int = 0
  log_period: int = 10


@dataclasses.dataclass
class LoopResult:
  """What `train_loop` returns."""
  state: TrainState
  data_position: int
  history: list[dict[str, float]]
  eval_history: list[dict[str, float]]


class _Writer:
  """TensorBoard scalar events (process 0 only), via `tf.summary.write`.

  The low-level op needs no `tensorboard` package; the `scalars` plugin tag
  makes TensorBoard plot the values.
  """

  def __init__(self, logdir: pathlib.Path | None):
    self._writer = None
    if logdir is not None and jax.process_index() == 0:
      import tensorflow as tf  # local: TF is heavy and only the writer needs it
      from tensorflow.core.framework import summary_pb2
      self._tf = tf
      self._metadata = summary_pb2.SummaryMetadata(
          plugin_data=summary_pb2.SummaryMetadata.PluginData(plugin_name='scalars'))
      self._writer = tf.summary.create_file_writer(str(logdir))

  def write(self, step: int, scalars: Mapping[str, float]) -> None:
    if self._writer is None:
      return
    with self._writer.as_default():
      for name, value in scalars.items():
        self._tf.summary.write(name, self._tf.constant(value, self._tf.float32), step=step,
                               metadata=self._metadata)

  def close(self) -> None:
    if self._writer is not None:
      self._writer.flush()
      self._writer.close()


def _check_finite(metrics: Mapping[str, float], step: int, model_dir: pathlib.Path | None,
                  last_saved: int | None) -> None:
  """Stops training on a NaN/inf loss, saying which step and what survives."""
  for name in ('loss', 'grad_norm'):
    value = metrics[name]
    if not math.isfinite(value):
      kept = (f'last good checkpoint: step {last_saved} in {model_dir}'
              if last_saved is not None else 'no checkpoint was saved')
      raise errors.UserError(f'{name} is {value} at step {step}; training stopped ({kept}). '
                             'Try a lower learning rate or check the data.')


def _validate(data: data_lib.DataConfig, mesh: Mesh, loop: LoopConfig) -> None:
  data_ways = mesh.shape['data']
  if data.batch_size % loop.num_microbatches:
    raise errors.UserError(f'batch_size {data.batch_size} is not divisible by '
                           f'num_microbatches {loop.num_microbatches}')
  micro = data.batch_size // loop.num_microbatches
  if micro % data_ways:
    raise errors.UserError(f'microbatch size {micro} (batch_size / num_microbatches) is not '
                           f'divisible by the mesh data axis ({data_ways})')
  if loop.train_steps < 0:
    raise errors.UserError(f'train_steps must be >= 0, got {loop.train_steps}')


def _restore_or_init(ckpt: checkpoints.Checkpointer | None, program: Program,
                     config: configs.TransformerConfig, mesh: Mesh, rules: partitioning.Rules,
                     seed: int, init_checkpoint: str | None) -> tuple[TrainState, int, int | None]:
  """The starting state: resume the run's own latest checkpoint, else initialize.

  Returns:
    `(state, data_position, last_saved_step)`.
  """
  if ckpt is not None and ckpt.latest_step() is not None:
    state, meta = ckpt.restore(program.abstract_state)
    return state, meta.data_position, meta.step
  state = program.init(jax.random.key(seed))
  if init_checkpoint:
    # Fine-tuning: weights from elsewhere, a fresh optimizer and step 0.
    state = state.replace(params=load_params(init_checkpoint, config, mesh, rules))
  return state, 0, None


def _evaluate(steps: CompiledSteps, params: Any, batches: Iterable[Batch]) -> dict[str, float]:
  """Token-weighted eval loss and accuracy; empty if there was no full batch."""
  totals: dict[str, float] = {}
  for batch in batches:
    for k, v in steps.eval(params, batch).items():
      totals[k] = totals.get(k, 0.0) + float(v)
  if not totals.get('weight'):
    return {}
  weight = totals['weight']
  return {'eval/loss': totals.get('ce', 0.0) / weight,
          'eval/accuracy': totals.get('correct', 0.0) / weight,
          'eval/target_tokens': totals.get('weight', 0.0)}


def train_loop(config: configs.TransformerConfig,
               mesh: Mesh,
               rules: partitioning.Rules,
               optimizer_config: OptimizerConfig,
               train_data: data_lib.DataConfig,
               loop: LoopConfig,
               model_dir: str | os.PathLike[str] | None = None,
               eval_data: data_lib.DataConfig | None = None,
               init_checkpoint: str | None = None,
               config_text: str = '',
               progress: bool = True,
               teacher: distillation.Teacher | None = None,
               teacher_checkpoint: str | None = None) -> LoopResult:
  """Trains `config` on `train_data` until step `loop.train_steps`.

  Rerunning with the same `model_dir` resumes from its latest checkpoint (and
  data position); a run already at `train_steps` returns at once.

  Args:
    config: the model.
    mesh: the device mesh.
    rules: logical-axis rules.
    optimizer_config: AdamW settings.
    train_data: the training stream (global batch).
    loop: steps, periods, accumulation, seed.
    model_dir: checkpoints go to `model_dir/checkpoints`, TensorBoard events to
      `model_dir/tensorboard`; None trains in memory only.
    eval_data: the eval stream (`num_epochs=1` or `loop.eval_steps` batches).
    init_checkpoint: a checkpoint directory to take initial params from when
      the run has no checkpoint of its own (fine-tuning).
    config_text: the resolved gin config, saved in every checkpoint.
    progress: show a tqdm bar.
    teacher: distil toward this teacher's distributions (`distillation`).
    teacher_checkpoint: the checkpoint directory of the teacher's params
      (latest step); required with `teacher`.

  Returns:
    The final state, data position and the metric history.
  """
  import tqdm  # local: only the driver draws progress

  # --- Setup.
  _validate(train_data, mesh, loop)
  if teacher is not None:
    teacher.check(config)
    if not teacher_checkpoint:
      raise errors.UserError('distillation needs the teacher\'s checkpoint directory')
  model_dir = pathlib.Path(model_dir) if model_dir is not None else None
  # The schedule spans `train_steps` unless told otherwise; a rerun with more
  # steps therefore stretches it, as in T5X (pin `decay_steps` to avoid that).
  optimizer_config = dataclasses.replace(
      optimizer_config, decay_steps=optimizer_config.decay_steps or loop.train_steps)
  if optimizer_config.average_last_steps and optimizer_config.decay_steps != loop.train_steps:
    raise errors.UserError(
        f'average_last_steps counts back from decay_steps ({optimizer_config.decay_steps}), '
        f'which must then be the run\'s train_steps ({loop.train_steps})')
  program = build_program(config, mesh, rules, optimizer_config, loop.num_microbatches,
                          loop.z_loss, teacher)
  steps = program.steps
  train_fn = steps.train
  if teacher is not None:
    teacher_params = load_params(teacher_checkpoint, teacher.config, mesh, rules)
    train_fn = lambda s, b, r: steps.train(s, b, r, teacher_params)  # noqa: E731
  ckpt = (checkpoints.Checkpointer(model_dir / 'checkpoints', max_to_keep=loop.keep_checkpoints)
          if model_dir is not None else None)
  state, position, last_saved = _restore_or_init(ckpt, program, config, mesh, rules, loop.seed,
                                                 init_checkpoint)
  start = int(state.step)
  writer = _Writer(model_dir / 'tensorboard' if model_dir is not None else None)
  history: list[dict[str, float]] = []
  eval_history: list[dict[str, float]] = []
  tokens_per_step = train_data.batch_size * train_data.model_length()
  flops_per_step = configs.flops_per_token(config, train_data.model_length()) * tokens_per_step

  def save(step: int) -> None:
    nonlocal last_saved
    if ckpt is None or last_saved == step:
      return
    ckpt.save(state, checkpoints.Meta(step=step, data_position=position,
                                      config_gin=config_text))
    last_saved = step

  def record(step: int, metrics: Metrics, seconds: float | None) -> dict[str, float]:
    nonlocal timed_steps, timed_seconds
    scalars = {k: float(v) for k, v in metrics.items()}
    _check_finite(scalars, step, model_dir / 'checkpoints' if model_dir else None, last_saved)
    if seconds:
      # Averaged since the last sync: single gaps jitter with host scheduling.
      timed_steps, timed_seconds = timed_steps + 1, timed_seconds + seconds
      scalars['tokens_per_s'] = tokens_per_step * timed_steps / timed_seconds
      scalars['flops_per_s'] = flops_per_step * timed_steps / timed_seconds
    scalars['step'] = step
    history.append(scalars)
    if step % loop.log_period == 0 or step == loop.train_steps:
      writer.write(step, {k: v for k, v in scalars.items() if k != 'step'})
    return scalars

  if start >= loop.train_steps:
    writer.close()
    if ckpt is not None:
      ckpt.close()
    return LoopResult(state, position, history, eval_history)

  batches = data_lib.BatchIterator(train_data, mesh, position)
  rng = jax.random.key(loop.seed + 1)
  bar = tqdm.tqdm(total=loop.train_steps, initial=start, desc='train', unit='step',
                  disable=not progress, dynamic_ncols=True)

  # --- Step loop; metrics are read one step behind.
  pending: tuple[int, Metrics] | None = None
  last_time, timed = 0.0, False
  timed_steps, timed_seconds = 0, 0.0
  try:
    for step in range(start + 1, loop.train_steps + 1):
      batch = next(batches)
      state, metrics = train_fn(state, batch, rng)
      position += 1
      if pending is not None:
        now = time.perf_counter()
        # The first read after a sync finds its metrics ready: nothing to time.
        scalars = record(*pending, seconds=(now - last_time) if timed else None)
        last_time, timed = now, True
        bar.set_postfix(loss=f'{scalars["loss"]:.3f}', acc=f'{scalars["accuracy"]:.3f}',
                        tok_s=f'{scalars.get("tokens_per_s", 0):.0f}', refresh=False)
        bar.update(1)
      else:
        # The first step compiled; time from its end.
        jax.block_until_ready(metrics)
        last_time, timed = time.perf_counter(), False
        timed_steps, timed_seconds = 0, 0.0
      pending = (step, metrics)

      # --- Periodic actions.
      is_last = step == loop.train_steps
      if is_last and optimizer_config.average_last_steps:
        # The run hands on (saves, evaluates, returns) its tail average.
        state = state.replace(params=jax.tree.map(
            jnp.copy, averaging.averaged_params(state.opt_state)))
      if is_last or step % loop.checkpoint_period == 0:
        # Never save a state whose loss was not checked.
        record(*pending, seconds=None)
        pending = None
        bar.update(1)
        save(step)
      if eval_data is not None and loop.eval_period and (is_last or step % loop.eval_period == 0):
        eval_batches = data_lib.BatchIterator(eval_data, mesh)
        if loop.eval_steps is not None:
          eval_batches = (b for _, b in zip(range(loop.eval_steps), eval_batches))
        scores = _evaluate(steps, state.params, eval_batches)
        if not scores:
          tqdm.tqdm.write(f'eval: {eval_data.mixture_or_task_name}/{eval_data.split} gave no '
                          f'full batch of {eval_data.batch_size}; skipped')
          continue
        eval_history.append({'step': step, **scores})
        writer.write(step, scores)
  finally:
    bar.close()
    writer.close()
    if ckpt is not None:
      ckpt.close()
  return LoopResult(state, position, history, eval_history)
