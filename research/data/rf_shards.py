"""RF I/Q captures -> spectrum frames in ArrayRecord shards (:mod:`research.data.shards`), in parallel and
in SLURM array tasks.

One record per frame of every capture (active, idle, edge and silent frames alike): the float32
features :mod:`research.data.rf` computes in memory (``10 log10(|X|^2 / F)`` clipped at ``floor_db``
with ``db``, else ``|X| / sqrt(F)``; ``F`` is the capture's noise floor), bit for bit. The catalogue
keeps what the loader's split needs, so frames can be chosen without reading them: ``id``
(``<capture>_<frame>``, the in-memory loader's test ids), ``source`` (capture = file stem), ``device``
(``--device-pattern`` group ``device``, else the capture), ``frame`` (index in the capture),
``file``, ``noise_floor``, ``activity_db`` (mean power outside the ``--dc-guard`` DC bins in dB above
the floor; -inf when none) and ``silent`` (1 = an all-zero frame).

Task ``t`` of ``T`` takes the ``t``-th contiguous block of the sorted captures; ``workers`` processes
read and frame captures while this process writes them in capture order. Unreadable or short
captures, a capture whose frames are all zero, a name ``--device-pattern`` does not match and a
second capture with a name already read are skipped and listed in the task report and the manifest.

CLI (``python -m data_prep.rf --format shards ...``)::

    python -m data_prep.rf --format shards --input ../shared/data/rf_iq --output data/rf_shards
    python -m data_prep.rf --format shards ... --shard 3 --num-shards 8   # one task of an array
    python -m data_prep.rf --format shards --merge --output data/rf_shards
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import sys

import numpy as np

from research.data import rf, shards
from research.data.rf_iq import IQ_SUFFIXES, frame_spectra, frequency_axis, read_iq
from research.errors import InputError

DEFAULT_SHARD_SIZE = 4096  # frames are small (1 KiB at 256 bins)
COLUMNS = ("id", "source", "device", "frame", "file", "noise_floor", "activity_db", "silent")
COLUMN_TYPES = {"frame": int, "silent": int, "noise_floor": float, "activity_db": float}


def capture_frames(path, *, frame_length: int, hop: int, window: str, db: bool, floor_db: float, dc_guard: int,
                   device_pattern: str | None):
    """Features of every frame of one capture and the catalogue rows; ``InputError`` (naming the file)
    for a capture the in-memory loader would skip or refuse."""
    path = pathlib.Path(path)
    device, unmatched = rf.devices_of([path.stem], device_pattern)
    if unmatched:
        raise InputError(f"{path}: {unmatched[0].split(': ', 1)[1]}")
    spectra = frame_spectra(read_iq(path), frame_length, hop, window, source=str(path))
    power = np.abs(spectra) ** 2
    floor = rf.noise_floor(power)
    if floor <= 0:
        raise InputError(f"{path}: every frame is zero; no noise floor")
    act = rf.activity_db(power, floor, dc_guard)
    silent = power.sum(1) == 0
    x = rf.features(spectra, floor, db, floor_db)
    rows = [{"id": f"{path.stem}_{i}", "source": path.stem, "device": device[path.stem], "frame": i,
             "file": str(path), "noise_floor": floor, "activity_db": float(act[i]), "silent": int(silent[i])}
            for i in range(len(x))]
    return x, rows


def capture_records(path, **options) -> list:
    x, rows = capture_frames(path, **options)
    return [((x[i],), row) for i, row in enumerate(rows)]


def ingest_task(inputs, out_dir, *, frame_length: int = 256, hop: int = 128, window: str = "hann", db: bool = True,
                floor_db: float = -30.0, dc_guard: int = 2, device_pattern: str | None = None,
                sample_rate: float = 1e6, task: int = 0, num_tasks: int = 1, workers: int = 1,
                shard_size: int = DEFAULT_SHARD_SIZE, log=None) -> dict:
    """Ingests this task's block of captures (a folder, or files/folders/globs: :func:`shards.input_files`
    takes them) into shards; returns (and writes) the task report. Defaults are :mod:`research.data.rf`'s."""
    files = shards.input_files(inputs, IQ_SUFFIXES)
    options = {"frame_length": int(frame_length), "hop": int(hop), "window": str(window), "db": bool(db),
               "floor_db": float(floor_db), "dc_guard": int(dc_guard), "device_pattern": device_pattern or None}
    frame_spectra(np.zeros(max(options["frame_length"], 1), np.complex64), options["frame_length"], options["hop"],
                  window)  # bad frame_length, hop or window: one error before any work
    grid = {"n_pixels": options["frame_length"], "sample_rate": float(sample_rate),
            "axis": (frequency_axis(options["frame_length"], float(sample_rate)) / 1e3).tolist(),
            "axis_label": f"frequency offset (kHz at an assumed {float(sample_rate) / 1e6:g} MS/s)"}
    return shards.ingest_files(files, out_dir, functools.partial(shards.read_or_skip, capture_records), options, grid=grid, options=options, dataset="rf",
                               columns=COLUMNS, column_types=COLUMN_TYPES, layout="x", task=task,
                               num_tasks=num_tasks, workers=workers, shard_size=shard_size, log=log)


def main(argv=None) -> int:
    d = rf.DEFAULTS
    parser = argparse.ArgumentParser(prog="python -m data_prep.rf --format shards",
                                     description="RF I/Q captures -> frames in ArrayRecord shards + Parquet catalogue")
    parser.add_argument("--format", choices=("shards",), default="shards")
    parser.add_argument("--input", nargs="+", help="folders of I/Q captures (or files, globs), ingested together")
    parser.add_argument("--output", required=True, help="shard folder")
    parser.add_argument("--frame-length", type=int, default=d["frame_length"])
    parser.add_argument("--hop", type=int, default=d["hop"])
    parser.add_argument("--window", default=d["window"], help="scipy.signal.get_window name")
    parser.add_argument("--amplitude", action="store_true", help="features |X|/sqrt(F) instead of dB above the floor")
    parser.add_argument("--floor-db", type=float, default=d["floor_db"], help="clip dB features below this")
    parser.add_argument("--dc-guard", type=int, default=d["dc_guard"], help="DC bins (each side) not in the activity")
    parser.add_argument("--device-pattern", default=None, help="regex on a capture's name, group 'device'")
    parser.add_argument("--sample-rate", type=float, default=d["sample_rate"], help="only labels the frequency axis")
    shards.add_task_options(parser, DEFAULT_SHARD_SIZE, "frames")
    args = parser.parse_args([a for i, a in enumerate(argv if argv is not None else sys.argv[1:])
                              if not (i == 0 and a == "frames")])  # `data_prep.rf frames --format shards` too
    return shards.run_task(
        args, lambda log: ingest_task(args.input, args.output, frame_length=args.frame_length, hop=args.hop,
                                      window=args.window, db=not args.amplitude, floor_db=args.floor_db,
                                      dc_guard=args.dc_guard, device_pattern=args.device_pattern,
                                      sample_rate=args.sample_rate, task=args.shard or 0, num_tasks=args.num_shards,
                                      workers=args.workers, shard_size=args.shard_size, log=log),
        lambda r: f"{r['n_ingested']} frames of {r['n_files'] - r['n_skipped']}/{r['n_files']} captures "
                  f"({r['n_skipped']} skipped) of {r['grid']['n_pixels']} bins")
