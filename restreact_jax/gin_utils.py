"""Gin at the edge: parse gin files and `--gin.NAME=VALUE` overrides, T5X-style.

Only the top-level command functions (``restreact_jax/commands``) and a few
external configurables registered here are configurable; library code takes
plain arguments. Errors name the file and binding and suggest close names.
"""

from __future__ import annotations

import difflib
import logging
import os
import pathlib
import re
from typing import Iterable, Sequence

import gin

from restreact_jax import errors

REPO_ROOT = pathlib.Path(__file__).resolve().parent.parent
DEFAULT_SEARCH_PATHS = (str(REPO_ROOT), str(REPO_ROOT / 'gin'))


def _registered_names() -> list[str]:
  names = []
  for selector, _ in gin.config._REGISTRY.items():  # pylint: disable=protected-access
    names.append(selector)
    names.append(selector.split('.')[-1])
  return sorted(set(names))


def _parameter_names(configurable_name: str) -> list[str]:
  try:
    configurable = gin.config._REGISTRY.get_match(configurable_name)  # pylint: disable=protected-access
  except Exception:  # pylint: disable=broad-except
    return []
  if configurable is None:
    return []
  try:
    import inspect
    return list(inspect.signature(configurable.wrapped).parameters)
  except (TypeError, ValueError):
    return []


def suggest(name: str, candidates: Iterable[str]) -> str:
  close = difflib.get_close_matches(name, list(candidates), n=3, cutoff=0.5)
  return f' Did you mean: {", ".join(close)}?' if close else ''


def _explain(exc: Exception, where: str) -> str:
  """Turns a gin exception into one line with the file, binding and hints."""
  msg = str(exc).strip().splitlines()
  first = msg[0] if msg else repr(exc)
  location = ''
  for line in msg[1:]:
    m = re.search(r'In file "([^"]+)", line (\d+)', line)
    if m:
      location = f'{m.group(1)}:{m.group(2)}'
  hint = ''
  m = re.search(r"No configurable matching '([^']+)'", first)
  if m:
    hint = suggest(m.group(1), _registered_names())
  m = re.search(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'", first)
  if m:
    hint = suggest(m.group(2), _parameter_names(m.group(1)))
  where_txt = f' ({where}{" at " + location if location else ""})'
  return f'gin: {first}{where_txt}.{hint}'


def resolve_gin_file(path: str, search_paths: Sequence[str]) -> str:
  """Finds `path` directly or under one of the search paths."""
  if os.path.isabs(path):
    if os.path.exists(path):
      return path
  else:
    for base in ['.', *search_paths]:
      candidate = os.path.join(base, path)
      if os.path.exists(candidate):
        return candidate
  raise errors.GinConfigError(
      f'gin file {path!r} not found (searched: ., {", ".join(search_paths)})')


class _QuietSearchMisses(logging.Filter):
  """gin logs an error for every search path an include is *not* found in."""

  def filter(self, record: logging.LogRecord) -> bool:
    return not str(record.msg).startswith('Path not found')


def parse(gin_files: Sequence[str],
          bindings: Sequence[str] = (),
          search_paths: Sequence[str] = ()) -> None:
  """Parses gin files then bindings, raising `GinConfigError` with context."""
  quiet = _QuietSearchMisses()
  logging.getLogger().addFilter(quiet)
  try:
    _parse(gin_files, bindings, [*search_paths, *DEFAULT_SEARCH_PATHS])
  finally:
    logging.getLogger().removeFilter(quiet)


def _parse(gin_files: Sequence[str], bindings: Sequence[str],
           search_paths: Sequence[str]) -> None:
  for path in search_paths:
    gin.add_config_file_search_path(path)
  for path in gin_files:
    resolved = resolve_gin_file(path, search_paths)
    try:
      gin.parse_config_file(resolved)
    except (ValueError, KeyError, TypeError, IOError, SyntaxError) as e:
      raise errors.GinConfigError(_explain(e, f'file {path}')) from None
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except (ValueError, KeyError, TypeError, SyntaxError) as e:
      raise errors.GinConfigError(_explain(e, f'--gin.{binding}')) from None
  try:
    gin.finalize()
  except (ValueError, KeyError, TypeError) as e:
    raise errors.GinConfigError(_explain(e, 'finalize')) from None


def macro_value(name: str):
  """The value of gin macro `name`, or None when no gin file sets it.

  A macro bound to `@configurable()` is built with the current bindings.
  """
  try:
    value = gin.query_parameter(f'{name}/macro.value')
  except ValueError:
    return None
  if isinstance(value, gin.config.ConfigurableReference):
    return value.scoped_configurable_fn() if value.evaluate else value.scoped_configurable_fn
  return value


def write_config(directory: str | os.PathLike[str], name: str = 'config.gin') -> pathlib.Path:
  """Writes the resolved gin config beside the outputs (atomically)."""
  directory = pathlib.Path(directory)
  directory.mkdir(parents=True, exist_ok=True)
  target = directory / name
  tmp = target.with_suffix(target.suffix + '.tmp')
  tmp.write_text(gin.config_str())
  os.replace(tmp, target)
  return target


def call_configurable(fn, **kwargs):
  """Calls a configurable function, re-raising gin errors as one line."""
  import inspect
  signature = inspect.signature(fn)
  bound = gin.get_bindings(fn) if hasattr(gin, 'get_bindings') else {}
  missing = [
      name for name, p in signature.parameters.items()
      if p.default is inspect.Parameter.empty and name not in kwargs
      and name not in bound and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
  ]
  if missing:
    name = getattr(fn, '__name__', str(fn))
    raise errors.GinConfigError(
        f'gin: {name} needs {", ".join(missing)}; bind it in a gin file or '
        f'pass --gin.{name}.{missing[0]}=...')
  try:
    return fn(**kwargs)
  except RuntimeError as e:
    # gin.REQUIRED parameters left unbound surface as a RuntimeError.
    m = re.match(r'Required bindings for `(\w+)` not provided in config: \[(.*)\]', str(e))
    if not m:
      raise
    names = [n.strip(" '") for n in m.group(2).split(',')]
    raise errors.GinConfigError(
        f'gin: {m.group(1)} needs {", ".join(names)}; bind it in a gin file or pass '
        f'--gin.{m.group(1)}.{names[0]}=... (e.g. an include that sets it from EXP_DIR)'
    ) from None
