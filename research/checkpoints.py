"""Orbax checkpoints of the full train state: ``latest`` (to resume) and ``best`` (by validation loss).

The train state already tracks each member's best parameters on the device, so ``best`` is a
parameters-only checkpoint written alongside ``latest``. The last two of each are kept: a restore
that fails on the newest falls back to the one before. A save that orbax skips is an error. Every
process calls these (orbax coordinates multi-process writes); the directory must be on a filesystem
all processes share.
"""

from __future__ import annotations

import pathlib
import time

import jax
import orbax.checkpoint as ocp

from research.errors import InputError
from research.training import TrainState

KEEP = 2


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def saved_epochs(directory: str | pathlib.Path) -> list[int]:
    """Epochs with a finished ``latest`` checkpoint under a run's ``checkpoints/``, without opening orbax."""
    folder = pathlib.Path(directory) / "latest"
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


class Checkpoints:
    def __init__(self, directory: str | pathlib.Path):
        directory = pathlib.Path(directory).absolute()
        # Own barrier names per manager: both save the same step, and with several processes
        # equal names collide ("Barrier _async_write_complete.<step> is already ongoing").
        def options(name):
            # synchronous saves: a failed write (disk full) raises here, in order, not in a background thread
            return ocp.CheckpointManagerOptions(
                max_to_keep=KEEP, create=True, enable_async_checkpointing=False,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name))
        self.latest = ocp.CheckpointManager(directory / "latest", options=options("latest"))
        self.best = ocp.CheckpointManager(directory / "best", options=options("best"))

    def save(self, state: TrainState) -> int:
        """Saves the state under its epoch number (and its best parameters); returns the epoch."""
        epoch = int(jax.device_get(state.epoch).reshape(-1)[0])
        if self.latest.latest_step() == epoch:
            return epoch
        for manager, item in ((self.latest, state), (self.best, state.best_params)):
            if not manager.save(epoch, args=ocp.args.StandardSave(item)):
                raise InputError(f"{manager.directory}: the checkpoint of epoch {epoch} was not saved "
                                 f"(saved epochs: {manager.all_steps()})")
        return epoch

    def latest_epoch(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, like: TrainState, log=print) -> tuple[TrainState, int]:
        """The newest readable state and its epoch, restored with the structure, dtypes and shardings of
        ``like``. An unreadable checkpoint is named, moved aside (``<epoch>.unreadable-<time>``) and the
        one before is tried."""
        steps = sorted(self.latest.all_steps(), reverse=True)
        if not steps:
            raise InputError(f"{self.latest.directory}: no checkpoint to resume from")
        for step in steps:
            try:
                return self.latest.restore(step, args=ocp.args.StandardRestore(_abstract(like))), step
            except Exception as exc:  # orbax/tensorstore raise many kinds for a damaged checkpoint
                why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
                bad = pathlib.Path(self.latest.directory) / str(step)
                if jax.process_index() == 0:
                    log(f"checkpoint {bad} is unreadable ({why}); falling back to the one before")
                    for manager in (self.latest, self.best):
                        folder = pathlib.Path(manager.directory) / str(step)
                        if folder.exists():
                            folder.rename(folder.with_name(f"{step}.unreadable-{int(time.time())}"))
                self.latest.reload()
                self.best.reload()
        raise InputError(f"{self.latest.directory}: no readable checkpoint (tried epochs {steps})")

    def close(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()
        self.latest.close()
        self.best.close()
