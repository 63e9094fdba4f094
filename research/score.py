"""Command line: score new data with a finished run, nothing retrained.

    python -m research.score --run=runs/<experiment>/<name> [NEW ...] [--data.path=NEW] [--data.<key>=V ...]
        [--split=test|all] [--name=NAME] [--refit-threshold]

Reads the run's ``config.json``, best parameters, scaler and threshold; reads ``NEW`` (files, folders
or globs: as arguments, or comma-separated in ``--data.path``) with the run's loader and preprocessing
(``--data.*`` overrides any data key, e.g. the label column of a new table); writes
``<run>/scores/<NAME>/``: ``scores.csv`` (the run's columns), ``metrics.json`` when the data has
labels, ``scoring.json`` (what was scored with which threshold), plots, and for spectra the regions,
figures and ``regions_metadata.json``. ``--split=all`` (the default when new data is given) scores
every sample of the new data, labelled where the loader knows normal from anomalous; ``--split=test``
(the default without new data) scores the loader's test split exactly as the run did. Bad input: one
``error: ...`` line, exit status 2.
"""

from __future__ import annotations

import sys

from research.cli import fail, parse_value

OPTIONS = ("run", "name", "split")


def parse(argv: list[str]) -> dict:
    opts = {"run": None, "name": None, "split": None, "refit_threshold": False, "overrides": {}}
    paths, args = [], list(argv)
    while args:
        arg = args.pop(0)
        if arg in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        if arg == "--refit-threshold":
            opts["refit_threshold"] = True
            continue
        if not arg.startswith("--"):
            paths.append(arg)
            continue
        key, eq, value = arg[2:].partition("=")
        if not eq:
            if key not in OPTIONS or not args:
                fail(f"--{key}: expected --{key}=VALUE (python -m research.score --help)")
            value = args.pop(0)
        if key in OPTIONS:
            opts[key] = value
        elif "." in key:
            opts["overrides"][key] = parse_value(value)
        else:
            fail(f"--{key}: unknown option (python -m research.score --help)")
    if not opts["run"]:
        fail("--run=RUN_DIR is required (python -m research.score --help)")
    if paths:
        if "data.path" in opts["overrides"]:
            fail("new data given twice: as arguments and as --data.path")
        opts["overrides"]["data.path"] = ",".join(paths)
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = parse(sys.argv[1:] if argv is None else argv)
    import os
    import pathlib

    path = pathlib.Path(opts["run"]).expanduser()  # the cheap checks, before JAX is imported
    if not path.is_dir():
        fail(f"{path}: no such run directory")
    for name in ("config.json", "metrics.json"):
        if not (path / name).is_file():
            fail(f"{path / name}: not found; is {path} a finished run directory?")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    from research.apply import load_run
    from research.cli import describe
    from research.errors import InputError

    logging.set_verbosity(logging.WARNING)
    from research.checkpoints import keep_closed_loop_reports

    keep_closed_loop_reports()  # a damaged checkpoint's other reads report to a closed event loop
    try:
        run = load_run(path)
        run.score_data(opts["overrides"], name=opts["name"], split=opts["split"],
                       refit_threshold=opts["refit_threshold"])
    except InputError as exc:
        _exit_now(str(exc))
    except Exception as exc:  # disk full, permission denied, device memory: one line too
        _exit_now(describe(exc, str(path)))


def _exit_now(message: str) -> None:
    """``error: <message>`` and exit 2 at once, stderr muted first: the reader threads of a damaged
    checkpoint would print their tracebacks during the interpreter's shutdown."""
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    real = os.dup(2)
    os.dup2(os.open(os.devnull, os.O_WRONLY), 2)
    os.write(real, f"error: {message}\n".encode())
    os._exit(2)


if __name__ == "__main__":
    main()
