"""Training a configured model into its run directory: the one pipeline every runner calls.

A runner (:mod:`research.runners`) reads and frames its data, then calls :func:`train`, which owns
everything a run owns: multi-process start-up, the SLURM run name, the run directory with
``config.json`` and ``run.json``, resume from the latest checkpoint, the epoch log, checkpoints and
stopping at an epoch boundary on a preemption signal. Scoring stays with the runner.
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from typing import Any, Callable

import numpy as np

from research.errors import InputError

_started = False


def start_up(config) -> None:
    """Joins the other processes (once per process) and names an unnamed run after its SLURM job."""
    global _started
    from research import distributed, slurm

    if not _started:
        distributed.maybe_initialize()
        _started = True
    slurm.apply_run_defaults(config)


@dataclasses.dataclass
class Result:
    state: Any  # research.training.TrainState, leading member axis
    trainer: Any  # research.training.Trainer
    rundir: Any  # research.rundir.RunDir
    history: list[dict]  # one record per epoch, as in log.jsonl
    stopped: bool  # stopped by a signal before the configured epochs; a checkpoint is saved
    exit_code: int  # 0, or the preemption exit status when stopped
    train_seconds: float
    seeds: list[int]

    @property
    def epochs_done(self) -> int:
        return int(np.asarray(self.state.epoch)[0])


def train(config, train_data: dict, val_data: dict, *, seeds: list[int], member_data: bool = False,
          run_info: dict | None = None, should_stop: Callable[[], bool] | None = None,
          progress_text: Callable[[dict], str] | None = None, log=print) -> Result:
    """Trains ``config.model`` with ``config.train`` on host arrays ``{'x': ..., 'mask', 'weights'}``.

    ``config`` is resolved (:func:`research.config.resolve`). ``member_data=True``: arrays carry a
    leading member axis (one dataset per member). ``run_info`` is added to ``run.json``.
    ``should_stop`` defaults to the preemption signals (SIGUSR1/SIGTERM).
    """
    import jax

    from research import checkpoints, preemption
    from research.models import build_model
    from research.progress import Progress
    from research.rundir import RunDir, git_info
    from research.training import Trainer, fit

    tc = config.train
    n_train = train_data["x"].shape[1 if member_data else 0]
    if tc.batch_size > n_train:
        raise InputError(f"config key train.batch_size: {tc.batch_size} is larger than the {n_train} training rows")
    start_up(config)
    stop = should_stop or preemption.StopFlag().install()
    model = build_model(config.model)
    trainer = Trainer.from_config(model, tc, n_train // tc.batch_size, member_data=member_data)

    lead = jax.process_index() == 0
    rundir = RunDir(config.run.root, config.experiment, config.run.name, writer=lead)
    if lead:
        log(f"run directory: {rundir.path}")
    rundir.write_json("config.json", json.loads(config.to_json_best_effort()))
    rundir.write_json("run.json", {
        "seeds": seeds, "git": git_info(), "argv": sys.argv, "python": platform.python_version(),
        "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
        "process_count": jax.process_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(run_info or {})})

    train_d, val_d = trainer.put(train_data), trainer.put(val_data)
    sample_shape = train_data["x"].shape[2 if member_data else 1:]
    state = trainer.init(seeds, sample_shape)
    ckpt = checkpoints.Checkpoints(rundir.checkpoints)
    history: list[dict] = []
    log_path = rundir.path / "log.jsonl"
    if config.run.resume and ckpt.latest_epoch() is not None:
        state = ckpt.restore(state)
        start = ckpt.latest_epoch()
        if log_path.exists():
            history = [r for r in map(json.loads, log_path.read_text().splitlines()) if r["epoch"] <= start]
        if lead:
            log_path.write_text("".join(json.dumps(r) + "\n" for r in history))
            log(f"resumed from epoch {start} ({rundir.checkpoints / 'latest'})")
    elif lead and log_path.exists():
        log_path.unlink()

    text = progress_text or (lambda m: " ".join(f"{k}={np.mean(v):.4g}" for k, v in m.items()))
    progress = Progress(tc.epochs, int(np.asarray(state.epoch)[0]), desc=config.experiment, enabled=lead)
    t_train = time.time()

    def on_epoch(st, metrics):
        epoch = int(np.asarray(st.epoch)[0])
        record = {"epoch": epoch, "train_loss": metrics["train_loss"].tolist(),
                  "val_loss": metrics["val_loss"].tolist(), "time": round(time.time() - t_train, 3)}
        history.append(record)
        rundir.append_jsonl("log.jsonl", record)
        progress.update(text(metrics))
        if tc.checkpoint_every and epoch % tc.checkpoint_every == 0:
            ckpt.save(st)

    state = fit(trainer, state, train_d, val_d, tc.epochs, on_epoch=on_epoch, should_stop=stop)
    progress.close()
    ckpt.save(state)
    ckpt.close()
    result = Result(state=state, trainer=trainer, rundir=rundir, history=history, stopped=False, exit_code=0,
                    train_seconds=time.time() - t_train, seeds=list(seeds))
    if result.epochs_done < tc.epochs:
        result.stopped = True
        result.exit_code = getattr(stop, "exit_code", preemption.REQUEUE_EXIT)
        if lead:
            log(f"stopped at epoch {result.epochs_done}/{tc.epochs}; checkpoint saved, resume with "
                f"--config.run.name={rundir.path.name} --config.run.resume=True")
    return result
