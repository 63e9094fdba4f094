"""Any table of samples: ``.npy`` / ``.npz`` / CSV / Parquet / whitespace-separated ``.txt`` (the UCR
archive's format), one row per sample (``data.name='arrays'``).

A row is a 1-D signal or a flattened image (``data.shape`` gives it back its shape, e.g. ``(28, 28)``).
Its values are every numeric column except the label and id columns (or the ``data.columns`` listed);
a Parquet/CSV table may instead hold one list column with the whole row. ``.npz`` files hold arrays:
``data.x_key`` the samples, ``data.label_column`` / ``data.id_column`` name arrays beside it. A CSV
file whose first line is all numbers has no header; its columns are then called ``0``, ``1``, ...
(so ``data.label_column='0'`` is the first column, as in the UCR archive); ``.txt`` files have no
header.

Splits: with ``data.test_path`` the training split is the normal rows of ``data.path`` (all rows
without a label column) and the test split is every row of ``data.test_path``. Without it, a seeded
``data.test_fraction`` of the normal rows and every anomalous row form the test split. A row is
normal when its label is one of ``data.normal_labels`` (compared as numbers when both are numbers);
test labels are 1 = anomaly, 0 = normal, or unknown when the test rows carry no label column.
"""

from __future__ import annotations

import pathlib

import numpy as np
from ml_collections.config_dict import placeholder

from research.config import with_defaults
from research.data import Dataset, check_finite
from research.data.sources import describe, expand
from research.errors import InputError

SUFFIXES = (".npy", ".npz", ".csv", ".tsv", ".txt", ".parquet", ".pq")


DEFAULTS = {  # the loader's data.* keys (beside data.name, root, path, val_fraction, scaling, limit)
    "test_path": placeholder(str),  # test file(s); unset = split data.path by label
    "label_column": placeholder(str),  # column (npz: array) holding each row's label; unset = no labels
    "normal_labels": ("0",),  # label values of normal rows (numbers compare as numbers: '1' == 1.0)
    "id_column": placeholder(str),  # column (npz: array) with each row's id; unset = <file stem>_<row>
    "columns": (),  # feature columns; empty = every numeric column but the label and id columns
    "x_key": "x",  # .npz: the array of samples
    "shape": (),  # shape of one sample, e.g. (28, 28) for images; empty = the flat row
    "test_fraction": 0.2,  # without data.test_path: share of the normal rows held out for the test split
    "split_seed": 0,  # seed of that hold-out
}


def _same(value, normal) -> bool:
    try:
        return float(value) == float(normal)
    except (TypeError, ValueError):
        return str(value) == str(normal)


def is_normal(labels: np.ndarray, normal_labels) -> np.ndarray:
    normal_labels = tuple(normal_labels) if not isinstance(normal_labels, str) else (normal_labels,)
    if not normal_labels:
        raise InputError("config key data.normal_labels: empty; name the label value(s) of normal rows")
    uniq = {v: any(_same(v, n) for n in normal_labels) for v in np.unique(labels).tolist()}
    return np.array([uniq[v] for v in labels.tolist()], bool)


def _csv_table(path: pathlib.Path):
    import pyarrow.csv as pacsv

    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, newline="") as f:
        first = f.readline().strip()
    if not first:
        raise InputError(f"{path}: file is empty")
    fields = first.split(delimiter)
    try:
        [float(v) for v in fields]
        names = [str(i) for i in range(len(fields))]
    except ValueError:
        names = None
    try:
        return pacsv.read_csv(path, read_options=pacsv.ReadOptions(column_names=names),
                              parse_options=pacsv.ParseOptions(delimiter=delimiter))
    except Exception as exc:  # pyarrow.lib.ArrowInvalid and friends: ragged rows, bad quoting
        raise InputError(f"{path}: not a readable table ({str(exc).splitlines()[0]})") from None


def _table_columns(path: pathlib.Path) -> dict[str, np.ndarray]:
    """Columns of a CSV/TSV/Parquet file; a list column becomes a 2-D array."""
    if path.suffix.lower() in (".parquet", ".pq"):
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow.lib.ArrowInvalid: not Parquet, truncated
            raise InputError(f"{path}: not a readable Parquet file ({str(exc).splitlines()[0]})") from None
    else:
        table = _csv_table(path)
    out = {}
    for name in table.column_names:
        col = table.column(name)
        if col.type.__class__.__name__ in ("ListType", "LargeListType", "FixedSizeListType"):
            rows = col.to_pylist()
            if len({len(r) for r in rows if r is not None}) > 1 or any(r is None for r in rows):
                raise InputError(f"{path}: list column {name!r} has rows of different lengths or missing rows")
            out[name] = np.asarray(rows, np.float64)
        else:
            out[name] = col.to_numpy(zero_copy_only=False)
    return out


def _columns(path: pathlib.Path, cfg) -> dict[str, np.ndarray]:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            x = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npy file ({str(exc).splitlines()[0]})") from None
        if x.ndim < 2:
            raise InputError(f"{path}: array of shape {x.shape}; expected one row per sample (2-D or more)")
        if x.ndim == 2 and cfg.label_column is not None:
            return {str(i): x[:, i] for i in range(x.shape[1])}
        return {cfg.x_key or "x": x}
    if suffix == ".npz":
        try:
            with np.load(path, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        except (ValueError, OSError, EOFError) as exc:
            raise InputError(f"{path}: not a readable .npz file ({str(exc).splitlines()[0]})") from None
    if suffix in (".csv", ".tsv", ".parquet", ".pq"):
        return _table_columns(path)
    if suffix == ".txt":
        try:
            table = np.loadtxt(path, dtype=np.float64, ndmin=2)
        except ValueError as exc:
            raise InputError(f"{path}: not a numeric table ({str(exc).splitlines()[0]})") from None
        if table.size == 0:
            raise InputError(f"{path}: file is empty")
        return {str(i): table[:, i] for i in range(table.shape[1])}
    raise InputError(f"{path}: unknown file type {path.suffix!r}; expected one of {SUFFIXES}")


def read_rows(path: pathlib.Path, cfg) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Samples ``(N, ...)`` float32, labels (or None) and ids of one file."""
    cols = _columns(path, cfg)
    label_key, id_key = cfg.label_column, cfg.id_column
    for key, what in ((label_key, "label_column"), (id_key, "id_column")):
        if key is not None and key not in cols:
            raise InputError(f"config key data.{what}: no column {key!r} in {path} (columns: {_short(cols)})")
    labels = None if label_key is None else np.asarray(cols[label_key])
    ids = ([str(v) for v in cols[id_key]] if id_key is not None else None)
    x_key = cfg.x_key or "x"
    if path.suffix.lower() == ".npz" or (x_key in cols and cols[x_key].ndim > 1):
        if x_key not in cols:
            raise InputError(f"config key data.x_key: no array {x_key!r} in {path} (arrays: {_short(cols)})")
        x = np.asarray(cols[x_key])
    else:
        wanted = list(cfg.columns or [k for k in cols if k not in (label_key, id_key)])
        missing = [k for k in wanted if k not in cols]
        if missing:
            raise InputError(f"config key data.columns: no column {missing[0]!r} in {path} (columns: {_short(cols)})")
        parts = []
        for k in wanted:
            col = np.asarray(cols[k])
            if col.dtype.kind not in "biuf":
                raise InputError(f"{path}: column {k!r} is not numeric ({col.dtype}); list it as data.label_column "
                                 "or data.id_column, or leave it out of data.columns")
            parts.append(col.reshape(len(col), -1))
        if not parts:
            raise InputError(f"{path}: no feature columns")
        x = np.concatenate(parts, axis=1)
    if x.dtype.kind not in "biuf":
        raise InputError(f"{path}: samples are not numeric ({x.dtype})")
    n = len(x)
    if labels is not None and len(labels) != n:
        raise InputError(f"{path}: {len(labels)} labels for {n} rows")
    x = x.astype(np.float32)
    check_finite(x, str(path))
    return x, labels, ids or [f"{path.stem}_{i}" for i in range(n)]


def _short(cols) -> str:
    names = list(cols)
    return ", ".join(names[:8]) + (f", ... ({len(names)} in all)" if len(names) > 8 else "")


def read_all(value, cfg, key: str) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """Rows of every file of ``value`` (files, folders, globs), concatenated in file order."""
    xs, labels, ids = [], [], []
    for path in expand(value, SUFFIXES, key=key):
        x, y, i = read_rows(path, cfg)
        if xs and x.shape[1:] != xs[0].shape[1:]:
            raise InputError(f"{path}: rows of shape {x.shape[1:]}, the files before have {xs[0].shape[1:]}")
        if xs and (y is None) != (labels[0] is None):
            raise InputError(f"{path}: a label column in some files and not in others")
        xs.append(x)
        labels.append(y)
        ids += i
    y = None if labels[0] is None else np.concatenate(labels)
    return np.concatenate(xs), y, ids


def _shaped(x: np.ndarray, shape, source: str) -> np.ndarray:
    shape = tuple(int(s) for s in shape or ())
    if not shape:
        return x.reshape(len(x), -1) if x.ndim > 2 and x.shape[-1] == 1 else x
    if int(np.prod(shape)) != int(np.prod(x.shape[1:])):
        raise InputError(f"config key data.shape: {shape} does not hold the {int(np.prod(x.shape[1:]))} values "
                         f"per row of {source}")
    return x.reshape(len(x), *shape)


def load(cfg) -> Dataset:
    cfg = with_defaults(cfg, DEFAULTS)
    if not cfg.path:
        raise InputError("config key data.path: the arrays loader needs the file(s) to read")
    x, labels, ids = read_all(cfg.path, cfg, "data.path")
    normal = np.ones(len(x), bool) if labels is None else is_normal(labels, cfg.normal_labels)
    test_path = cfg.test_path
    if cfg.score_only:  # research.score: every row of data.path, in file order
        train_idx, test_path = np.zeros(0, int), None
        test_x, test_ids = x, ids
        test_labels = None if labels is None else (~normal).astype(np.int32)
    elif test_path:
        train_idx = np.flatnonzero(normal)
        test_x, test_y, test_ids = read_all(test_path, cfg, "data.test_path")
        test_labels = None if test_y is None else (~is_normal(test_y, cfg.normal_labels)).astype(np.int32)
    else:
        rng = np.random.default_rng(int(cfg.split_seed))
        normal_idx = rng.permutation(np.flatnonzero(normal))
        n_hold = int(round(float(cfg.test_fraction) * len(normal_idx)))
        held = normal_idx[:n_hold]
        train_idx = np.sort(normal_idx[n_hold:])
        test_idx = np.sort(np.concatenate([held, np.flatnonzero(~normal)])).astype(int)
        test_x, test_ids = x[test_idx], [ids[i] for i in test_idx]
        test_labels = None if labels is None else (~normal[test_idx]).astype(np.int32)
    if len(train_idx) == 0 and not cfg.score_only:
        raise InputError(f"{describe(cfg.path)}: no normal rows to train on (data.normal_labels="
                         f"{tuple(cfg.normal_labels)})")
    if len(test_x) == 0:
        raise InputError(f"{describe(test_path or cfg.path)}: no rows for the test split "
                         "(set data.test_fraction > 0 or data.test_path)")
    if test_x.shape[1:] != x.shape[1:]:
        raise InputError(f"{describe(test_path)}: rows of shape {test_x.shape[1:]}, the training rows have {x.shape[1:]}")
    shape = cfg.shape
    train_x, test_x = _shaped(x[train_idx], shape, describe(cfg.path)), _shaped(test_x, shape, describe(test_path or cfg.path))
    image = train_x.ndim == 3
    return Dataset(
        train={"x": train_x},
        test={"x": test_x},
        test_labels=test_labels,
        test_ids=test_ids,
        train_ids=[ids[i] for i in train_idx],
        kind="image" if image else "1d",
        axis=None if image else np.arange(train_x.shape[1], dtype=np.float32),
        axis_label="pixel" if image else "index",
        meta={"path": describe(cfg.path), "test_path": describe(test_path) if test_path else None,
              "n_train": int(len(train_x)), "n_test": int(len(test_x)),
              "n_test_anomalous": None if test_labels is None else int(test_labels.sum()),
              "score_only": bool(cfg.score_only)},
    )
