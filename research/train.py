"""Command line: ``python -m research.train --config=experiments/ecg5000.py:conv1d [--config.a.b=v ...]``.

``config.runner`` says what runs (:mod:`research.runners`); every runner trains through
:func:`research.pipeline.train`. Inside a SLURM job an unnamed run is named after the job (a
requeued job resumes from it); SIGUSR1, SIGTERM or the stop file stop it before the next compiled
call with a checkpoint (exit 75 = "requeue me", see :mod:`research.preemption`); ``srun`` with
several tasks trains data-parallel over all processes.

Bad input never ends in a traceback wall: config files, keys and values that are wrong, and data
errors (:class:`research.errors.InputError`), print one ``error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import sys

from absl import app, logging

from research import preemption
from research.cli import CONFIG, PRINT_RUN_DIR, describe, fail, first_line, parse_flags
from research.errors import InputError

_STOP: preemption.StopFlag | None = None  # installed before the flags are read (see __main__)


def main(argv) -> None:
    if len(argv) > 1:
        fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = CONFIG.value
    except OSError as exc:
        fail(first_line(exc))
    if PRINT_RUN_DIR.value:
        _print_run_dir(config)
        return
    import jax  # imported late (with the rest) so --help stays fast

    from research import pipeline, runners, startup

    # orbax logs every save at INFO and a failed write as several ERROR tracebacks from its threads; the
    # failure itself ends this command in one line, its traceback in <run dir>/error.log (with what the
    # failed write's leftover threads reported, research.checkpoints)
    logging.set_verbosity(logging.FATAL)
    stop = _STOP or preemption.StopFlag().install()
    try:
        startup.begin(config)
        runner = runners.get(config.runner)
        summary = runner.run(config, should_stop=stop)
    except InputError as exc:
        stop.ignore()
        pipeline.record_failure(exc)
        pipeline.release()
        fail(str(exc))
    except Exception as exc:  # disk full, permission denied, a damaged checkpoint, device memory: one line
        stop.ignore()
        where = pipeline.record_failure(exc)
        pipeline.release()
        fail(describe(exc, pipeline.run_name()) + (f" (traceback in {where})" if where else ""))
    stop.ignore()  # training is over: a signal from now on must not end the process
    pipeline.release()
    if "stopped_at_epoch" in summary:
        if jax.process_index() == 0:
            print(f"stopped at epoch {summary['stopped_at_epoch']}, step {summary['stopped_at_step']}: "
                  f"{summary['run_dir']}")
        sys.exit(summary["exit_code"])
    if jax.process_index() == 0:
        print(runner.headline(summary))


def _print_run_dir(config) -> None:
    import pathlib

    from research.slurm import job_run_name

    name = config.run.name or job_run_name()
    if name is None:
        fail("--print_run_dir: the run has no name yet (set --config.run.name, or run inside a SLURM job)")
    print(pathlib.Path(config.run.root) / config.experiment / name)


if __name__ == "__main__":
    _STOP = preemption.StopFlag().install()
    app.run(main, flags_parser=parse_flags)
