"""Shared by the benchmark workers: device choice, config and data loading, the project's trainer,
and one JSON result line per worker process (with its peak resident memory).

Every worker runs in its own process (``python -m bench.<worker>``) so that its peak RSS is its own
and no framework's thread pool spins while another one is being timed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time

RESULT_PREFIX = "BENCH_RESULT "
START = time.perf_counter()


def setup_device(device: str) -> None:
    """Must run before jax/torch are imported: 'cpu' hides any GPU from both frameworks."""
    if device == "cpu":
        os.environ["JAX_PLATFORMS"] = "cpu"
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    else:
        os.environ.pop("JAX_PLATFORMS", None)


def worker_args(description: str, extra=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--config", required=True, help="experiment config file (experiments/*.py)")
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="config override, e.g. train.batch_size=32 (repeatable)")
    if extra:
        extra(p)
    args = p.parse_args()
    setup_device(args.device)
    return args


def load_config(path: str, overrides=()):
    """``experiments/x.py[:variant]`` with ``key=value`` overrides (:func:`research.cli.load_config`)."""
    from research.cli import load_config as load

    return load(path, overrides)


def prepare(config):
    """The experiment's own data pipeline (loader, validation split, scaling)."""
    from research.config import resolve
    from research.experiment import prepare_data

    ds, _ = prepare_data(resolve(config))
    return ds


def project_trainer(config, n_train: int):
    """The trainer exactly as ``research.experiment.run`` builds it."""
    from research.models import build_model
    from research.training import Trainer

    return Trainer.from_config(build_model(config.model), config.train, n_train // config.train.batch_size)


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def emit(result: dict) -> None:
    result = dict(result, peak_rss_mib=round(peak_rss_mib(), 1), process_seconds=round(time.perf_counter() - START, 2))
    sys.stdout.write(RESULT_PREFIX + json.dumps(result) + "\n")
    sys.stdout.flush()
