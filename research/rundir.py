"""A run's directory: resolved config, git commit, seeds, JSONL epoch log, metrics, scores, plots."""

from __future__ import annotations

import csv
import datetime
import fcntl
import json
import os
import pathlib
import socket
import subprocess
from typing import Any, Iterable, Mapping

import numpy as np

from research.errors import InputError
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
                 create: bool = True):
        name = name or datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
        self.path = pathlib.Path(root) / experiment / name
        self.plots = self.path / "plots"
        self.checkpoints = self.path / "checkpoints"
        self.writer = writer
        if create:
            self.create()

    def create(self) -> None:
        if self.writer:
            self.plots.mkdir(parents=True, exist_ok=True)
            self.checkpoints.mkdir(parents=True, exist_ok=True)

    def read_json(self, name: str):
        path = self.path / name
        return json.loads(path.read_text()) if path.is_file() else None

    def write_json(self, name: str, obj: Any) -> pathlib.Path:
        path = self.path / name
        if self.writer:
            write_json(path, obj)
        return path

    def update_json(self, name: str, fields: Mapping) -> pathlib.Path:
        """Adds (or replaces) top-level fields of a JSON object file, e.g. ``run.json`` as the run goes."""
        path = self.path / name
        if self.writer:
            obj = json.loads(path.read_text()) if path.exists() else {}
            write_json(path, {**obj, **fields})
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


class RunLock:
    """Exclusive ownership of a run directory: ``fcntl.flock`` on ``run.lock``, which names the owner.

    The kernel drops the lock when the owning process exits in any way (SIGKILL included), so a lock
    file whose owner is gone is stale and is simply taken over. Where the filesystem has no ``flock``
    the recorded pid and host decide: a live pid on this host owns the run.
    """

    def __init__(self, directory: pathlib.Path):
        self.path = pathlib.Path(directory) / "run.lock"
        self.fd: int | None = None

    def owner(self) -> str:
        try:
            pid, host = self.path.read_text().split()[:2]
            return f"pid {pid} on {host}"
        except (OSError, ValueError):
            return "another process"

    def _recorded_alive(self) -> bool:
        try:
            pid, host = self.path.read_text().split()[:2]
        except (OSError, ValueError):
            return False
        if host != socket.gethostname():
            return True  # cannot look at another host's processes: assume it is alive
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return False
        except (PermissionError, ValueError):
            return True
        return int(pid) != os.getpid()

    def acquire(self, run_name: str) -> str | None:
        """Takes the lock or refuses in one line; returns the stale owner it replaced, if any."""
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise InputError(f"run {run_name}: in use by {self.owner()} (one run per run directory)") from None
        except OSError:  # no flock on this filesystem
            if self._recorded_alive():
                os.close(fd)
                raise InputError(f"run {run_name}: in use by {self.owner()} (one run per run directory)") from None
        stale = self.owner() if os.fstat(fd).st_size else None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} {socket.gethostname()}\n".encode())
        os.fsync(fd)
        self.fd = fd
        return stale

    def release(self) -> None:
        """Unlocks and empties the lock file: a lock file that still names an owner was never released."""
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None
