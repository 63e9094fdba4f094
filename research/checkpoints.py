"""Orbax checkpoints of the full train state: ``latest`` (to resume) and ``best`` (by validation loss).

Checkpoints are numbered by the optimiser step, so one written in the middle of an epoch (training
in several calls per epoch, ``train.steps_per_call``) has its own number too.

The train state already tracks each member's best parameters on the device, so ``best`` is a
parameters-only checkpoint written alongside ``latest``. The last two of each are kept: a restore
that fails on the newest falls back to the one before. A save that orbax skips is an error. Every
process calls these (orbax coordinates multi-process writes); the directory must be on a filesystem
all processes share.

A write that fails (disk full) leaves orbax's other writes of that checkpoint running after orbax has
closed the asyncio event loop they report to (``asyncio_utils._run_sync_via_new_loop``, orbax 0.12):
each then fails with ``RuntimeError: Event loop is closed`` inside tensorstore's callback, which Python
prints as an unraisable exception; the coroutines left behind may warn that they were never awaited.
Those reports say nothing the failed save's own error does not, so they are kept
(:func:`late_write_reports`, for ``error.log``) instead of printed.

A streaming run (``data.format=sharded``) stopped mid-epoch also saves each process's grain iterator
state as the ``data`` item of the same ``latest`` checkpoint, beside the state (item ``default``).
"""

from __future__ import annotations

import pathlib
import re
import shutil
import sys
import time
import traceback
import warnings

import jax
import orbax.checkpoint as ocp

from research.errors import InputError
from research.training import TrainState

KEEP = 2
_late_reports: list[str] = []


def _is_closed_loop_report(report) -> bool:
    """An unraisable ``Event loop is closed`` raised by asyncio's ``call_soon_threadsafe`` (a write
    finishing after its event loop is gone), and nothing else."""
    frames = traceback.extract_tb(report.exc_traceback)
    return (isinstance(report.exc_value, RuntimeError) and str(report.exc_value) == "Event loop is closed"
            and any(f.name == "call_soon_threadsafe" for f in frames))


def keep_closed_loop_reports() -> None:
    """Installs (once) the unraisable hook and the warning display that keep those reports and pass
    on every other one."""
    previous = sys.unraisablehook
    if not getattr(previous, "keeps_closed_loop_reports", False):
        def hook(report):
            if _is_closed_loop_report(report):
                _late_reports.append("".join(traceback.format_exception(report.exc_type, report.exc_value,
                                                                        report.exc_traceback)))
            else:
                previous(report)

        hook.keeps_closed_loop_reports = True
        sys.unraisablehook = hook
    show = warnings.showwarning
    if not getattr(show, "keeps_closed_loop_reports", False):
        def showwarning(message, category, filename, lineno, file=None, line=None):
            unawaited = re.fullmatch(r"coroutine '.*' was never awaited", str(message))
            if issubclass(category, RuntimeWarning) and unawaited:
                _late_reports.append(f"{filename}:{lineno}: {category.__name__}: {message}\n")
            else:
                show(message, category, filename, lineno, file, line)

        showwarning.keeps_closed_loop_reports = True
        warnings.showwarning = showwarning


def late_write_reports() -> list[str]:
    """The ``Event loop is closed`` reports of writes that outlived a failed save, so far."""
    return list(_late_reports)


def _abstract(tree):
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)


def saved_steps(directory: str | pathlib.Path) -> list[int]:
    """Steps with a finished ``latest`` checkpoint under a run's ``checkpoints/``, without opening orbax."""
    folder = pathlib.Path(directory) / "latest"
    return sorted(int(p.name) for p in folder.iterdir() if p.is_dir() and p.name.isdigit()) if folder.is_dir() else []


class Checkpoints:
    def __init__(self, directory: str | pathlib.Path):
        directory = pathlib.Path(directory).absolute()
        keep_closed_loop_reports()
        # Own barrier names per manager: both save the same step, and with several processes
        # equal names collide ("Barrier _async_write_complete.<step> is already ongoing").
        def options(name):
            # synchronous saves: a failed write (disk full) raises here, in order, not in a background thread
            return ocp.CheckpointManagerOptions(
                max_to_keep=KEEP, create=True, enable_async_checkpointing=False,
                multiprocessing_options=ocp.options.MultiprocessingOptions(barrier_sync_key_prefix=name))
        self.latest = ocp.CheckpointManager(directory / "latest", item_names=("default", "data"),
                                            options=options("latest"))
        self.best = ocp.CheckpointManager(directory / "best", options=options("best"))

    def save(self, state: TrainState, data_iterator=None) -> int:
        """Saves the state under its step number (and its best parameters) and, when given, a grain
        iterator's position; returns the step."""
        step = int(jax.device_get(state.step).reshape(-1)[0])
        if self.latest.latest_step() == step:
            return step
        items = {"default": ocp.args.StandardSave(state)}
        if data_iterator is not None:
            import grain.python as grain

            items["data"] = grain.PyGrainCheckpointSave(data_iterator)
        for manager, args in ((self.latest, ocp.args.Composite(**items)),
                              (self.best, ocp.args.StandardSave(state.best_params))):
            try:
                saved = manager.save(step, args=args)
            except BaseException:
                self._discard_unfinished(step)
                raise
            if not saved:
                raise InputError(f"{manager.directory}: the checkpoint of step {step} was not saved "
                                 f"(saved steps: {manager.all_steps()})")
        return step

    def _discard_unfinished(self, step: int) -> None:
        """Removes the temporary folders of a save that failed: on a full disk their space is what
        ``error.log`` needs, and a later run would find them as debris."""
        for manager in (self.latest, self.best):
            for folder in pathlib.Path(manager.directory).glob(f"{step}.orbax-checkpoint-tmp*"):
                shutil.rmtree(folder, ignore_errors=True)

    def latest_step(self) -> int | None:
        return self.latest.latest_step()

    def restore(self, like: TrainState, log=print) -> tuple[TrainState, int]:
        """The newest readable state and its step, restored with the structure, dtypes and shardings of
        ``like``. An unreadable checkpoint is named, moved aside (``<step>.unreadable-<time>``) and the
        one before is tried."""
        steps = sorted(self.latest.all_steps(), reverse=True)
        if not steps:
            raise InputError(f"{self.latest.directory}: no checkpoint to resume from")
        for step in steps:
            try:
                args = ocp.args.Composite(default=ocp.args.StandardRestore(_abstract(like)))
                return self.latest.restore(step, args=args)["default"], step
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
        raise InputError(f"{self.latest.directory}: no readable checkpoint (tried steps {steps})")

    def restore_data(self, step: int, data_iterator) -> None:
        """Moves ``data_iterator`` to where the iterator saved with step ``step`` stood."""
        import grain.python as grain

        self.latest.restore(step, args=ocp.args.Composite(data=grain.PyGrainCheckpointRestore(data_iterator)))

    def close(self) -> None:
        self.latest.wait_until_finished()
        self.best.wait_until_finished()
        self.latest.close()
        self.best.close()
