"""Command line: score new data with a finished run, nothing retrained.

    python -m research.score --run=runs/<experiment>/<name> --data.path=NEW [--data.<key>=V ...]
        [--split=test|all] [--name=NAME] [--refit-threshold]

Reads the run's ``config.json``, best parameters, scaler and threshold; reads ``NEW`` with the run's
loader and preprocessing (``--data.*`` overrides any data key, e.g. the label column of a new table);
writes ``<run>/scores/<NAME>/``: ``scores.csv`` (the run's columns), ``metrics.json`` when the data has
labels, ``scoring.json`` (what was scored with which threshold), plots, and for spectra the regions,
figures and ``regions_metadata.json``. ``--split=all`` (the default when ``--data.path`` is given)
scores every sample of the new data, labelled where the loader knows normal from anomalous;
``--split=test`` (the default without ``--data.path``) scores the loader's test split exactly as the run
did. Bad input: one ``error: ...`` line, exit status 2.
"""

from __future__ import annotations

import sys

USAGE = ("usage: python -m research.score --run=RUN_DIR [--data.path=PATHS] [--data.KEY=VALUE ...] "
         "[--split=test|all] [--name=NAME] [--refit-threshold]")


def _fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(2)


def parse(argv: list[str]) -> dict:
    opts = {"run": None, "name": None, "split": None, "refit_threshold": False, "overrides": {}}
    for arg in argv:
        if arg in ("-h", "--help"):
            print(__doc__)
            sys.exit(0)
        if arg == "--refit-threshold":
            opts["refit_threshold"] = True
            continue
        if not arg.startswith("--") or "=" not in arg:
            _fail(f"{arg}: expected --key=value\n{USAGE}")
        key, value = arg[2:].split("=", 1)
        if key in ("run", "name", "split"):
            opts[key] = value
        elif "." in key:
            from research.apply import parse_value

            opts["overrides"][key] = parse_value(value)
        else:
            _fail(f"--{key}: unknown option\n{USAGE}")
    if not opts["run"]:
        _fail(f"--run=RUN_DIR is required\n{USAGE}")
    return opts


def main(argv: list[str] | None = None) -> None:
    opts = parse(sys.argv[1:] if argv is None else argv)
    import os
    import pathlib

    path = pathlib.Path(opts["run"]).expanduser()  # the cheap checks, before JAX is imported
    if not path.is_dir():
        _fail(f"{path}: no such run directory")
    for name in ("config.json", "metrics.json"):
        if not (path / name).is_file():
            _fail(f"{path / name}: not found; is {path} a finished run directory?")

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from absl import logging

    from research.apply import load_run
    from research.errors import InputError

    logging.set_verbosity(logging.WARNING)
    try:
        run = load_run(opts["run"])
        run.score_data(opts["overrides"], name=opts["name"], split=opts["split"],
                       refit_threshold=opts["refit_threshold"])
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        sys.stdout.flush()
        os._exit(2)  # at once: orbax's background threads would print their shutdown noise


if __name__ == "__main__":
    main()
