"""Command line: ``python -m research.train --config=experiments/ecg5000_conv1d.py [--config.a.b=v ...]``."""

from __future__ import annotations

import sys

from absl import app, logging
from ml_collections import config_flags

from research.errors import InputError

_CONFIG = config_flags.DEFINE_config_file("config", None, "Experiment config file (experiments/*.py).",
                                          lock_config=True)


def _headline(summary: dict) -> str:
    if "stopped_at_epoch" in summary:
        return f"stopped at epoch {summary['stopped_at_epoch']}: {summary['run_dir']}"
    parts = [f"{summary['experiment']}: threshold={summary['threshold']['value']:.5g}",
             f"flagged={summary['n_flagged']}/{summary['n_test']}"]
    test = summary.get("test")
    if test:
        parts += [f"roc_auc={test['roc_auc']:.4f}", f"pr_auc={test['pr_auc']:.4f}", f"f1={test['f1']:.4f}",
                  f"confusion={test['confusion']}"]
    return " ".join(parts) + f" ({summary['seconds_total']:.1f} s) -> {summary['run_dir']}"


def main(argv) -> None:
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {' '.join(argv[1:])}")
    if _CONFIG.value is None:
        raise app.UsageError("--config=experiments/<name>.py is required")
    from research import experiment  # imported late so --help stays fast

    logging.set_verbosity(logging.WARNING)  # orbax logs every save at INFO

    try:
        summary = experiment.run(_CONFIG.value)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    print(_headline(summary))


if __name__ == "__main__":
    app.run(main)
