"""Shared fixtures: the real data folder, and a clean environment for subprocess runs."""

import os
import pathlib
import sys

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
os.environ.setdefault("JAX_PLATFORMS", "cpu")

from research.paths import data_root  # noqa: E402


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """``@pytest.mark.data("ecg5000", ...)``: skip, naming the folder, when the real data is not there."""
    for mark in item.iter_markers("data"):
        for folder in mark.args:
            real_folder(folder)


def real_folder(name: str) -> pathlib.Path:
    """``data_root() / name``, or a skip that names the missing folder."""
    path = data_root() / name
    if not path.is_dir():
        pytest.skip(f"real data not found: {path} (set RESEARCH_DATA)")
    return path


@pytest.fixture(scope="session")
def data_dir() -> pathlib.Path:
    root = data_root()
    if not root.is_dir():
        pytest.skip(f"real data not found at {root} (set RESEARCH_DATA)")
    return root


@pytest.fixture(scope="session")
def ecg_dir(data_dir) -> pathlib.Path:
    return real_folder("ecg5000")


@pytest.fixture(scope="session")
def sdss_galaxies(data_dir):
    """Three real galaxy spectra on one grid, median-normalised: ``(flux, ivar, mask)``."""
    from research.data import sdss_fits as sdss

    names = ["spec-0266-51602-0001.fits", "spec-0266-51630-0623.fits", "spSpec-51630-0266-637.fit"]
    files = [data_dir / "sdss" / n for n in names]
    if not all(f.is_file() for f in files):
        pytest.skip("SDSS files not found")
    grid = sdss.make_grid(3.59, 3.95)
    rows = [sdss.resample(sdss.read_spectrum(f), grid) for f in files]
    norm = [np.median(f[m]) for f, _, m in rows]
    x = np.stack([f / n for (f, _, _), n in zip(rows, norm)]).astype(np.float32)
    ivar = np.stack([iv * n * n for (_, iv, _), n in zip(rows, norm)]).astype(np.float32)
    return x, ivar, np.stack([m for *_, m in rows])


def run_cli(args, cwd=REPO, env=None, timeout=300):
    """Runs ``python -m research.train`` and returns the CompletedProcess (text mode)."""
    import subprocess

    full_env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    return subprocess.run([sys.executable, "-m", "research.train", *args], cwd=cwd, env=full_env,
                          capture_output=True, text=True, timeout=timeout)
