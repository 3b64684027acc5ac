"""Orbax checkpoints: the train state, the data position and the config, together.

One checkpoint is one Orbax step directory holding two items:

- `state`: the `TrainState` pytree (step, params, optimizer state), saved from
  and restored into sharded `jax.Array`s (any target layout);
- `meta`: JSON with the step, the data position (batches consumed) and the
  resolved `config.gin` text of the run that wrote it.

Orbax writes a step into a temporary directory and renames it on commit, so an
interrupted save never damages an earlier checkpoint; leftovers of such a save
are ignored and cleaned up when the manager is opened again. The layout is
pinned by `tests/test_checkpoints.py`.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Any

import jax
import orbax.checkpoint as ocp

from restreact_jax import errors

STATE_ITEM = 'state'
META_ITEM = 'meta'


@dataclasses.dataclass(frozen=True)
class Meta:
  """What is saved beside the state.

  Attributes:
    step: the training step of the checkpoint.
    data_position: number of global batches the data pipeline had produced.
    config_gin: the resolved gin config of the run that saved it.
  """
  step: int
  data_position: int
  config_gin: str = ''


def abstract_like(tree: Any) -> Any:
  """`ShapeDtypeStruct`s (with shardings) for a tree of arrays: a restore target."""

  def one(x):
    return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, 'sharding', None))

  return jax.tree.map(one, tree)


def has_checkpoint(directory: str | os.PathLike[str]) -> bool:
  """True if `directory` holds at least one committed checkpoint."""
  path = pathlib.Path(directory)
  # Orbax names a committed step by its number; an unfinished one carries a
  # temporary suffix.
  return path.is_dir() and any(p.is_dir() and p.name.isdigit() for p in path.iterdir())


class Checkpointer:
  """A thin wrapper over `ocp.CheckpointManager` for `(state, Meta)` pairs."""

  def __init__(self,
               directory: str | os.PathLike[str],
               max_to_keep: int | None = 3,
               create: bool = True,
               async_save: bool = False):
    """Opens (and with `create`, makes) a checkpoint directory.

    Args:
      directory: the checkpoint directory (one subdirectory per step).
      max_to_keep: keep the newest N checkpoints; None keeps all.
      create: make the directory if missing; if False a missing or empty
        directory is a `UserError` (restore is required).
      async_save: write in a background thread (call `wait()` before exit).
    """
    self.directory = pathlib.Path(directory).absolute()
    if not create:
      require_checkpoint(self.directory)
    options = ocp.CheckpointManagerOptions(
        max_to_keep=max_to_keep,
        create=create,
        enable_async_checkpointing=async_save,
        # Leftovers of a save that was killed mid-write.
        cleanup_tmp_directories=True,
    )
    self._manager = ocp.CheckpointManager(self.directory, options=options,
                                          item_names=(STATE_ITEM, META_ITEM))

  def latest_step(self) -> int | None:
    return self._manager.latest_step()

  def all_steps(self) -> list[int]:
    return sorted(self._manager.all_steps())

  def save(self, state: Any, meta: Meta, force: bool = False) -> bool:
    """Saves `state` and `meta` as step `meta.step`.

    Args:
      state: a pytree of `jax.Array`s (the train state).
      meta: step, data position and config text.
      force: save even if a checkpoint for that step exists (it is replaced).

    Returns:
      True if a checkpoint was written.
    """
    if meta.step in self._manager.all_steps():
      if not force:
        return False
      self._manager.delete(meta.step)
    saved = self._manager.save(
        meta.step,
        args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardSave(state),
            META_ITEM: ocp.args.JsonSave(dataclasses.asdict(meta)),
        }))
    return bool(saved)

  def restore(self, abstract_state: Any, step: int | None = None) -> tuple[Any, Meta]:
    """Restores a checkpoint into the layout of `abstract_state`.

    Args:
      abstract_state: the state's structure as `jax.ShapeDtypeStruct`s whose
        `sharding` says where each restored array goes.
      step: which step; None takes the latest.

    Returns:
      `(state, meta)`.
    """
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise errors.UserError(f'no checkpoint to restore in {self.directory}')
    if step not in self._manager.all_steps():
      raise errors.UserError(f'checkpoint step {step} not found in {self.directory} '
                             f'(have: {self.all_steps()})')
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.StandardRestore(abstract_state),
            META_ITEM: ocp.args.JsonRestore(),
        }))
    meta = restored[META_ITEM]
    return restored[STATE_ITEM], Meta(step=int(meta['step']),
                                      data_position=int(meta['data_position']),
                                      config_gin=str(meta.get('config_gin', '')))

  def restore_params(self, abstract_params: Any, step: int | None = None) -> Any:
    """Restores only the params subtree of a saved `TrainState` (for inference).

    Args:
      abstract_params: the params structure as sharded `ShapeDtypeStruct`s.
      step: which step; None takes the latest.

    Returns:
      The params pytree.
    """
    step = self._manager.latest_step() if step is None else step
    if step is None:
      raise errors.UserError(f'no checkpoint to restore in {self.directory}')
    # A partial restore: the optimizer state is neither read nor allocated.
    restored = self._manager.restore(
        step,
        args=ocp.args.Composite(**{
            STATE_ITEM: ocp.args.PyTreeRestore(
                item={'params': abstract_params},
                restore_args=ocp.checkpoint_utils.construct_restore_args(
                    {'params': abstract_params}),
                partial_restore=True),
        }))
    return restored[STATE_ITEM]['params']

  def wait(self) -> None:
    """Blocks until a background save has committed."""
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.wait_until_finished()
    self._manager.close()

  def __enter__(self) -> 'Checkpointer':
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def require_checkpoint(directory: str | os.PathLike[str]) -> None:
  """Raises `UserError` unless `directory` holds a committed checkpoint."""
  path = pathlib.Path(directory)
  if not path.exists():
    raise errors.UserError(f'checkpoint directory not found: {path}')
  if not path.is_dir():
    raise errors.UserError(f'checkpoint path is not a directory: {path}')
  if not has_checkpoint(path):
    raise errors.UserError(f'checkpoint directory has no checkpoints: {path}')
