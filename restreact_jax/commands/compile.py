"""`restreact compile`: compile the train and sampling steps for a mesh, ahead of time.

  restreact compile --gin_file=gin/models/gemma_2b.gin --mesh=4x4 \
      [--batch_size=64 --seq_len=2048 --decode_batch=64 --fsdp=true --json=report.json]

Lowers and compiles, from shapes alone (`jax.ShapeDtypeStruct`s carrying their
shardings; nothing is allocated), the trainer's `train_step`, the prefill and
the decode loop of the sampler for a `DATAxMODEL` mesh, and reports per device
what XLA's `memory_analysis()` and `cost_analysis()` say: argument, output,
aliased and temporary bytes, and FLOPs. Sharding and out-of-memory mistakes
show up here, before a pod is booked (MaxText's `train_compile.py` idea).

When this process has fewer devices than the mesh needs, it compiles on that
many fake CPU devices: set before JAX starts when possible, otherwise the
command re-executes itself with `XLA_FLAGS=--xla_force_host_platform_device_count=N`.
The numbers are then the CPU compiler's: argument bytes are exact, temporary
bytes are an estimate of what TPU/GPU layouts and fusion need.
"""

from __future__ import annotations

import dataclasses
import functools
import json as json_lib
import math
import os
import pathlib
import re
import sys
from typing import Any, Callable

import gin

from restreact_jax import errors

STEPS = ('train', 'prefill', 'decode')
_MB = 1024 * 1024


# ----------------------------------------------------------------------------
# Arguments.


def _as_int(value: Any, name: str, minimum: int = 1) -> int:
  try:
    number = int(value)
  except (TypeError, ValueError):
    raise errors.UserError(f'compile: --{name} must be an integer, got {value!r}') from None
  if number < minimum:
    raise errors.UserError(f'compile: --{name} must be >= {minimum}, got {number}')
  return number


def _as_bool(value: Any, name: str) -> bool:
  if isinstance(value, bool):
    return value
  text = str(value).strip().lower()
  if text in ('1', 'true', 'yes'):
    return True
  if text in ('0', 'false', 'no', ''):
    return False
  raise errors.UserError(f'compile: --{name} must be true or false, got {value!r}')


def parse_mesh(value: Any) -> tuple[int, int]:
  """`'2x4'`, `'2,4'`, `'(2, 4)'` or `(2, 4)` → `(data, model)`.

  Args:
    value: the mesh as text or a pair of ints.

  Returns:
    The `(data, model)` sizes, both explicit (no -1: the target has a size).
  """
  if isinstance(value, (tuple, list)):
    parts = list(value)
  else:
    parts = [p for p in re.split(r'[x,()\s]+', str(value).strip().lower()) if p]
  try:
    shape = tuple(int(p) for p in parts)
  except (TypeError, ValueError):
    shape = ()
  if len(shape) != 2 or min(shape) < 1:
    raise errors.UserError(
        f'compile: --mesh must be DATAxMODEL with positive sizes (e.g. 2x4), got {value!r}')
  return shape  # type: ignore[return-value]


def _macro(name: str) -> Any:
  """The value of a gin macro (building `@configurable()` references), or None."""
  try:
    value = gin.query_parameter(f'{name}/macro.value')
  except ValueError:
    return None
  if isinstance(value, gin.config.ConfigurableReference):
    return value.scoped_configurable_fn() if value.evaluate else value.scoped_configurable_fn
  return value


# ----------------------------------------------------------------------------
# Devices: enough of them, before JAX starts if possible.


def _backend_started() -> bool:
  from jax._src import xla_bridge
  return xla_bridge.backends_are_initialized()


def ensure_devices(count: int, platform: str = 'cpu') -> None:
  """Makes `count` devices available to this process.

  Args:
    count: devices the mesh needs.
    platform: 'cpu' compiles on fake host devices; 'native' uses the machine's
      own devices as they are (a TPU/GPU host with enough of them).

  Raises:
    UserError: too few devices and no way to get more in this process.
  """
  import jax
  if platform == 'native':
    if jax.device_count() < count:
      raise errors.UserError(f'compile: the mesh needs {count} devices; this host has '
                             f'{jax.device_count()} ({jax.devices()[0].platform}); '
                             'use --platform=cpu to compile on fake CPU devices')
    return
  if platform != 'cpu':
    raise errors.UserError(f"compile: --platform must be 'cpu' or 'native', got {platform!r}")
  if not _backend_started():
    # Nothing has touched a device yet: ask for the fake devices directly.
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', max(count, 1))
    return
  if len(jax.devices('cpu')) >= count:
    return
  if os.environ.get('RESTREACT_COMPILE_REEXEC') != '1' and sys.argv[1:2] == ['compile']:
    # The CLI started JAX with too few devices: start again with enough.
    env = dict(os.environ, RESTREACT_COMPILE_REEXEC='1', JAX_PLATFORMS='cpu')
    flags = re.sub(r'--xla_force_host_platform_device_count=\d+', '', env.get('XLA_FLAGS', ''))
    env['XLA_FLAGS'] = f'{flags} --xla_force_host_platform_device_count={count}'.strip()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, '-m', 'restreact_jax.main', *sys.argv[1:]], env)
  raise errors.UserError(
      f'compile: the mesh needs {count} devices but JAX already started with '
      f'{len(jax.devices("cpu"))} CPU devices; set '
      f'XLA_FLAGS=--xla_force_host_platform_device_count={count} before starting')


# ----------------------------------------------------------------------------
# Shapes and shardings.


@dataclasses.dataclass(frozen=True)
class Shapes:
  """The sizes a compile is for.

  Attributes:
    batch_size: global training batch (rows).
    seq_len: training sequence length.
    num_microbatches: gradient accumulation inside the train step.
    decode_batch: decode slots.
    prefill_len: prompt tokens per prefill call.
    cache_len: KV-cache positions per slot.
    decode_chunk: tokens decoded per decode call.
  """
  batch_size: int
  seq_len: int
  num_microbatches: int
  decode_batch: int
  prefill_len: int
  cache_len: int
  decode_chunk: int


def check_divisible(shapes: Shapes, mesh_shape: tuple[int, int], sampling: bool = True) -> None:
  """Raises `UserError` when the `data` axis does not divide a batch.

  Args:
    shapes: the sizes to compile for.
    mesh_shape: `(data, model)`.
    sampling: also check the decode sizes.
  """
  data = mesh_shape[0]
  if shapes.batch_size % shapes.num_microbatches:
    raise errors.UserError(f'compile: --batch_size={shapes.batch_size} is not divisible by '
                           f'--num_microbatches={shapes.num_microbatches}')
  micro = shapes.batch_size // shapes.num_microbatches
  if micro % data:
    raise errors.UserError(
        f'compile: the mesh data axis ({data}) does not divide the training batch '
        f'(batch_size {shapes.batch_size} / num_microbatches {shapes.num_microbatches} '
        f'= {micro} rows); use a multiple of {data}')
  if not sampling:
    return
  if shapes.decode_batch % data:
    raise errors.UserError(
        f'compile: the mesh data axis ({data}) does not divide --decode_batch='
        f'{shapes.decode_batch}; use a multiple of {data}')
  if shapes.prefill_len + shapes.decode_chunk > shapes.cache_len:
    raise errors.UserError(
        f'compile: --prefill_len={shapes.prefill_len} plus --decode_chunk='
        f'{shapes.decode_chunk} exceeds the cache length {shapes.cache_len}')


def bytes_per_device(tree: Any) -> int:
  """Bytes one device holds of a tree of sharded `ShapeDtypeStruct`s (the largest shard)."""
  import jax
  total = 0
  for leaf in jax.tree.leaves(tree):
    shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
    total += math.prod(shape) * leaf.dtype.itemsize
  return total


def total_bytes(tree: Any) -> int:
  import jax
  return sum(math.prod(leaf.shape) * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def replicated_params(config: Any, mesh: Any, rules: Any) -> list[str]:
  """Parameters a rule wanted sharded but the mesh axis does not divide.

  Such dimensions are replicated (e.g. Gemma 2B's single KV head on a 4-way
  `model` axis); they are where memory goes, so the report names them.
  """
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from restreact_jax.models import transformer

  model = transformer.Transformer(config)
  with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
    boxed = jax.eval_shape(functools.partial(model.init, mode=transformer.Mode.TRAIN),
                           jax.random.key(0), jnp.zeros((1, 1), jnp.int32))['params']
  table = dict(rules)
  found = []
  leaves = jax.tree_util.tree_flatten_with_path(
      boxed, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]
  for path, leaf in leaves:
    if not isinstance(leaf, nn.Partitioned):
      continue
    for size, name in zip(leaf.value.shape, leaf.names):
      axis = table.get(name)
      if axis is not None and mesh.shape[axis] > 1 and size % mesh.shape[axis]:
        where = '/'.join(str(getattr(k, 'key', k)) for k in path)
        found.append(f'{where}: {name}={size} not divisible by {axis}={mesh.shape[axis]}')
  return found


# ----------------------------------------------------------------------------
# The steps, lowered from shapes.


def _with_sharding(abstract: Any, shardings: Any) -> Any:
  import jax
  return jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                      abstract, shardings)


def _train_lowering(config: Any, mesh: Any, rules: Any, shapes: Shapes,
                    optimizer_config: Any) -> tuple[Callable[[], Any], dict[str, int]]:
  """The trainer's jitted train step, lowered for abstract state and batch."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from restreact_jax import partitioning, trainer

  optimizer = trainer.make_optimizer(optimizer_config, total_steps=1000)
  schedule = trainer.learning_rate_schedule(optimizer_config, total_steps=1000)
  abstract_state, shardings = trainer.state_shardings(config, mesh, rules, optimizer)
  steps = trainer.compile_steps(config, mesh, rules, optimizer, schedule, shardings,
                                num_microbatches=shapes.num_microbatches)
  rows = partitioning.batch_sharding(mesh, 2)
  shape = (shapes.batch_size, shapes.seq_len)
  # With the packing features (positions, segment ids): the costlier attention mask.
  batch = {
      'decoder_input_tokens': jax.ShapeDtypeStruct(shape, jnp.int32, sharding=rows),
      'decoder_target_tokens': jax.ShapeDtypeStruct(shape, jnp.int32, sharding=rows),
      'decoder_loss_weights': jax.ShapeDtypeStruct(shape, jnp.float32, sharding=rows),
      'decoder_positions': jax.ShapeDtypeStruct(shape, jnp.int32, sharding=rows),
      'decoder_segment_ids': jax.ShapeDtypeStruct(shape, jnp.int32, sharding=rows),
  }
  key = jax.eval_shape(lambda: jax.random.key(0))
  rng = jax.ShapeDtypeStruct(key.shape, key.dtype, sharding=partitioning.replicated(mesh))
  # `compile_steps` wraps the jitted step to enter the mesh; lower the jit itself.
  jitted = getattr(steps.train, '__wrapped__', steps.train)

  def lower():
    with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
      return jitted.lower(abstract_state, batch, rng)

  expected = {
      'params_bytes': bytes_per_device(abstract_state.params),
      'optimizer_bytes': bytes_per_device(abstract_state.opt_state),
      'batch_bytes': bytes_per_device(batch),
      'params_bytes_total': total_bytes(abstract_state.params),
  }
  # The PRNG key is left out: jit prunes it when the model uses no dropout.
  expected['expected_argument_bytes'] = bytes_per_device(abstract_state) + expected['batch_bytes']
  return lower, expected


def _sampling_lowerings(config: Any, mesh: Any, rules: Any, shapes: Shapes
                        ) -> dict[str, tuple[Callable[[], Any], dict[str, int]]]:
  """Prefill and the decode loop over a slot-sharded KV cache, lowered from shapes."""
  import flax.linen as nn
  import jax
  import jax.numpy as jnp

  from restreact_jax import decoding, engine, partitioning, trainer
  from restreact_jax.models import transformer

  params, _ = trainer.param_shardings(config, mesh, rules)
  batch = shapes.decode_batch
  apply = functools.partial(engine.apply_model, config)

  def new_cache():
    return transformer.KVCache.init(config, batch, shapes.cache_len)

  cache_shardings = partitioning.tree_shardings(
      jax.eval_shape(new_cache), transformer.KVCache.logical_axes(), mesh, rules)
  cache = _with_sharding(jax.eval_shape(new_cache), cache_shardings)

  rows = ('batch',)
  state_names = decoding.DecodeState(
      cache=transformer.KVCache.logical_axes(), logits_BxV=('batch', 'vocab'),
      params=decoding.RowParams(*([rows] * 6)), num_generated_B=rows, done_B=rows,
      finish_B=rows, step=(), tokens_BxC=('batch', None), logprobs_BxC=('batch', None),
      grammar_B=rows)

  def new_state():
    row_params = jax.tree.map(lambda x: jnp.zeros((batch,), x.dtype),
                              decoding.RowParams.from_lists(*([[0]] * 6)))
    return decoding.init_state(new_cache(), jnp.zeros((batch, config.vocab_size)), row_params,
                               jnp.zeros((batch,), bool), shapes.decode_chunk)

  abstract_state = jax.eval_shape(new_state)
  state_shardings = partitioning.tree_shardings(abstract_state, state_names, mesh, rules)
  state = _with_sharding(abstract_state, state_shardings)
  tokens = jax.ShapeDtypeStruct((batch, shapes.prefill_len), jnp.int32,
                                sharding=partitioning.batch_sharding(mesh, 2))
  lengths = jax.ShapeDtypeStruct((batch,), jnp.int32,
                                 sharding=partitioning.batch_sharding(mesh, 1))

  def prefill(p, tokens_BxL, lengths_B, cache):
    return decoding.prefill(functools.partial(apply, p), tokens_BxL, lengths_B, cache)

  def decode(p, state):
    return decoding.decode_loop(functools.partial(apply, p), state)

  logits_sharding = partitioning.logical_to_sharding(
      ('batch', 'vocab'), mesh, rules, (batch, config.vocab_size))
  prefill_jit = jax.jit(prefill, donate_argnums=3,
                        out_shardings=(logits_sharding, cache_shardings))
  decode_jit = jax.jit(decode, donate_argnums=1, out_shardings=state_shardings)

  def in_context(fn):
    def lower():
      with jax.set_mesh(mesh), nn.logical_axis_rules(rules):
        return fn()
    return lower

  params_bytes = bytes_per_device(params)
  return {
      'prefill': (in_context(lambda: prefill_jit.lower(params, tokens, lengths, cache)),
                  {'params_bytes': params_bytes, 'cache_bytes': bytes_per_device(cache),
                   'expected_argument_bytes': params_bytes + bytes_per_device((tokens, lengths,
                                                                               cache))}),
      'decode': (in_context(lambda: decode_jit.lower(params, state)),
                 {'params_bytes': params_bytes, 'cache_bytes': bytes_per_device(cache),
                  'expected_argument_bytes': params_bytes + bytes_per_device(state)}),
  }


def analyze(compiled: Any) -> dict[str, float]:
  """Per-device memory and FLOPs of a compiled step.

  Args:
    compiled: a `jax.stages.Compiled`.

  Returns:
    `argument_bytes`, `output_bytes`, `alias_bytes`, `temp_bytes`,
    `generated_code_bytes`, `peak_bytes` (arguments + outputs - aliased +
    temporaries: what the step needs resident at once) and `flops`.
  """
  memory = compiled.memory_analysis()
  out: dict[str, float] = {}
  if memory is not None:
    out.update(argument_bytes=int(memory.argument_size_in_bytes),
               output_bytes=int(memory.output_size_in_bytes),
               alias_bytes=int(memory.alias_size_in_bytes),
               temp_bytes=int(memory.temp_size_in_bytes),
               generated_code_bytes=int(memory.generated_code_size_in_bytes))
    out['peak_bytes'] = (out['argument_bytes'] + out['output_bytes'] - out['alias_bytes']
                         + out['temp_bytes'])
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):  # older JAX: one dict per program
    cost = cost[0] if cost else {}
  if cost:
    out['flops'] = float(cost.get('flops', 0.0))
    out['bytes_accessed'] = float(cost.get('bytes accessed', 0.0))
  return out


# ----------------------------------------------------------------------------
# The command.


def _print_report(report: dict[str, Any]) -> None:
  m = report['model']
  print(f"compile: {m['family']} ({m['params']:,} params, {m['param_dtype']} params, "
        f"{m['dtype']} compute) on mesh data={report['mesh'][0]} x model={report['mesh'][1]} "
        f"({report['platform']}, {report['num_devices']} devices)")
  header = f"{'step':<8}{'args MiB':>11}{'out MiB':>10}{'alias MiB':>11}{'temp MiB':>11}" \
           f"{'peak MiB':>11}{'GFLOP':>11}{'params MiB':>12}"
  print(header)
  for name in STEPS:
    if name not in report['steps']:
      continue
    s = report['steps'][name]
    print(f"{name:<8}{s.get('argument_bytes', 0) / _MB:>11.1f}"
          f"{s.get('output_bytes', 0) / _MB:>10.1f}{s.get('alias_bytes', 0) / _MB:>11.1f}"
          f"{s.get('temp_bytes', 0) / _MB:>11.1f}{s.get('peak_bytes', 0) / _MB:>11.1f}"
          f"{s.get('flops', 0) / 1e9:>11.2f}{s['params_bytes'] / _MB:>12.1f}")
  print('(per device; args/out/alias/temp from XLA memory_analysis, GFLOP from cost_analysis,'
        ' which counts a loop body once)')
  if 'model_flops' in report['steps'].get('train', {}):
    print(f"train model GFLOP per device (6N + attention): "
          f"{report['steps']['train']['model_flops'] / 1e9:.2f}")
  for line in report['replicated']:
    print(f'replicated: {line}')


@gin.configurable
def compile_ahead(model: Any = None,
                  mesh: Any = None,
                  batch_size: Any = None,
                  seq_len: Any = None,
                  num_microbatches: Any = 1,
                  decode_batch: Any = None,
                  prefill_len: Any = None,
                  cache_len: Any = None,
                  decode_chunk: Any = None,
                  fsdp: Any = False,
                  steps: Any = 'train,prefill,decode',
                  optimizer: Any = None,
                  platform: str = 'cpu',
                  json: Any = None) -> dict[str, Any]:
  """Compiles the train and sampling steps for a mesh and reports memory and FLOPs.

  Args:
    model: a `models.TransformerConfig`; unset, the `MODEL` gin macro.
    mesh: `DATAxMODEL` (e.g. `4x4`); unset, the `MESH_SHAPE` gin macro.
    batch_size: global training batch; default the `data` axis size.
    seq_len: training sequence length; default `min(model.max_len, 2048)`.
    num_microbatches: gradient accumulation inside the train step.
    decode_batch: decode slots; default `batch_size`.
    prefill_len: prompt tokens per prefill call; default `seq_len // 2`.
    cache_len: KV-cache positions per slot; default `seq_len`.
    decode_chunk: tokens per decode call; default 16 (fewer if the cache is short).
    fsdp: also shard parameters over `data` (the FSDP rules).
    steps: comma-separated subset of `train,prefill,decode`.
    optimizer: a `trainer.OptimizerConfig` (its state is part of the train step).
    platform: 'cpu' (fake CPU devices when needed) or 'native'.
    json: a path to also write the report to as JSON ('-' prints it instead of
      the table).

  Returns:
    The report: mesh, model, per-step memory and FLOPs, replicated parameters.
  """
  import tqdm

  model = model if model is not None else _macro('MODEL')
  if model is None:
    raise errors.UserError('compile: no model; pass --gin_file=gin/models/<size>.gin '
                           '(which sets MODEL) or bind compile_ahead.model')
  from restreact_jax.models import configs
  if not isinstance(model, configs.TransformerConfig):
    raise errors.UserError(f'compile: model must be a models.TransformerConfig, got '
                           f'{type(model).__name__}')
  mesh = mesh if mesh is not None else _macro('MESH_SHAPE')
  if mesh is None:
    raise errors.UserError('compile: no mesh; pass --mesh=DATAxMODEL (e.g. --mesh=2x4)')
  mesh_shape = parse_mesh(mesh)
  wanted = [s.strip() for s in str(steps).split(',') if s.strip()]
  unknown = [s for s in wanted if s not in STEPS]
  if unknown or not wanted:
    raise errors.UserError(f'compile: --steps must be a subset of {",".join(STEPS)}, '
                           f'got {steps!r}')
  seq = _as_int(seq_len, 'seq_len') if seq_len is not None else min(model.max_len, 2048)
  batch = _as_int(batch_size, 'batch_size') if batch_size is not None else mesh_shape[0]
  prefill = _as_int(prefill_len, 'prefill_len') if prefill_len is not None else max(seq // 2, 1)
  cache = _as_int(cache_len, 'cache_len') if cache_len is not None else seq
  shapes = Shapes(
      batch_size=batch, seq_len=seq,
      num_microbatches=_as_int(num_microbatches, 'num_microbatches'),
      decode_batch=_as_int(decode_batch, 'decode_batch') if decode_batch is not None else batch,
      prefill_len=prefill, cache_len=cache,
      decode_chunk=(_as_int(decode_chunk, 'decode_chunk') if decode_chunk is not None
                    else max(min(16, cache - prefill), 1)))
  check_divisible(shapes, mesh_shape, sampling='prefill' in wanted or 'decode' in wanted)
  use_fsdp = _as_bool(fsdp, 'fsdp')

  ensure_devices(math.prod(mesh_shape), platform)

  import jax

  from restreact_jax import partitioning, trainer

  devices = jax.devices('cpu') if platform == 'cpu' else jax.devices()
  device_mesh = partitioning.make_mesh(mesh_shape, devices=devices)
  rules = partitioning.logical_axis_rules(use_fsdp)
  optimizer = optimizer if optimizer is not None else trainer.OptimizerConfig()

  lowerings: dict[str, tuple[Callable[[], Any], dict[str, int]]] = {}
  if 'train' in wanted:
    lowerings['train'] = _train_lowering(model, device_mesh, rules, shapes, optimizer)
  if 'prefill' in wanted or 'decode' in wanted:
    sampling = _sampling_lowerings(model, device_mesh, rules, shapes)
    lowerings.update({k: v for k, v in sampling.items() if k in wanted})

  report: dict[str, Any] = {
      'mesh': list(mesh_shape),
      'num_devices': math.prod(mesh_shape),
      'platform': devices[0].platform,
      'fsdp': use_fsdp,
      'shapes': dataclasses.asdict(shapes),
      'model': {'family': model.family, 'params': configs.param_count(model),
                'dtype': model.dtype, 'param_dtype': model.param_dtype,
                'train_flops_per_token': configs.flops_per_token(model, seq)},
      'steps': {},
      'replicated': replicated_params(model, device_mesh, rules),
  }
  bar = tqdm.tqdm(total=2 * len(lowerings), desc='compile', unit='phase', dynamic_ncols=True)
  for name in STEPS:
    if name not in lowerings:
      continue
    lower, expected = lowerings[name]
    bar.set_description(f'compile: lower {name}')
    lowered = lower()
    bar.update(1)
    bar.set_description(f'compile: compile {name}')
    compiled = lowered.compile()
    bar.update(1)
    report['steps'][name] = {**expected, **analyze(compiled)}
  if 'train' in report['steps']:
    # The 6N + attention estimate, to hold XLA's count against: XLA counts the
    # body of a loop (the microbatch scan) once.
    tokens = shapes.batch_size * shapes.seq_len
    report['steps']['train']['model_flops'] = (
        configs.flops_per_token(model, seq) * tokens / math.prod(mesh_shape))
  bar.close()

  json_target = None if json in (None, '', False) else str(json)
  if json_target == '-':
    print(json_lib.dumps(report))
  else:
    _print_report(report)
  if json_target and json_target != '-':
    path = pathlib.Path(json_target)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + '.tmp')
    tmp.write_text(json_lib.dumps(report, indent=2) + '\n')
    os.replace(tmp, path)
  return report

