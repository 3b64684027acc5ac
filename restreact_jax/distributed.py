"""Multi-host start-up: one JAX process per host (or per GPU), one global mesh.

JAX's multi-controller SPMD is the distributed engine: every process calls
`initialize()` *before* anything touches a device, then builds the same global
mesh (`partitioning.make_mesh`) over `jax.devices()`; `jax.jit` with global
shardings does the rest. This module only decides *whether* and *how* to call
`jax.distributed.initialize`, and holds the few helpers a multi-process run
needs: who writes shared files (`is_primary`), a barrier, this process's share
of a work list, and host-local batches turned into global arrays.

Where the settings come from, in order:

1. explicit arguments (the CLI flags `--coordinator`, `--num_processes`,
   `--process_id`, `--local_device_ids`);
2. the environment: `RESTREACT_COORDINATOR` (`host:port`),
   `RESTREACT_NUM_PROCESSES`, `RESTREACT_PROCESS_ID`,
   `RESTREACT_LOCAL_DEVICE_IDS` (comma-separated) — what `launch/gpu.sh`
   exports;
3. with `--multihost` and nothing else given: JAX's own cluster detection
   (TPU pod slices, SLURM, Open MPI, ...).

With none of these, the run is single-process and nothing is called.

How a command uses it (the CLI calls this before the command runs, so the
command itself never sees these flags):

    kwargs = distributed.initialize_from_flags(kwargs)  # pops the flags
    mesh = partitioning.make_mesh(mesh_shape)            # global devices
    for item in distributed.local_shard(questions): ...  # this host's share
    if distributed.is_primary(): write_manifest(...)
    distributed.barrier('manifest written')
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Sequence, TypeVar

import jax
import numpy as np

from restreact_jax import errors

ENV_COORDINATOR = 'RESTREACT_COORDINATOR'
ENV_NUM_PROCESSES = 'RESTREACT_NUM_PROCESSES'
ENV_PROCESS_ID = 'RESTREACT_PROCESS_ID'
ENV_LOCAL_DEVICE_IDS = 'RESTREACT_LOCAL_DEVICE_IDS'

# The CLI flags `initialize_from_flags` consumes.
FLAGS = ('multihost', 'coordinator', 'num_processes', 'process_id', 'local_device_ids')

T = TypeVar('T')


@dataclasses.dataclass(frozen=True)
class Settings:
  """Resolved arguments for `jax.distributed.initialize`.

  Attributes:
    coordinator_address: `host:port` of process 0's coordinator, or None to let
      JAX detect the cluster.
    num_processes: total processes, or None (detected).
    process_id: this process's index, or None (detected).
    local_device_ids: the local devices this process owns, or None (all).
    auto_detect: True when nothing was given explicitly and JAX's cluster
      detection should fill everything in.
  """
  coordinator_address: str | None = None
  num_processes: int | None = None
  process_id: int | None = None
  local_device_ids: tuple[int, ...] | None = None
  auto_detect: bool = False


def _parse_int(value: Any, what: str) -> int | None:
  if value is None or value == '':
    return None
  try:
    return int(value)
  except (TypeError, ValueError):
    raise errors.UserError(f'{what} must be an integer, got {value!r}') from None


def _parse_ids(value: Any, what: str) -> tuple[int, ...] | None:
  if value is None or value == '':
    return None
  if isinstance(value, int):
    return (value,)
  if isinstance(value, str):
    parts = [p for p in value.replace(' ', '').split(',') if p]
  else:
    parts = list(value)
  try:
    return tuple(int(p) for p in parts)
  except (TypeError, ValueError):
    raise errors.UserError(
        f'{what} must be comma-separated integers, got {value!r}') from None


def _parse_bool(value: Any, what: str) -> bool:
  if isinstance(value, bool):
    return value
  text = str(value).strip().lower()
  if text in ('1', 'true', 'yes', 'on'):
    return True
  if text in ('0', 'false', 'no', 'off', ''):
    return False
  raise errors.UserError(f'{what} must be true or false, got {value!r}')


def resolve(coordinator_address: str | None = None,
            num_processes: int | str | None = None,
            process_id: int | str | None = None,
            local_device_ids: Sequence[int] | str | None = None,
            multihost: bool = False,
            environ: Mapping[str, str] | None = None) -> Settings | None:
  """Works out the distributed settings from arguments, then the environment.

  Args:
    coordinator_address: `host:port` of the coordinator (process 0).
    num_processes: total number of processes.
    process_id: this process's index in `[0, num_processes)`.
    local_device_ids: local device ids this process should own.
    multihost: ask for JAX's cluster auto-detection when nothing is given.
    environ: the environment to read (default `os.environ`).

  Returns:
    The settings to initialise with, or None for a single-process run.

  Raises:
    UserError: a value is malformed or the settings are incomplete.
  """
  env = os.environ if environ is None else environ
  coordinator = coordinator_address or env.get(ENV_COORDINATOR) or None
  count = _parse_int(num_processes, '--num_processes')
  if count is None:
    count = _parse_int(env.get(ENV_NUM_PROCESSES), ENV_NUM_PROCESSES)
  index = _parse_int(process_id, '--process_id')
  if index is None:
    index = _parse_int(env.get(ENV_PROCESS_ID), ENV_PROCESS_ID)
  ids = _parse_ids(local_device_ids, '--local_device_ids')
  if ids is None:
    ids = _parse_ids(env.get(ENV_LOCAL_DEVICE_IDS), ENV_LOCAL_DEVICE_IDS)

  explicit = coordinator is not None or count is not None or index is not None
  if not explicit:
    # Nothing given: JAX detects TPU pods / SLURM / MPI itself, if asked to.
    return Settings(local_device_ids=ids, auto_detect=True) if multihost else None
  if count is not None and count < 1:
    raise errors.UserError(f'--num_processes must be >= 1, got {count}')
  if count == 1 and not multihost:
    return None  # one process: nothing to coordinate
  if coordinator is None or count is None or index is None:
    missing = [name for name, v in (('--coordinator', coordinator),
                                    ('--num_processes', count),
                                    ('--process_id', index)) if v is None]
    raise errors.UserError(
        'multi-process run needs --coordinator, --num_processes and --process_id '
        f'(or {ENV_COORDINATOR}, {ENV_NUM_PROCESSES}, {ENV_PROCESS_ID}); '
        f'missing: {", ".join(missing)}')
  if ':' not in coordinator:
    raise errors.UserError(f'--coordinator must be host:port, got {coordinator!r}')
  if not 0 <= index < count:
    raise errors.UserError(f'--process_id must be in [0, {count}), got {index}')
  return Settings(coordinator, count, index, ids, auto_detect=False)


def initialize(coordinator_address: str | None = None,
               num_processes: int | str | None = None,
               process_id: int | str | None = None,
               local_device_ids: Sequence[int] | str | None = None,
               multihost: bool = False) -> bool:
  """Calls `jax.distributed.initialize` when this run has several processes.

  Idempotent: a second call (or a call after JAX was initialised elsewhere)
  does nothing. Must run before any device is used.

  Args:
    coordinator_address: `host:port` of the coordinator (process 0); falls back
      to `$RESTREACT_COORDINATOR`.
    num_processes: total processes; falls back to `$RESTREACT_NUM_PROCESSES`.
    process_id: this process's index; falls back to `$RESTREACT_PROCESS_ID`.
    local_device_ids: devices this process owns; falls back to
      `$RESTREACT_LOCAL_DEVICE_IDS`.
    multihost: with nothing else given, let JAX detect the cluster (TPU pod,
      SLURM, MPI).

  Returns:
    True if the distributed runtime is (now) initialised, False for a
    single-process run.

  Raises:
    UserError: malformed settings, or devices were used before initialising.
  """
  if jax.distributed.is_initialized():
    return True
  settings = resolve(coordinator_address, num_processes, process_id,
                     local_device_ids, multihost)
  if settings is None:
    return False
  ids = list(settings.local_device_ids) if settings.local_device_ids else None
  try:
    jax.distributed.initialize(
        coordinator_address=settings.coordinator_address,
        num_processes=settings.num_processes,
        process_id=settings.process_id,
        local_device_ids=ids)
  except RuntimeError as e:
    first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    raise errors.UserError(f'jax.distributed.initialize failed: {first}') from None
  except ValueError as e:
    # Raised by JAX's cluster detection when --multihost finds no cluster.
    first = str(e).strip().splitlines()[0] if str(e).strip() else repr(e)
    raise errors.UserError(
        f'--multihost: could not detect the cluster ({first}); pass --coordinator, '
        '--num_processes and --process_id') from None
  return True


def initialize_from_flags(kwargs: dict[str, Any]) -> dict[str, Any]:
  """Consumes the distributed CLI flags from a command's kwargs and initialises.

  Args:
    kwargs: the string keyword arguments the CLI parsed (`--name=value`).

  Returns:
    The kwargs without the flags in `FLAGS`, for the command itself.
  """
  rest = dict(kwargs)
  flags = {name: rest.pop(name) for name in FLAGS if name in rest}
  initialize(
      coordinator_address=flags.get('coordinator') or None,
      num_processes=flags.get('num_processes'),
      process_id=flags.get('process_id'),
      local_device_ids=flags.get('local_device_ids'),
      multihost=_parse_bool(flags.get('multihost', False), '--multihost'))
  return rest


def process_index() -> int:
  """This process's index (0 on a single host)."""
  return jax.process_index()


def process_count() -> int:
  """The number of processes in the run (1 on a single host)."""
  return jax.process_count()


def is_primary() -> bool:
  """True on process 0, the one that writes manifests, configs and reports."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Blocks until every process reaches the barrier called `name`.

  Args:
    name: a label that must be the same on all processes at this point.
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils
    multihost_utils.sync_global_devices(name)


def shard_bounds(num_items: int, index: int, count: int) -> tuple[int, int]:
  """The `[start, stop)` of shard `index` of `count` over `num_items` items.

  Shards are contiguous and differ in size by at most one, so the
  concatenation of all shards in process order is the original list.

  Args:
    num_items: length of the work list.
    index: the shard, in `[0, count)`.
    count: number of shards.

  Returns:
    `(start, stop)` indices into the work list.
  """
  if count < 1 or not 0 <= index < count:
    raise ValueError(f'shard {index} of {count} is not a valid shard')
  base, extra = divmod(num_items, count)
  start = index * base + min(index, extra)
  return start, start + base + (1 if index < extra else 0)


def local_shard(items: Sequence[T],
                index: int | None = None,
                count: int | None = None) -> list[T]:
  """This process's contiguous share of `items` (all of them on one host).

  Args:
    items: the global work list, identical on every process.
    index: shard index (default: `process_index()`).
    count: number of shards (default: `process_count()`).

  Returns:
    The items this process works on.
  """
  index = jax.process_index() if index is None else index
  count = jax.process_count() if count is None else count
  start, stop = shard_bounds(len(items), index, count)
  return list(items[start:stop])


def global_batch(local_batch: Any, sharding: jax.sharding.Sharding) -> Any:
  """Turns this host's slice of a batch into global arrays.

  Each process passes only the rows its devices hold (the global batch is
  the concatenation of all processes' rows in process order).

  Args:
    local_batch: a pytree of host-local numpy arrays.
    sharding: the global sharding of every leaf (usually
      `partitioning.batch_sharding(mesh)`), or a pytree of them.

  Returns:
    The pytree of global `jax.Array`s.
  """
  if isinstance(sharding, jax.sharding.Sharding):
    return jax.tree.map(
        lambda x: jax.make_array_from_process_local_data(sharding, np.asarray(x)),
        local_batch)
  return jax.tree.map(
      lambda x, s: jax.make_array_from_process_local_data(s, np.asarray(x)),
      local_batch, sharding)
