"""Command line: ``python -m research.train --config=experiments/ecg5000_conv1d.py [--config.a.b=v ...]``.

Inside a SLURM job an unnamed run is named after the job (a requeued job resumes from it); SIGUSR1
or SIGTERM stop it at the next epoch boundary with a checkpoint (exit 75 = "requeue me", see
:mod:`research.preemption`); ``srun`` with several tasks trains data-parallel over all processes.

Bad input never ends in a traceback wall: config files, keys and values that are wrong, and data
errors (:class:`research.errors.InputError`), print one ``error: ...`` line and exit with status 2.
"""

from __future__ import annotations

import os
import re
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from research.errors import InputError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py).",
                                          lock_config=True)
_PRINT_RUN_DIR = flags.DEFINE_bool("print_run_dir", False, "Print the run directory this command would "
                                   "use and exit (batch scripts send their logs there).")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def _first_line(exc: BaseException) -> str:
    text = str(exc.args[0]) if exc.args else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


def _config_path(argv: list[str]) -> str | None:
    for i, arg in enumerate(argv):
        if arg.startswith("--config="):
            return arg.split("=", 1)[1]
        if arg == "--config" and i + 1 < len(argv):
            return argv[i + 1]
    return None


def parse_flags(argv: list[str]) -> list[str]:
    """absl flag parsing with one-line errors for bad config files and unknown or mistyped keys."""
    path = _config_path(argv)
    if path is None and not any(a in ("--help", "--helpfull", "-h") for a in argv):
        _fail("--config=experiments/<name>.py is required")
    if path is not None and not os.path.isfile(path.split(":")[0]):
        _fail(f"{path}: config file not found")
    try:
        return flags.FLAGS(argv)
    except (KeyError, AttributeError) as exc:
        text = str(exc.args[0]) if exc.args else str(exc)
        key = (re.findall(r"'([A-Za-z0-9_]+)", text) or ["?"])[0]
        hint = re.search(r'Did you mean "([^"]+)"', text)
        culprit = [a.split("=")[0] for a in argv[1:]
                   if a.startswith("--config.") and key in a.split("=")[0].split(".")]
        _fail(f"{culprit[0] if culprit else '--config'}: unknown config key {key!r}"
              + (f" (did you mean {hint.group(1)!r}?)" if hint else ""))
    except (flags.Error, ValueError, TypeError) as exc:
        _fail(_first_line(exc))
    except Exception as exc:  # errors raised while executing the config file itself
        _fail(f"{path}: {_first_line(exc)}")
    return []


def _headline(summary: dict) -> str:
    if "stopped_at_epoch" in summary:
        return f"stopped at epoch {summary['stopped_at_epoch']}: {summary['run_dir']}"
    parts = [f"{summary['experiment']}: threshold={summary['threshold']['value']:.5g}",
             f"flagged={summary['n_flagged']}/{summary['n_test']}"]
    test = summary.get("test")
    if test:
        parts += [f"roc_auc={test['roc_auc']:.4f}", f"pr_auc={test['pr_auc']:.4f}", f"f1={test['f1']:.4f}",
                  f"confusion={test['confusion']}"]
    members = summary.get("members")
    if members:
        parts += [f"members: roc_auc={members['roc_auc']['mean']:.4f}±{members['roc_auc']['std']:.4f}",
                  f"f1={members['f1']['mean']:.4f}±{members['f1']['std']:.4f}"]
    return " ".join(parts) + f" ({summary['seconds_total']:.1f} s) -> {summary['run_dir']}"


def main(argv) -> None:
    if len(argv) > 1:
        _fail(f"unexpected arguments: {' '.join(argv[1:])}")
    try:
        config = _CONFIG.value
    except OSError as exc:
        _fail(_first_line(exc))
    if _PRINT_RUN_DIR.value:
        _print_run_dir(config)
        return
    import jax  # imported late (with the rest) so --help stays fast

    from research import distributed, experiment, preemption, slurm, startup

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO
    stop = preemption.StopFlag().install()
    try:
        startup.begin(config)
        distributed.maybe_initialize()
        slurm.apply_run_defaults(config)
        summary = experiment.run(config, should_stop=stop)
    except InputError as exc:
        _fail(str(exc))
    if jax.process_index() == 0:
        print(_headline(summary))
    if "stopped_at_epoch" in summary:
        sys.exit(stop.exit_code)


def _print_run_dir(config) -> None:
    import pathlib

    from research.slurm import job_run_name

    name = config.run.name or job_run_name()
    if name is None:
        _fail("--print_run_dir: the run has no name yet (set --config.run.name, or run inside a SLURM job)")
    print(pathlib.Path(config.run.root) / config.experiment / name)


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
