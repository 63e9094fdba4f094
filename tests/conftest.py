"""Shared fixtures: the real data folder, and a clean environment for subprocess runs."""

import os
import pathlib
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from research.paths import data_root  # noqa: E402


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set RESEARCH_DATA)")
    return root


@pytest.fixture(scope="session")
def ecg_dir(data_dir) -> pathlib.Path:
    return data_dir / "ecg5000"


def run_cli(args, cwd=REPO, env=None, timeout=300):
    """Runs ``python -m research.train`` and returns the CompletedProcess (text mode)."""
    import subprocess

    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "research.train", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
