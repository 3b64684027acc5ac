"""A persistent XLA compilation cache shared by every phase and command.

Each command and each phase of an experiment builds its own jitted train step
or sampling engine, and the same shapes recur (every rollout of one model
size compiles the same prefill buckets and decode chunk). With JAX's
persistent cache a program compiled once is loaded from disk by later phases
and later runs. `benchmarks/compile_cache.py` measures the start-up of a
sampling engine on two CPU cores: 14.6 s without the cache and 10.9 s with a
warm one for the demo's XXS model (1.3x), 18.2 s and 10.6 s for the 8.4M
`s` model (1.7x); the larger the model, the more compilation dominates.

Where the cache lives, in order:

1. `--compilation_cache=DIR` on the CLI (`none` turns it off);
2. JAX's own `JAX_COMPILATION_CACHE_DIR`, if set (left as it is);
3. `RESTREACT_COMPILATION_CACHE` in the environment (`none` turns it off);
4. `~/.cache/restreact_jax/xla` (or under `$XDG_CACHE_HOME`).

A cache entry is keyed by the program, the compile options and the devices,
so a hit returns the very executable a fresh compile would: outputs are
bit-identical with or without it.
"""

from __future__ import annotations

import os
import pathlib

import jax

from restreact_jax import errors

ENV = 'RESTREACT_COMPILATION_CACHE'
FLAG = 'compilation_cache'
_OFF = ('none', 'off', 'false', '0', '')


def default_dir() -> pathlib.Path:
  """`$XDG_CACHE_HOME/restreact_jax/xla`, or `~/.cache/restreact_jax/xla`."""
  root = os.environ.get('XDG_CACHE_HOME') or os.path.join(os.path.expanduser('~'), '.cache')
  return pathlib.Path(root) / 'restreact_jax' / 'xla'


def enable(directory: str | os.PathLike[str] | None = None) -> str | None:
  """Turns the persistent cache on (see the module docstring for the order).

  Args:
    directory: the `--compilation_cache` value, or None when not given.

  Returns:
    The cache directory in use, or None when the cache is off.

  Raises:
    UserError: the directory cannot be created.
  """
  if directory is None:
    current = jax.config.jax_compilation_cache_dir
    if current:
      return current
    directory = os.environ.get(ENV)
  if directory is None:
    directory = default_dir()
  if str(directory).strip().lower() in _OFF:
    return None
  path = pathlib.Path(directory).expanduser()
  try:
    path.mkdir(parents=True, exist_ok=True)
  except OSError as e:
    raise errors.UserError(
        f'--{FLAG}: cannot create the compilation cache directory {str(path)!r}: '
        f'{e.strerror or e}') from e
  jax.config.update('jax_compilation_cache_dir', str(path))
  # JAX's threshold (programs that took >= 1 s to compile; its own
  # JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS changes it) is kept on
  # purpose: caching every small program too made a demo fine-tune phase
  # 12 s slower (loading and releasing hundreds of tiny executables) while
  # saving under 2 s of compilation.
  return str(path)


def enable_from_flags(kwargs: dict[str, object]) -> dict[str, object]:
  """Consumes `--compilation_cache` from a command's kwargs and enables the cache."""
  rest = dict(kwargs)
  value = rest.pop(FLAG, None)
  enable(None if value is None else str(value))
  return rest
