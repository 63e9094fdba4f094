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


FORMATS = ("in_memory", "sharded")  # config key data.format


def check_format(config) -> str:
    """``config.data.format``, or a one-line config error naming the choices."""
    value = config.data.format
    if value not in FORMATS:
        raise InputError(f"config key data.format: unknown format {value!r}; choose one of {FORMATS}")
    return value


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


def split_validation(ds: Dataset, fraction: float, seed: int) -> Dataset:
    """``ds`` with a seeded fraction of its (normal) training split held out for validation; fraction 0
    validates on the training split itself. A dataset with its own validation split comes back as it is."""
    if ds.val is not None:
        return ds
    n = len(ds.train["x"])
    if fraction <= 0:
        return dataclasses.replace(ds, val=dict(ds.train))
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise InputError(f"config key data.val_fraction: {fraction} leaves no training rows (of {n})")
    perm = np.random.default_rng(seed).permutation(n)
    return dataclasses.replace(ds, val={k: v[perm[:n_val]] for k, v in ds.train.items()},
                               train={k: v[perm[n_val:]] for k, v in ds.train.items()})


def report_skipped(ds: Dataset, log=print) -> None:
    """Every input file the loader skipped, one line each (they are also in ``run.json`` under ``data``)."""
    for entry in ds.meta.get("skipped") or ():
        log(f"skipped {entry}")


def load_splits(config, log=print, validation: bool = True) -> Dataset:
    """The dataset as a run sees it before scaling (skipped input files reported through ``log``): split
    for validation and limited to ``data.limit`` rows per split (seeded). ``research.score`` reads new data
    through this too (``validation=False``: the loader's splits as they are), so its splits equal a run's."""
    ds = load_dataset(config.data)
    report_skipped(ds, log)
    if not validation:
        return ds
    if len(ds.train["x"]) == 0:
        raise InputError(f"data {config.data.name}: the training split (normal samples) is empty")
    ds = split_validation(ds, config.data.val_fraction, config.seed)
    limit = config.data.limit
    test, test_labels, test_ids = ds.test, ds.test_labels, ds.test_ids
    if limit and len(test["x"]) > limit:
        keep = np.sort(np.random.default_rng(config.seed).choice(len(test["x"]), limit, replace=False))
        test = {k: v[keep] for k, v in test.items()}
        test_labels = None if test_labels is None else test_labels[keep]
        test_ids = None if test_ids is None else [test_ids[i] for i in keep]
    return dataclasses.replace(ds, train=limit_rows(ds.train, limit, config.seed),
                               val=limit_rows(ds.val, limit, config.seed), test=test, test_labels=test_labels,
                               test_ids=test_ids)


def prepare_data(config, log=print):
    """:func:`load_splits`, scaled by a :class:`~research.data.scaling.Scaler` fitted on the training
    split: ``(dataset, scaler)``."""
    from research.data.scaling import Scaler

    ds = load_splits(config, log)
    scaler = Scaler.fit(config.data.scaling, ds.train["x"], ds.train.get("mask"))
    train, val, test = ({**split, "x": scaler.transform(split["x"])} for split in (ds.train, ds.val, ds.test))
    return dataclasses.replace(ds, train=train, val=val, test=test), scaler
