"""Orbax checkpoints of the full train state: ``latest`` (to resume) and ``best`` (by validation loss).

Checkpoints are numbered by the optimiser step, so one written in the middle of an epoch (training
in several calls per epoch, ``train.steps_per_call``) has its own number too.

The train state already tracks each member's best parameters on the device, so ``best`` is a
parameters-only checkpoint written alongside ``latest``. Every process calls these (orbax
coordinates multi-process writes); the directory must be on a filesystem all processes share.
"""

from __future__ import annotations

import pathlib

import jax
import orbax.checkpoint as ocp

from research.training import TrainState


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


class Checkpoints:
    def __init__(self, directory: str | pathlib.Path):
        directory = pathlib.Path(directory).absolute()
        # Own barrier names per manager: both save the same step, and with several processes
        # equal names collide ("Barrier _async_write_complete.<step> is already ongoing").
        def options(name):
            return ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name))
        self.latest = ocp.CheckpointManager(directory / "latest", options=options("latest"))
        self.best = ocp.CheckpointManager(directory / "best", options=options("best"))

    def save(self, state: TrainState) -> int:
        """Saves the state under its step number (and its best parameters); returns the step."""
        step = int(jax.device_get(state.step).reshape(-1)[0])
        if self.latest.latest_step() == step:
            return step
        self.latest.save(step, args=ocp.args.StandardSave(state))
        self.best.save(step, args=ocp.args.StandardSave(state.best_params))
        return step

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, like: TrainState) -> TrainState:
        """The latest state, restored with the structure, dtypes and shardings of ``like``."""
        step = self.latest.latest_step()
        if step is None:
            raise FileNotFoundError(f"{self.latest.directory}: no checkpoint to resume from")
        return self.latest.restore(step, args=ocp.args.StandardRestore(_abstract(like)))

    def restore_best_params(self, like_params):
        step = self.best.latest_step()
        if step is None:
            raise FileNotFoundError(f"{self.best.directory}: no best checkpoint")
        return self.best.restore(step, args=ocp.args.StandardRestore(_abstract(like_params)))

    def close(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()
        self.latest.close()
        self.best.close()
