"""Folders of WAV files, the label of each taken from its file name (``data.name='wav'``).

``data.pattern`` is a regular expression matched against the whole file stem; its group ``label``
is the label, and an optional group ``group`` (a speaker, a machine, a session) can keep whole
groups for the test split. A recording is read by :func:`research.data.fsdd.read_wav` (the one WAV
reader: truncated, unreadable, wrong-rate or non-mono files are skipped, listed on the console and in
``run.json``) and becomes the max-normalised binned amplitude spectrum of
:func:`research.data.fsdd.amplitude_spectrum`.

Splits: with ``data.test_groups`` the training split is the normal recordings of every other group
and the test split every recording of those groups; with ``data.test_path`` it is every recording
there; otherwise a seeded ``data.test_fraction`` of the normal recordings and every anomalous one.
Test labels: 0 when the label is one of ``data.normal_labels``, else 1.
"""

from __future__ import annotations

import re
import sys

import numpy as np
from ml_collections.config_dict import placeholder

from research.config import with_defaults
from research.data import Dataset
from research.data.fsdd import SAMPLE_RATE, check_bins, frequencies, spectrum_or_skip
from research.data.sources import describe, expand
from research.errors import InputError

FSDD_PATTERN = r"(?P<label>\d+)_(?P<group>[A-Za-z]+)_\d+"


DEFAULTS = {  # the loader's data.* keys (beside data.name, root, path, val_fraction, scaling, limit)
    "test_path": placeholder(str),  # WAVs of the test split; unset = split data.path
    "pattern": FSDD_PATTERN,  # regex on the file stem: group 'label' (required) and 'group' (optional)
    "normal_labels": ("6",),  # labels of normal recordings (the FSDD example: the spoken digit six)
    "test_groups": (),  # values of the 'group' match kept whole for the test split (e.g. held-out speakers)
    "test_fraction": 0.2,  # without test_groups/test_path: share of the normal recordings held out for test
    "split_seed": 0,  # seed of that hold-out
    "sample_rate": SAMPLE_RATE,  # Hz every file must have (others are skipped and reported)
    "n_fft": 8192,  # samples per recording (zero-padded or cropped) before the FFT
    "n_bins": 128,  # frequency bins the n_fft/2 amplitudes are averaged into
}


def _compile(pattern: str):
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"config key data.pattern: bad regular expression {pattern!r} ({exc})") from None
    if "label" not in rx.groupindex:
        raise InputError(f"config key data.pattern: {pattern!r} has no group (?P<label>...)")
    return rx


def read_folder(value, cfg, key: str, log=print) -> tuple[list[dict], list[str]]:
    """One record (id, file, label, group, spectrum) per readable, matching WAV; the skipped with why."""
    rx = _compile(cfg.pattern or FSDD_PATTERN)
    rate, n_fft, n_bins = int(cfg.sample_rate), int(cfg.n_fft), int(cfg.n_bins)
    records, skipped = [], []
    for path in expand(value, (".wav",), key=key):
        m = rx.fullmatch(path.stem)
        if m is None or m["label"] is None:
            skipped.append(f"{path}: name does not match data.pattern {rx.pattern!r}")
            continue
        spectrum = spectrum_or_skip(path, n_fft, n_bins, skipped, rate)
        if spectrum is None:
            continue
        records.append({"id": path.stem, "file": str(path), "label": m["label"],
                        "group": m.groupdict().get("group"), "x": spectrum.astype(np.float32)})
    if skipped and log:
        print(f"wav: skipped {len(skipped)} file(s) of {describe(value)}:", file=sys.stderr)
        for line in skipped:
            print(f"  {line}", file=sys.stderr)
    if not records:
        raise InputError(f"{describe(value)}: no readable WAV file matching data.pattern"
                         + (f" ({skipped[0]})" if skipped else ""))
    return records, skipped


def _normal(records, normal_labels) -> np.ndarray:
    from research.data.arrays import is_normal

    return is_normal(np.asarray([r["label"] for r in records], dtype=object), normal_labels)


def load(cfg) -> Dataset:
    cfg = with_defaults(cfg, DEFAULTS)
    if not cfg.path:
        raise InputError("config key data.path: the wav loader needs the folder(s) of WAV files")
    check_bins(int(cfg.n_fft), int(cfg.n_bins))
    records, skipped = read_folder(cfg.path, cfg, "data.path")
    normal_labels = cfg.normal_labels
    normal = _normal(records, normal_labels)
    test_groups = tuple(cfg.test_groups or ())
    if cfg.score_only:  # research.score: every recording of data.path
        train, test = [], records
    elif cfg.test_path:
        train = [r for r, n in zip(records, normal) if n]
        test, more = read_folder(cfg.test_path, cfg, "data.test_path")
        skipped += more
    elif test_groups:
        groups = {r["group"] for r in records}
        if missing := [g for g in test_groups if g not in groups]:
            raise InputError(f"config key data.test_groups: no recordings of group {missing[0]!r} in "
                             f"{describe(cfg.path)} (groups: {sorted(g for g in groups if g is not None)})")
        train = [r for r, n in zip(records, normal) if n and r["group"] not in test_groups]
        test = [r for r in records if r["group"] in test_groups]
    else:
        rng = np.random.default_rng(int(cfg.split_seed))
        normal_idx = rng.permutation(np.flatnonzero(normal))
        held = set(normal_idx[: int(round(float(cfg.test_fraction) * len(normal_idx)))].tolist())
        train = [r for i, r in enumerate(records) if normal[i] and i not in held]
        test = [r for i, r in enumerate(records) if not normal[i] or i in held]
    if not train and not cfg.score_only:
        raise InputError(f"{describe(cfg.path)}: no normal recordings (labels {tuple(normal_labels)}) to train on")
    if not test:
        raise InputError(f"{describe(cfg.test_path or cfg.path)}: no recordings for the test split")
    n_fft, n_bins = int(cfg.n_fft), int(cfg.n_bins)
    return Dataset(
        train={"x": np.stack([r["x"] for r in train]) if train else np.zeros((0, n_bins), np.float32)},
        test={"x": np.stack([r["x"] for r in test])},
        test_labels=(~_normal(test, normal_labels)).astype(np.int32),
        test_ids=[r["id"] for r in test],
        train_ids=[r["id"] for r in train],
        kind="1d",
        axis=frequencies(n_fft, n_bins, int(cfg.sample_rate)).astype(np.float32),
        axis_label="frequency (Hz)",
        meta={"path": describe(cfg.path), "files": {r["id"]: r["file"] for r in test},
              "n_fft": n_fft, "n_bins": n_bins, "skipped": skipped, "score_only": bool(cfg.score_only)},
    )
