"""The experiment directory: phases, their fingerprints, and `manifest.json`.

Every phase of the loop (world, index, vocab, base LM, each rollout shard,
ranking, mixture, each training, each eval) reads from and writes to one
`EXP_DIR`. A phase is recorded in `manifest.json` with a fingerprint: the hash
of its configuration and of the fingerprints of the phases it depends on. So a
rerun skips what is done, and redoes a phase (and everything downstream of it)
when its inputs or config changed.

Two kinds of phase:

* **atomic** (`Experiment.run`): the phase writes into a fresh temporary
  directory that is renamed onto its output path only on success. A kill at any
  moment leaves either the old output or none — never a half-written one.
* **resumable** (`Experiment.run(..., resumable=True)`): the phase writes in
  place and resumes itself (training resumes from its Orbax checkpoint; a
  rollout skips trajectories already in its shard). Only its completion is
  recorded atomically.

The manifest itself is replaced atomically (write, fsync, rename). In a
multi-process job only the primary process writes it. Phases of one process
may run on several threads at once (the loop's final test); the manifest is
read and written under a lock.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import threading
import time
from typing import Any, Callable, Iterator, Sequence

from restreact_jax import errors

MANIFEST = 'manifest.json'
MANIFEST_VERSION = 1


def fingerprint(config: Any, deps: Sequence[str] = ()) -> str:
  """A stable hash of a JSON-serialisable config and upstream fingerprints."""
  payload = json.dumps({'config': config, 'deps': list(deps)}, sort_keys=True,
                       default=_json_default)
  return hashlib.sha256(payload.encode()).hexdigest()[:16]


def _json_default(obj: Any) -> Any:
  if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
    return dataclasses.asdict(obj)
  if isinstance(obj, (set, frozenset)):
    return sorted(obj)
  if isinstance(obj, pathlib.Path):
    return str(obj)
  return repr(obj)


def file_digest(path: str | os.PathLike[str]) -> str:
  """sha256 of a file's bytes (for inputs that come from outside the loop)."""
  h = hashlib.sha256()
  with open(path, 'rb') as f:
    for block in iter(lambda: f.read(1 << 20), b''):
      h.update(block)
  return h.hexdigest()[:16]


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  tmp = path.with_name(f'.{path.name}.tmp-{os.getpid()}')
  with open(tmp, 'w') as f:
    json.dump(obj, f, indent=2, sort_keys=True, default=_json_default)
    f.flush()
    os.fsync(f.fileno())
  os.replace(tmp, path)


@dataclasses.dataclass
class PhaseRecord:
  name: str
  fingerprint: str
  output: str
  seconds: float
  finished_at: float
  result: Any = None


class Experiment:
  """One experiment directory and its manifest.

  Args:
    root: EXP_DIR.
    is_primary: whether this process writes the manifest (process 0).
    log: where progress lines go (a callable taking a string).
  """

  def __init__(self, root: str | os.PathLike[str], *, is_primary: bool = True,
               log: Callable[[str], None] | None = None):
    self.root = pathlib.Path(root)
    self.is_primary = is_primary
    self.log = log or (lambda msg: print(msg, flush=True))
    self.root.mkdir(parents=True, exist_ok=True)
    self._lock = threading.RLock()
    self._manifest = self._load()

  # -- manifest ---------------------------------------------------------------

  @property
  def manifest_path(self) -> pathlib.Path:
    return self.root / MANIFEST

  def _load(self) -> dict[str, Any]:
    if not self.manifest_path.exists():
      return {'version': MANIFEST_VERSION, 'phases': {}}
    try:
      data = json.loads(self.manifest_path.read_text())
    except json.JSONDecodeError as e:
      raise errors.UserError(
          f'{self.manifest_path}: not valid JSON ({e.msg} at line {e.lineno}); '
          'move it away to rebuild the manifest') from None
    if data.get('version') != MANIFEST_VERSION or 'phases' not in data:
      raise errors.UserError(f'{self.manifest_path}: unknown manifest version '
                             f'{data.get("version")!r}')
    return data

  def _save(self) -> None:
    if self.is_primary:
      with self._lock:
        write_json_atomic(self.manifest_path, self._manifest)

  def record(self, name: str) -> PhaseRecord | None:
    with self._lock:
      raw = self._manifest['phases'].get(name)
    return PhaseRecord(**raw) if raw else None

  def fingerprint_of(self, name: str) -> str:
    rec = self.record(name)
    if rec is None:
      raise errors.UserError(f'phase {name!r} has not run yet in {self.root}')
    return rec.fingerprint

  def is_done(self, name: str, fp: str) -> bool:
    rec = self.record(name)
    return (rec is not None and rec.fingerprint == fp and
            (self.root / rec.output).exists())

  def phases(self) -> dict[str, PhaseRecord]:
    with self._lock:
      return {k: PhaseRecord(**v) for k, v in self._manifest['phases'].items()}

  def invalidate(self, name: str) -> None:
    with self._lock:
      if self._manifest['phases'].pop(name, None) is not None:
        self._save()

  # -- running phases -----------------------------------------------------------

  def path(self, *parts: str) -> pathlib.Path:
    return self.root.joinpath(*parts)

  def run(self,
          name: str,
          fn: Callable[[pathlib.Path], Any],
          *,
          output: str,
          config: Any = None,
          deps: Sequence[str] = (),
          resumable: bool = False) -> Any:
    """Runs phase `name` unless it is done with the same fingerprint.

    Args:
      name: unique phase name, e.g. 'gen_1/rollout'.
      fn: does the work; called with the directory to write into (a temporary
        one for atomic phases, `EXP_DIR/output` for resumable ones). Its return
        value (JSON-serialisable) is recorded as the phase's result.
      output: the phase's output path relative to EXP_DIR.
      config: everything that determines the phase's output (JSON-able).
      deps: names of phases whose outputs this one reads; their fingerprints
        enter this one's, so a changed upstream phase makes this one stale.
      resumable: write in place and let `fn` resume; see the module docstring.

    Returns:
      The phase's recorded result (from the manifest when skipped).
    """
    fp = fingerprint(config, [f'{d}:{self.fingerprint_of(d)}' for d in deps])
    target = self.root / output
    if self.is_done(name, fp):
      rec = self.record(name)
      self.log(f'[{name}] done already (fingerprint {fp}); skipping')
      return rec.result
    stale = self.record(name)
    if stale is not None:
      self.log(f'[{name}] stale (fingerprint {stale.fingerprint} -> {fp}); redoing')
      self.invalidate(name)  # an atomic phase's old output stays until replaced
    elif resumable and target.exists():
      self.log(f'[{name}] resuming in {output}')
    start = time.time()
    if resumable:
      target.mkdir(parents=True, exist_ok=True)
      self._write_fingerprint_marker(target, fp)
      result = fn(target)
    else:
      with self._atomic_dir(target) as tmp:
        result = fn(tmp)
    seconds = time.time() - start
    with self._lock:
      self._manifest['phases'][name] = dataclasses.asdict(
          PhaseRecord(name=name, fingerprint=fp, output=output, seconds=seconds,
                      finished_at=time.time(), result=result))
      self._save()
    self.log(f'[{name}] finished in {seconds:.1f}s')
    return result

  def _write_fingerprint_marker(self, target: pathlib.Path, fp: str) -> None:
    """A resumable phase restarted under another fingerprint starts clean."""
    marker = target / '.fingerprint'
    if marker.exists() and marker.read_text().strip() != fp:
      self.log(f'[{target.name}] partial output has another fingerprint; clearing')
      for child in target.iterdir():
        _remove(child)
    if self.is_primary or not marker.exists():
      tmp = target / f'.fingerprint.tmp-{os.getpid()}'
      tmp.write_text(fp)
      os.replace(tmp, marker)

  @contextlib.contextmanager
  def _atomic_dir(self, target: pathlib.Path) -> Iterator[pathlib.Path]:
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f'.{target.name}.tmp-{os.getpid()}')
    if tmp.exists():
      _remove(tmp)
    for leftover in target.parent.glob(f'.{target.name}.tmp-*'):
      _remove(leftover)  # from a killed earlier run
    tmp.mkdir()
    try:
      yield tmp
    except BaseException:
      _remove(tmp)
      raise
    if target.exists():
      old = target.with_name(f'.{target.name}.old-{os.getpid()}')
      os.replace(target, old)
      os.replace(tmp, target)
      _remove(old)
    else:
      os.replace(tmp, target)


def _remove(path: pathlib.Path) -> None:
  if path.is_dir() and not path.is_symlink():
    shutil.rmtree(path, ignore_errors=True)
  elif path.exists() or path.is_symlink():
    path.unlink()
