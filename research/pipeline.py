"""Training a configured model into its run directory: the one pipeline every runner calls.

A runner (:mod:`research.runners`) reads and frames its data, then calls :func:`train`, which owns
everything a run owns: multi-process start-up, the SLURM run name, the run directory (locked to one
owner) with ``config.json`` and ``run.json``, resume from the latest readable checkpoint after checking
that the config still describes the same run, the epoch log, checkpoints and stopping at an epoch
boundary on a preemption signal. Scoring stays with the runner.

A run directory that this call created is removed again when it fails before the first checkpoint;
any other failure leaves its traceback in ``<run dir>/error.log`` (see :func:`record_failure`).
"""

from __future__ import annotations

import dataclasses
import json
import platform
import shutil
import sys
import time
import traceback
from typing import Any, Callable, Mapping

import numpy as np

from research.errors import InputError

_started = False
_current: dict = {}  # the run directory this process is training into: {'path': Path}

# Keys a resume may change: they do not change what is trained (model, data, optimiser), only how long,
# what is drawn, logged or scored afterwards. train.epochs also changes a decaying schedule: refused then.
RESUMABLE = ("train.epochs", "train.checkpoint_every", "train.steps_per_call", "train.eval_batch_size",
             "data.workers", "data.chunk",
             "train.use_best", "plots.", "run.", "score.", "threshold.", "analyses", "regions.", "baselines.",
             "fsdd_maps.", "latent.", "smoke", "smoke_epochs")


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
    monitor: Any = None  # research.monitor.RunMonitor: the runner calls monitor.finish(summary, images)

    @property
    def epochs_done(self) -> int:
        return int(np.asarray(self.state.epoch)[0])

    @property
    def steps_done(self) -> int:
        return int(np.asarray(self.state.step)[0])


def _flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def resume_changes(old: dict, new: dict) -> tuple[dict, list[str]]:
    """Keys whose value differs between the run's ``config.json`` and this config: ``(allowed, refused)``.
    A key the run's config lacks is no change while this config leaves it at its base default (a run
    made before the key existed behaved as the default does)."""
    from research.config import base_config

    a, b = _flat(old), _flat(json.loads(json.dumps(new)))
    base = _flat(json.loads(json.dumps(base_config().to_dict())))
    changed = {k: [a.get(k), b.get(k)] for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
               and not (k not in a and k in base and b.get(k) == base[k])}
    decaying = b.get("train.schedule", "constant") != "constant"
    refused = [k for k in changed if not k.startswith(RESUMABLE) or (k == "train.epochs" and decaying)]
    allowed = {k: v for k, v in changed.items() if k not in refused and not k.startswith("run.")}
    return allowed, refused


def _checks(rundir, config, resolved: dict) -> tuple[bool, dict | None]:
    """What a run may do with its directory, decided before anything in it changes: ``(resume, changes)``.

    A name already used by a run needs ``run.resume``; ``run.resume=True`` needs a checkpoint
    (``'auto'``: resume when there is one, else start afresh); a resume needs the same model, data and
    optimiser keys (:func:`resume_changes`).
    """
    from research.checkpoints import saved_steps

    mode, name = config.run.resume, rundir.path
    if mode not in (False, True, "auto"):
        raise InputError(f"config key run.resume: must be False, True or 'auto', got {mode!r}")
    has_checkpoint = bool(saved_steps(rundir.checkpoints))
    resume = has_checkpoint and mode in (True, "auto")
    if not rundir.writer:  # other processes follow the lead process, which checks and locks
        return resume, None
    if (rundir.path / "config.json").is_file() and mode is False:
        raise InputError(f"run {name} exists: resume it with run.resume=True or choose another run.name")
    if mode is True and not has_checkpoint:
        raise InputError(f"run {name}: no checkpoint to resume from (run.resume='auto' starts afresh when "
                         "there is none)")
    if not resume:
        return False, None
    changes, refused = resume_changes(rundir.read_json("config.json") or {}, resolved)
    if refused:
        raise InputError(f"run {name}: cannot resume with changed {', '.join(refused)} (they change the "
                         "model, data or optimiser; choose another run.name)")
    return True, changes


def check(config) -> None:
    """The run-directory checks of :func:`train`, for a runner to call before it reads any data."""
    import jax

    from research.rundir import RunDir

    start_up(config)
    if config.run.name is not None or config.run.resume is not False:
        rundir = RunDir(config.run.root, config.experiment, config.run.name, writer=jax.process_index() == 0,
                        create=False)
        _checks(rundir, config, json.loads(config.to_json_best_effort()))


def _claim(rundir, config, resolved: dict) -> tuple[bool, dict | None, bool]:
    """:func:`_checks`, then the directory is created if needed and locked: ``(resume, changes, created)``."""
    from research.rundir import RunLock

    resume, changes = _checks(rundir, config, resolved)
    if not rundir.writer:
        return resume, changes, False
    path, name = rundir.path, rundir.path
    created = not path.exists()
    rundir.create()
    release()  # this process's previous run is over
    lock = RunLock(path)
    try:
        rundir.lock_note = lock.acquire(str(name))
    except InputError:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise
    _current["lock"] = lock  # held until the process ends or trains its next run
    return resume, changes, created


def train(config, train_data: dict, val_data: dict, *, seeds: list[int], member_data: bool = False,
          run_info: dict | None = None, should_stop: Callable[[], bool] | None = None,
          progress_text: Callable[[dict], str] | None = None, log=print) -> Result:
    """Trains ``config.model`` with ``config.train`` on host arrays ``{'x': ..., 'mask', 'weights'}``, or on
    rows streamed from shards (:class:`research.data.stream.Stream`, ``data.format='sharded'``: trained by
    :func:`research.streaming.fit_stream` in ``data.chunk`` batches, stoppable mid-epoch).

    ``config`` is resolved (:func:`research.config.resolve`). ``member_data=True``: arrays carry a
    leading member axis (one dataset per member). ``run_info`` is added to ``run.json``.
    ``should_stop`` defaults to the preemption signals (SIGUSR1/SIGTERM).
    """
    import jax

    from research import preemption
    from research.models import build_model
    from research.rundir import RunDir
    from research.training import Trainer

    from research import startup as run_startup

    startup = run_startup.take(config)  # the compilation cache is on from here
    startup.mark("data")
    tc = config.train
    n_train = _rows(train_data, member_data)
    if tc.batch_size > n_train:
        raise InputError(f"config key train.batch_size: {tc.batch_size} is larger than the {n_train} training rows")
    start_up(config)
    stop = should_stop or preemption.StopFlag().install()
    model = build_model(config.model)
    trainer = Trainer.from_config(model, tc, n_train // tc.batch_size, member_data=member_data)
    lead = jax.process_index() == 0
    rundir = RunDir(config.run.root, config.experiment, config.run.name, writer=lead, create=False)
    resolved = json.loads(config.to_json_best_effort())
    resume, changes, created = _claim(rundir, config, resolved)
    _current.update(path=rundir.path if lead else None, name=rundir.path, training=False)
    try:
        return _train(config, rundir, trainer, resolved, resume, changes, train_data, val_data, seeds,
                      member_data, run_info, stop, progress_text, log, startup)
    except BaseException:
        if created and lead and not _current.get("training"):
            shutil.rmtree(rundir.path, ignore_errors=True)  # nothing trained yet: leave no directory behind
            _current["path"] = None
        raise


def _streamed(data) -> bool:
    return not isinstance(data, Mapping)


def _rows(data, member_data: bool) -> int:
    return len(data) if _streamed(data) else data["x"].shape[1 if member_data else 0]


def _train(config, rundir, trainer, resolved, resume, changes, train_data, val_data, seeds, member_data,
           run_info, stop, progress_text, log, startup) -> Result:
    import jax

    from research import checkpoints, preemption
    from research.monitor import RunMonitor
    from research.rundir import git_info
    from research.training import fit, make_schedule

    tc, lead = config.train, rundir.writer
    if lead:
        log(f"run directory: {rundir.path}")
        if rundir.lock_note:
            log(f"took over the stale lock of {rundir.lock_note}")
    now = time.strftime("%Y-%m-%dT%H:%M:%S")
    info = {"seeds": seeds, "git": git_info(), "argv": sys.argv, "python": platform.python_version(),
            "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
            "process_count": jax.process_count(), "started": now, **(run_info or {})}
    previous = rundir.read_json("run.json") if resume else None
    streamed = _streamed(train_data)
    if streamed:
        train_d, val_d, sample_shape = train_data, val_data, train_data.sample_shape
    else:
        train_d, val_d = trainer.put(train_data), trainer.put(val_data)
        sample_shape = train_data["x"].shape[2 if member_data else 1:]
    state = trainer.init(seeds, sample_shape)
    ckpt = checkpoints.Checkpoints(rundir.checkpoints)
    history: list[dict] = []
    log_path = rundir.path / "log.jsonl"
    resumed_at_step = None
    if resume:
        state, resumed_at_step = ckpt.restore(state, log=log)
        start = int(np.asarray(state.epoch)[0])
        if log_path.exists():
            history = [r for r in map(json.loads, log_path.read_text().splitlines()) if r["epoch"] <= start]
        info["started"] = (previous or {}).get("started", now)
        info["resumes"] = (previous or {}).get("resumes", []) + [
            {"started": now, "from_epoch": start, "from_step": resumed_at_step, "argv": sys.argv,
             "changed": changes or {}}]
        if lead:
            log_path.write_text("".join(json.dumps(r) + "\n" for r in history))
            log(f"resumed from epoch {start}, step {resumed_at_step} ({rundir.checkpoints / 'latest'})")
    elif lead and log_path.exists():
        log_path.unlink()
    rundir.write_json("config.json", resolved)
    rundir.write_json("run.json", info)

    steps = _rows(train_data, member_data) // tc.batch_size
    monitor = RunMonitor(config, rundir, startup, int(np.asarray(state.epoch)[0]), steps,
                         make_schedule(tc, steps), lead=lead, text=progress_text)
    t_train = time.time()
    _current["training"] = True

    def on_epoch(st, metrics):
        epoch = int(np.asarray(st.epoch)[0])
        record = {"epoch": epoch, "train_loss": metrics["train_loss"].tolist(),
                  "val_loss": metrics["val_loss"].tolist(), "time": round(time.time() - t_train, 3)}
        history.append(record)
        rundir.append_jsonl("log.jsonl", record)
        monitor.epoch(epoch, metrics)
        if tc.checkpoint_every and epoch % tc.checkpoint_every == 0:
            ckpt.save(st)

    if streamed:
        from research.streaming import StreamingTrainer, fit_stream

        state = fit_stream(StreamingTrainer(trainer, steps, config.data.chunk), state, train_d, val_d, tc.epochs,
                           on_epoch=on_epoch, should_stop=stop, checkpoints=ckpt, resumed_at_step=resumed_at_step)
    else:
        state = fit(trainer, state, train_d, val_d, tc.epochs, on_epoch=on_epoch, should_stop=stop)
    ckpt.save(state)
    ckpt.close()
    result = Result(state=state, trainer=trainer, rundir=rundir, history=history, stopped=False, exit_code=0,
                    train_seconds=time.time() - t_train, seeds=list(seeds), monitor=monitor)
    if result.epochs_done < tc.epochs:
        monitor.finish()
        result.stopped = True
        result.exit_code, line = preemption.stop_exit(getattr(stop, "stopped_by", None), result.steps_done,
                                                      resumed_at_step, config.run.max_restarts)
        if lead:
            log(f"stopped at epoch {result.epochs_done}/{tc.epochs}, step {result.steps_done}; checkpoint saved, "
                f"resume with --config.run.name={rundir.path.name} --config.run.resume=True")
            log(line)
    return result


def run_name() -> str | None:
    """The run directory this process trains (or tried to train) into, for error messages."""
    return str(_current["name"]) if _current.get("name") is not None else None


def release() -> None:
    """Gives up this process's run directory (a finished or stopped run); process exit does it too, but
    leaves the lock file naming the owner, which the next run then reports as stale."""
    if (held := _current.pop("lock", None)) is not None:
        held.release()


def record_failure(exc: BaseException) -> str | None:
    """Writes the traceback of a failed run to ``<run dir>/error.log``; returns its path (None if no run)."""
    path = _current.get("path")
    if path is None or not path.is_dir():
        return None
    text = "".join(traceback.format_exception(exc))
    if (ckpt := sys.modules.get("research.checkpoints")) and (late := ckpt.late_write_reports()):
        text += ("\nWhat orbax's other writes of the failed checkpoint reported after it had closed their event "
                 f"loop ({len(late)} reports, each shown once):\n" + "".join(dict.fromkeys(late)))
    try:
        (path / "error.log").write_text(text)
    except OSError:
        return None
    return str(path / "error.log")
