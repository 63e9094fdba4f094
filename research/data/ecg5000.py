"""ECG5000 (UCR text format): column 0 is the class, then 140 samples. Class 1 is the normal beat."""

from __future__ import annotations

import pathlib

import numpy as np

from research.config import with_defaults
from research.data import Dataset, check_finite
from research.data.sources import describe, expand
from research.errors import InputError
from research.paths import dataset_dir

LENGTH = 140


DEFAULTS: dict = {}  # no keys beyond the common data.* keys of research.config.base_config

def read_ucr(path: pathlib.Path, length: int = LENGTH) -> tuple[np.ndarray, np.ndarray]:
    """Labels and series from a UCR text file, with one-line errors for every malformed case."""
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if not path.read_text().strip():
        raise InputError(f"{path}: file is empty")
    try:
        table = np.loadtxt(path, dtype=np.float64, ndmin=2)
    except ValueError as exc:
        raise InputError(f"{path}: not a numeric table ({str(exc).splitlines()[0]})") from None
    if table.shape[1] != length + 1:
        raise InputError(f"{path}: expected {length + 1} columns (label + {length} values), found {table.shape[1]}")
    check_finite(table, str(path))
    return table[:, 0].astype(int), table[:, 1:].astype(np.float32)


def score_files(cfg) -> Dataset:
    """``research.score``: every row of the UCR file(s) of ``data.path`` (files, folders or globs) in the
    test split, labelled 1 = anomaly (class not 1); ids are ``<file stem>_<row>``."""
    xs, labels, ids = [], [], []
    for path in expand(cfg.path, (".txt",)):
        y, x = read_ucr(path)
        xs.append(x)
        labels.append((y != 1).astype(np.int32))
        ids += [f"{path.stem}_{i}" for i in range(len(x))]
    return Dataset(train={"x": np.zeros((0, LENGTH), np.float32)}, test={"x": np.concatenate(xs)},
                   test_labels=np.concatenate(labels), test_ids=ids, kind="1d",
                   axis=np.arange(LENGTH, dtype=np.float32), axis_label="sample",
                   meta={"path": describe(cfg.path), "n_test": len(ids), "score_only": True})


def load(cfg) -> Dataset:
    cfg = with_defaults(cfg, DEFAULTS)
    if cfg.score_only and cfg.path:
        return score_files(cfg)
    folder = pathlib.Path(cfg.path or dataset_dir("ecg5000", cfg.root))
    train_path, test_path = folder / "ECG5000_TRAIN.txt", folder / "ECG5000_TEST.txt"
    train_labels, train_x = read_ucr(train_path)
    test_labels, test_x = read_ucr(test_path)
    normal = train_labels == 1
    if not normal.any():
        raise InputError(f"{train_path}: no normal (class 1) rows to train on")
    # UCR TEST uses classes 1..5; the shared copy uses 1 = normal, 0 = abnormal. Both: anomaly = not 1.
    return Dataset(
        train={"x": train_x[normal]},
        test={"x": test_x},
        test_labels=(test_labels != 1).astype(np.int32),
        test_ids=[f"test_{i}" for i in range(len(test_x))],
        kind="1d",
        axis=np.arange(LENGTH, dtype=np.float32),
        axis_label="sample",
        meta={"train_file": str(train_path), "test_file": str(test_path),
              "n_train_normal": int(normal.sum()), "n_test": int(len(test_x))},
    )
