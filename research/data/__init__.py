"""Dataset container and loader registry: ``config.data.name`` picks a loader.

A loader takes ``config.data`` and returns a :class:`Dataset` whose ``train`` split holds only
normal samples. Arrays are float32 with the sample axis first; 1-D signals are ``(N, L)``,
images ``(N, H, W)``. Optional ``mask`` (True = use) and ``weights`` sit beside ``x``.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Callable

import numpy as np

from research.errors import InputError


@dataclasses.dataclass
class Dataset:
    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray]
    test_labels: np.ndarray | None = None  # 1 = anomaly, 0 = normal; None when unknown
    val: dict[str, np.ndarray] | None = None
    test_ids: list[str] | None = None
    train_ids: list[str] | None = None  # ids of the training rows, where the loader knows them
    kind: str = "1d"  # '1d' or 'image': how plots draw a sample
    axis: np.ndarray | None = None  # x values of a 1-D sample (wavelength, frequency, time)
    axis_label: str = "index"
    meta: dict = dataclasses.field(default_factory=dict)


LOADERS: dict[str, str] = {
    # name -> "module:function"; imported lazily so one dataset's dependencies never block another.
    "ecg5000": "research.data.ecg5000:load",
    "sdss": "research.data.sdss:load",
    "rf": "research.data.rf:load",
    "fsdd": "research.data.fsdd:load",
    "fashion_mnist": "research.data.fashion_mnist:load",
    "arrays": "research.data.arrays:load",
    "wav": "research.data.wav:load",
    "iq": "research.data.iq:load",
}


def register(name: str, target: str) -> None:
    LOADERS[name] = target


def load_dataset(data_config) -> Dataset:
    name = data_config.name
    if name not in LOADERS:
        raise InputError(f"config key data.name: unknown dataset {name!r}; choose one of {sorted(LOADERS)}")
    module, func = LOADERS[name].split(":")
    loader: Callable = getattr(importlib.import_module(module), func)
    return loader(data_config)


def check_finite(array: np.ndarray, source: str) -> None:
    """One-line error naming the source if the array holds NaN or infinite values."""
    bad = ~np.isfinite(array)
    if bad.any():
        first = np.argwhere(bad)[0]
        raise InputError(f"{source}: {int(bad.sum())} non-finite values (first at index {tuple(int(i) for i in first)})")


def limit_rows(arrays: dict[str, np.ndarray], limit: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    """A seeded random subset of at most ``limit`` rows (smoke runs); order is preserved."""
    n = len(next(iter(arrays.values())))
    if not limit or n <= limit:
        return arrays
    keep = np.sort(np.random.default_rng(seed).choice(n, limit, replace=False))
    return {k: v[keep] for k, v in arrays.items()}



def with_defaults(cfg, defaults: dict):
    """``config.data`` with every key it lacks at the loader's default."""
    import copy

    import ml_collections

    out = ml_collections.ConfigDict({k: copy.deepcopy(v) for k, v in defaults.items()})
    for key, value in dict(cfg).items():
        out[key] = value
    return out


def add_defaults(target, defaults: dict) -> None:
    """Adds a loader's ``DEFAULTS`` to a config's ``data`` block (keys already there stay)."""
    import copy

    for key, value in defaults.items():
        if key not in target:
            target[key] = copy.deepcopy(value)  # a placeholder keeps its type for command-line overrides
