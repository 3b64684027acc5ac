"""The `restreact` CLI: `restreact <command> --gin_file=F --gin.NAME=VALUE ...`.

T5X's manner: `--gin_file` is repeatable, `--gin.NAME=VALUE` overrides any
binding, `--gin_search_path` adds include directories. Other `--flag=value`
arguments are passed to the command as keyword arguments (strings). Errors
caused by the user's input print as one line.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Sequence

from restreact_jax import errors
from restreact_jax.commands import COMMANDS

USAGE = (
    'usage: restreact <command> [--gin_file=FILE]... [--gin.NAME=VALUE]... '
    '[--gin_search_path=DIR]... [--flag=value]...\ncommands: ' +
    ', '.join(sorted(COMMANDS)))


def parse_args(argv: Sequence[str]) -> tuple[str, dict[str, Any]]:
  """Splits argv into the command and its gin files, bindings and kwargs."""
  if not argv or argv[0] in ('-h', '--help', 'help'):
    raise SystemExit(USAGE)
  command, rest = argv[0], list(argv[1:])
  if command not in COMMANDS:
    from restreact_jax import gin_utils
    raise errors.UserError(
        f'unknown command {command!r}.{gin_utils.suggest(command, COMMANDS)} '
        f'Commands: {", ".join(sorted(COMMANDS))}')
  out: dict[str, Any] = {'gin_files': [], 'bindings': [], 'search_paths': [], 'kwargs': {}}
  i = 0
  while i < len(rest):
    arg = rest[i]
    if not arg.startswith('--'):
      raise errors.UserError(f'unexpected argument {arg!r}; flags look like --name=value')
    if '=' in arg:
      key, value = arg[2:].split('=', 1)
    elif i + 1 < len(rest) and not rest[i + 1].startswith('--'):
      key, value = arg[2:], rest[i + 1]
      i += 1
    else:
      key, value = arg[2:], 'true'
    if key == 'gin_file':
      out['gin_files'].append(value)
    elif key == 'gin_search_path':
      out['search_paths'].append(value)
    elif key.startswith('gin.'):
      out['bindings'].append(f'{key[4:]} = {value}')
    else:
      out['kwargs'][key.replace('-', '_')] = value
    i += 1
  return command, out


def load_command(name: str) -> Callable[..., Any]:
  """Imports every command module (so gin sees all) and returns `name`'s function."""
  functions = {}
  for cmd, target in COMMANDS.items():
    module_name, fn_name = target.split(':')
    functions[cmd] = getattr(importlib.import_module(module_name), fn_name)
  importlib.import_module('restreact_jax.gin_registry')
  return functions[name]


def run(argv: Sequence[str]) -> Any:
  from restreact_jax import compilation_cache, distributed, gin_utils
  command, parsed = parse_args(argv)
  fn = load_command(command)
  # Multi-host flags (--multihost, --coordinator, ...) are consumed here, before
  # anything touches a device.
  parsed['kwargs'] = distributed.initialize_from_flags(parsed['kwargs'])
  # `--compilation_cache=DIR|none`: compiled programs are reused across phases.
  parsed['kwargs'] = compilation_cache.enable_from_flags(parsed['kwargs'])
  gin_utils.parse(parsed['gin_files'], parsed['bindings'], parsed['search_paths'])
  return gin_utils.call_configurable(fn, **parsed['kwargs'])


def main(argv: Sequence[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  try:
    run(argv)
  except errors.UserError as e:
    # gin appends "In call to configurable ..." lines; the first line says it all.
    lines = str(e).strip().splitlines() or [type(e).__name__]
    print(f'restreact: error: {lines[0]}', file=sys.stderr)
    return 2
  except KeyboardInterrupt:
    print('restreact: interrupted', file=sys.stderr)
    return 130
  return 0


if __name__ == '__main__':
  sys.exit(main())
