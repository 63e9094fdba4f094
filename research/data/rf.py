r"""RF spectrum frames of real 433/868 MHz captures: normal devices vs devices never seen in training.

Frames come from a zip of complex ``.npy`` spectra (``cfg.zip_path``, written by
``python -m data_prep.rf frames``) or straight from the I/Q folder (same framing, in memory). Each
source (capture = device) is handled on its own because receivers and gains differ:

* **noise floor** ``F``: 10th percentile, over the capture's non-zero frames, of each frame's median
  bin power. Narrowband signals leave most bins at the noise level, so the median bin tracks the floor.
* **activity**: a frame's mean bin power outside the DC bins (``dc_guard`` bins either side of the
  centre; receivers leak the local oscillator there even when idle), in dB above ``F``.
  ``>= active_db`` is an *active* (transmitting) frame; ``< idle_db`` is **idle noise**; frames in
  between (edges of bursts) and all-zero frames (digital silence) are dropped and counted in ``meta``.
* **features**: ``10 log10(|X|^2 / F)`` clipped at ``floor_db`` (``db=True``), else ``|X| / sqrt(F)``.

Sources are captures (file stems, or zip member prefixes); ``device_pattern`` (a regex whose group
``device``, else the whole match, names the device) lets several captures of one device count as
that device, e.g. ``(?P<device>[a-z]+)_\d+`` for ``remote_1.complex``, ``remote_2.coco``; a capture
whose name does not match is skipped and reported. ``data.path`` may list several folders, files or
globs (comma-separated).

Split: active frames of ``normal_devices`` are cut into time blocks of ``block`` frames; a seeded
``test_fraction`` of the blocks is held out (label 0), the rest trains. The last frames of every
block, which share samples with the next block, are dropped so no sample is on both sides. With
``idle_noise`` the idle frames of the training blocks of normal devices join the training set. The
test set adds every active frame of ``anomaly_devices`` (label 1; empty = all other captures). Idle
frames of unseen devices are never used: their noise is not an anomaly.
"""

from __future__ import annotations

import math
import pathlib
import re

import numpy as np
from ml_collections.config_dict import placeholder

from research.data.rf_iq import frames_from_folder, frequency_axis, read_frames_zip
from research.config import with_defaults
from research.data import Dataset, limit_rows
from research.errors import InputError
from research.paths import dataset_dir

NORMAL_DEVICES = ("elektromaten", "esaver", "ook_overshoot", "steckdose_anlernen")
ANOMALY_DEVICES = ("ask", "cc1101", "enocean", "fsk")


def noise_floor(power: np.ndarray) -> float:
    """Per-bin noise power of a capture from its ``(N, L)`` bin powers (see module docstring)."""
    nonzero = power.sum(1) > 0
    if not nonzero.any():
        return 0.0
    return float(np.percentile(np.median(power[nonzero], axis=1), 10))


def activity_db(power: np.ndarray, floor: float, dc_guard: int = 2) -> np.ndarray:
    """Mean bin power outside the DC bins, in dB above ``floor`` (-inf for silent frames)."""
    length = power.shape[1]
    centre = length // 2
    keep = np.ones(length, bool)
    keep[max(0, centre - dc_guard):centre + dc_guard + 1] = False
    with np.errstate(divide="ignore"):
        return 10.0 * np.log10(power[:, keep].mean(1) / floor)


def features(spectra: np.ndarray, floor: float, db: bool, floor_db: float) -> np.ndarray:
    power = np.abs(spectra) ** 2 / floor
    if db:
        with np.errstate(divide="ignore"):
            return np.maximum(10.0 * np.log10(power), floor_db).astype(np.float32)
    return np.sqrt(power).astype(np.float32)


DEFAULTS = {
    "zip_path": "",  # a zip from `python -m data_prep.rf frames`; empty = frame the I/Q folder
    "frame_length": 256,  # FFT length of a frame
    "hop": 128,  # samples between frame starts
    "window": "hann",  # scipy.signal.get_window name of the FFT window
    "db": True,  # features in dB above the noise floor, else amplitude over sqrt(floor)
    "floor_db": -30.0,  # clip dB features below this
    "sample_rate": 1e6,  # only labels the frequency axis
    "device_pattern": placeholder(str),  # regex on a capture's name, group 'device'; None = the name is the device
    "normal_devices": NORMAL_DEVICES,  # devices whose active frames are normal (train, and label 0 in the test)
    "anomaly_devices": ANOMALY_DEVICES,  # empty = every other device
    "idle_noise": True,  # idle frames of the normal devices' training blocks join the training set
    "active_db": 10.0,  # a frame this far above the floor is active
    "idle_db": 6.0,  # a frame below this is idle noise
    "dc_guard": 2,  # bins either side of DC left out of the activity measure
    "block": 16,  # frames per time block of the train/test split
    "test_fraction": 0.25,  # seeded fraction of the blocks held out for the test
    "max_frames_per_device": 0,  # cap per device (0 = all)
    "split_seed": 0,  # seed of the block split and the per-device caps
}

def _frames(cfg) -> tuple[dict[str, np.ndarray], dict]:
    frame_length, hop = int(cfg.frame_length), int(cfg.hop)
    if cfg.zip_path:
        z = read_frames_zip(cfg.zip_path, frame_length)
        return z.by_source(), {"source": str(cfg.zip_path), "skipped": [f"{n}: {r}" for n, r in z.skipped]}
    folder = cfg.path or dataset_dir("rf_iq", cfg.root)
    frames, skipped = frames_from_folder(folder, frame_length, hop, cfg.window)
    return frames, {"source": str(folder), "skipped": [f"{n}: {r}" for n, r in skipped]}


def devices_of(names, pattern: str | None) -> tuple[dict[str, str], list[str]]:
    """Device name of each source under ``pattern`` (None = the source name), and the unmatched."""
    if not pattern:
        return {n: n for n in names}, []
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise InputError(f"config key data.device_pattern: bad regular expression {pattern!r} ({exc})") from None
    devices, unmatched = {}, []
    for name in names:
        m = rx.fullmatch(name)
        if m is None:
            unmatched.append(f"{name}: name does not match data.device_pattern {pattern!r}")
        else:
            devices[name] = m.groupdict().get("device") or m.group(0)
    return devices, unmatched


def _block_split(n: int, block: int, gap: int, fraction: float, rng) -> tuple[np.ndarray, np.ndarray]:
    """Boolean train/test masks over ``n`` time-ordered frames, whole blocks per side."""
    blocks = np.arange(n) // block
    n_blocks = blocks[-1] + 1 if n else 0
    n_test = int(round(fraction * n_blocks))
    if fraction > 0 and n_blocks > 1:
        n_test = min(max(n_test, 1), n_blocks - 1)
    test_blocks = rng.choice(n_blocks, n_test, replace=False) if n_test else np.array([], int)
    in_test = np.isin(blocks, test_blocks)
    usable = (np.arange(n) % block) < block - gap
    return usable & ~in_test, usable & in_test


def _cap(idx: np.ndarray, cap: int, rng) -> np.ndarray:
    if cap and len(idx) > cap:
        return np.sort(rng.choice(idx, cap, replace=False))
    return idx


def _roles(present, cfg, skipped, source: str, score_only: bool) -> tuple[tuple, tuple]:
    """The normal and anomalous devices the config asks for, checked against the ``present`` ones."""
    normal = tuple(cfg.normal_devices)
    anomalies = tuple(cfg.anomaly_devices) or tuple(d for d in present if d not in normal)
    if score_only:  # research.score: every active frame of every capture; the run's normal devices label 0
        normal = tuple(d for d in normal if d in present)
        anomalies = tuple(d for d in present if d not in normal)
    for name in normal + anomalies:
        if name not in present:
            cause = [reason for entry in skipped for file, reason in [entry.split(": ", 1)]
                     if pathlib.Path(file).stem == name]
            if cause:
                raise InputError(f"{cause[0]} (a capture that config key data.normal_devices/anomaly_devices needs)")
            raise InputError(f"config key data.normal_devices/anomaly_devices: no source {name!r} in "
                             f"{source} (sources: {present})")
    if overlap := set(normal) & set(anomalies):
        raise InputError(f"config key data.anomaly_devices: {sorted(overlap)} also listed as normal")
    return normal, anomalies


def _choose(dev: str, active: np.ndarray, idle: np.ndarray, normal, cfg, gap: int, rng,
            score_only: bool) -> tuple[np.ndarray, np.ndarray, int, dict]:
    """Frames of one capture (time order) for training and for the test, its test label and its stats;
    the in-memory loader and the sharded path (:func:`shard_rows`) both choose here, in the same order."""
    cap = int(cfg.max_frames_per_device)
    if score_only:
        te_idx = _cap(np.flatnonzero(active), cap, rng)
        return np.zeros(0, int), te_idx, int(dev not in normal), {
            "test": len(te_idx), "role": "normal" if dev in normal else "anomaly"}
    if dev in normal:
        tr, te = _block_split(len(active), int(cfg.block), gap, float(cfg.test_fraction), rng)
        tr_idx = _cap(np.flatnonzero(tr & active), cap, rng)
        te_idx = _cap(np.flatnonzero(te & active), cap, rng)
        idle_idx = _cap(np.flatnonzero(tr & idle), cap, rng) if cfg.idle_noise else np.zeros(0, int)
        return np.concatenate([tr_idx, idle_idx]).astype(int), te_idx, 0, {
            "train_active": len(tr_idx), "train_idle": len(idle_idx), "test": len(te_idx), "role": "normal"}
    te_idx = _cap(np.flatnonzero(active), cap, rng)
    return np.zeros(0, int), te_idx, 1, {"test": len(te_idx), "role": "anomaly"}


def load(cfg) -> Dataset:
    cfg = with_defaults(cfg, DEFAULTS)
    frames, source_meta = _frames(cfg)
    device, unmatched = devices_of(sorted(frames), cfg.device_pattern)
    source_meta["skipped"] += unmatched
    present = sorted(set(device.values()))
    score_only = bool(cfg.score_only)
    normal, anomalies = _roles(present, cfg, source_meta["skipped"], source_meta["source"], score_only)

    db, floor_db = bool(cfg.db), float(cfg.floor_db)
    active_db, idle_db = float(cfg.active_db), float(cfg.idle_db)
    frame_length, hop = next(iter(frames.values())).shape[1], int(cfg.hop)
    gap = max(0, math.ceil(frame_length / hop) - 1)
    rng = np.random.default_rng(int(cfg.split_seed))

    train, test, labels, ids, stats = [], [], [], [], {}
    # captures in the order of their devices in the config, so the default layout keeps its seeded split
    ordered = [(d, s) for d in normal + anomalies for s in sorted(frames) if device.get(s) == d]
    for dev, source in ordered:
        spectra = frames[source]
        power = np.abs(spectra) ** 2
        floor = noise_floor(power)
        if floor <= 0:
            raise InputError(f"{source}: every frame is zero; no noise floor")
        act = activity_db(power, floor, int(cfg.dc_guard))
        silent = power.sum(1) == 0
        active = (act >= active_db) & ~silent
        idle = (act < idle_db) & ~silent
        x = features(spectra, floor, db, floor_db)
        tr_idx, te_idx, label, chosen = _choose(dev, active, idle, normal, cfg, gap, rng, score_only)
        if len(tr_idx):
            train.append(x[tr_idx])
        test.append(x[te_idx])
        labels.append(np.full(len(te_idx), label, np.int32))
        ids += [f"{source}_{i}" for i in te_idx]
        stats[source] = {"device": dev, "frames": len(spectra), "active": int(active.sum()), "idle": int(idle.sum()),
                         "silent": int(silent.sum()), "noise_floor": floor, **chosen}

    train_x = np.concatenate(train) if train else np.zeros((0, frame_length), np.float32)
    test_split = {"x": np.concatenate(test), "label": np.concatenate(labels), "row": np.arange(len(ids))}
    if len(train_x) == 0 and not score_only:
        raise InputError(f"{source_meta['source']}: no active or idle training frames for {normal}")
    limit = cfg.limit
    train_split = limit_rows({"x": train_x}, limit, int(cfg.split_seed))
    test_split = limit_rows(test_split, limit, int(cfg.split_seed))
    sample_rate = float(cfg.sample_rate)
    return Dataset(
        train=train_split,
        test={"x": test_split["x"]},
        test_labels=test_split["label"],
        test_ids=[ids[i] for i in test_split["row"]],
        kind="1d",
        axis=(frequency_axis(frame_length, sample_rate) / 1e3).astype(np.float32),
        axis_label=f"frequency offset (kHz at an assumed {sample_rate / 1e6:g} MS/s)",
        meta={**source_meta, "normal_devices": list(normal), "anomaly_devices": list(anomalies),
              "frame_length": frame_length, "hop": hop, "db": db, "sources": stats, "score_only": score_only},
    )


def shard_rows(ds, cfg) -> dict[str, np.ndarray]:
    """Catalogue rows of the training and test splits of RF shards (:mod:`research.data.rf_shards`),
    chosen as :func:`load` chooses frames of the same captures (same devices, activity, block split,
    caps and ``data.limit``, same order), and every row's label (1 = not a normal device)."""
    cfg = with_defaults(cfg, DEFAULTS)
    ds.check_options(cfg, ("frame_length", "hop", "window", "db", "floor_db", "dc_guard", "device_pattern"))
    source, device = ds.column("source"), ds.column("device")
    act, silent = ds.column("activity_db"), ds.column("silent").astype(bool)
    rows_of: dict[str, np.ndarray] = {}
    for name in dict.fromkeys(source):
        rows = np.flatnonzero(source == name)
        rows_of[name] = rows[np.argsort(ds.column("frame")[rows], kind="stable")]
    device_of = {name: str(device[rows[0]]) for name, rows in rows_of.items()}
    present = sorted(set(device_of.values()))
    skipped = [f"{s['file']}: {s['reason']}" for s in ds.manifest.get("skipped", ())]
    normal, anomalies = _roles(present, cfg, skipped, str(ds.folder), False)
    active_db, idle_db = float(cfg.active_db), float(cfg.idle_db)
    gap = max(0, math.ceil(int(cfg.frame_length) / int(cfg.hop)) - 1)
    rng = np.random.default_rng(int(cfg.split_seed))
    train, test, labels = [], [], []
    for dev, name in [(d, s) for d in normal + anomalies for s in sorted(rows_of) if device_of[s] == d]:
        rows = rows_of[name]
        active = (act[rows] >= active_db) & ~silent[rows]
        idle = (act[rows] < idle_db) & ~silent[rows]
        tr_idx, te_idx, label, _ = _choose(dev, active, idle, normal, cfg, gap, rng, False)
        train.append(rows[tr_idx])
        test.append(rows[te_idx])
        labels.append(np.full(len(te_idx), label, np.int32))
    train_rows = np.concatenate(train)
    if len(train_rows) == 0:
        raise InputError(f"{ds.folder}: no active or idle training frames for {normal}")
    seed, limit = int(cfg.split_seed), cfg.limit
    test_split = limit_rows({"i": np.concatenate(test), "label": np.concatenate(labels)}, limit, seed)
    label_of = np.isin(device, normal, invert=True).astype(np.int32)
    return {"train": limit_rows({"i": train_rows}, limit, seed)["i"], "test": test_split["i"], "labels": label_of}
