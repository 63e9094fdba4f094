"""A run's directory: resolved config, git commit, seeds, JSONL epoch log, metrics, scores, plots."""

from __future__ import annotations

import csv
import datetime
import json
import os
import pathlib
import subprocess
from typing import Any, Iterable, Mapping

import numpy as np

from research.paths import REPO_ROOT


def unique_path(path: str | os.PathLike) -> pathlib.Path:
    """``name.png``, else ``name_1.png``, ``name_2.png``, ...: never overwrites an existing file."""
    path = pathlib.Path(path)
    if not path.exists():
        return path
    i = 1
    while (candidate := path.with_name(f"{path.stem}_{i}{path.suffix}")).exists():
        i += 1
    return candidate


def git_info() -> dict:
    def git(*args):
        try:
            out = subprocess.run(["git", *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10)
            return out.stdout.strip() if out.returncode == 0 else None
        except (OSError, subprocess.SubprocessError):
            return None
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": git("rev-parse", "HEAD"), "dirty": bool(status) if status is not None else None}


def _jsonable(value: Any):
    if isinstance(value, (np.generic,)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, pathlib.Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> None:
    pathlib.Path(path).write_text(json.dumps(obj, indent=2, default=_jsonable) + "\n")


class RunDir:
    """``<root>/<experiment>/<name>/`` with ``plots/`` and ``checkpoints/`` inside.

    Only the lead process (``jax.process_index() == 0``) should write; others get ``writer=False``.
    """

    def __init__(self, root: str | os.PathLike, experiment: str, name: str | None = None, writer: bool = True,
                 checkpoints: bool = True):
        name = name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.path = pathlib.Path(root) / experiment / name
        self.plots = self.path / "plots"
        self.checkpoints = self.path / "checkpoints"
        self.writer = writer
        if writer:
            self.plots.mkdir(parents=True, exist_ok=True)
            if checkpoints:
                self.checkpoints.mkdir(parents=True, exist_ok=True)

    def write_json(self, name: str, obj: Any) -> pathlib.Path:
        path = self.path / name
        if self.writer:
            write_json(path, obj)
        return path

    def append_jsonl(self, name: str, record: Mapping) -> None:
        if self.writer:
            with open(self.path / name, "a") as f:
                f.write(json.dumps(record, default=_jsonable) + "\n")

    def write_csv(self, name: str, columns: Mapping[str, Iterable]) -> pathlib.Path:
        path = self.path / name
        if self.writer:
            keys = list(columns)
            rows = zip(*(list(columns[k]) for k in keys))
            with open(path, "w", newline="") as f:
                w = csv.writer(f)
                w.writerow(keys)
                for row in rows:
                    w.writerow([_jsonable(v) if isinstance(v, np.generic) else v for v in row])
        return path

    def plot_path(self, name: str) -> pathlib.Path:
        return unique_path(self.plots / name)
