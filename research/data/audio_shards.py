"""WAV recordings -> amplitude spectra in ArrayRecord shards (:mod:`research.data.shards`), in parallel and
in SLURM array tasks.

One record per recording: the float32 max-normalised binned amplitude spectrum of
:func:`research.data.fsdd.amplitude_spectrum` (``n_fft`` samples, ``n_bins`` bins), read by
:func:`research.data.fsdd.read_wav`, so the records are bit for bit the spectra of the in-memory loaders
(:mod:`research.data.fsdd`, :mod:`research.data.wav`). The catalogue has ``id`` (the file stem, the
loaders' ids), ``file`` and one string column per named group of ``--pattern`` (matched against the
whole stem; the FSDD default gives ``digit``, ``speaker`` and ``take``).

Task ``t`` of ``T`` takes the ``t``-th contiguous block of the files; ``workers`` processes read them
while this process writes in file order. Unreadable, truncated, wrong-rate, stereo and silent files,
names the pattern does not match and a second file with a stem already read are skipped and listed in
the task report and the manifest.

CLI (``python -m data_prep.audio --format shards ...``)::

    python -m data_prep.audio --format shards --input ../shared/data/fsdd/recordings --output data/fsdd_shards
    python -m data_prep.audio --format shards ... --shard 3 --num-shards 8   # one task of an array
    python -m data_prep.audio --format shards --merge --output data/fsdd_shards
"""

from __future__ import annotations

import argparse
import functools
import pathlib
import re

import numpy as np

from research.data import shards
from research.data.fsdd import SAMPLE_RATE, audible_spectrum, check_bins, frequencies
from research.errors import InputError

DEFAULT_SHARD_SIZE = 1024
FSDD_PATTERN = r"(?P<digit>\d)_(?P<speaker>[A-Za-z]+)_(?P<take>\d+)"  # {digit}_{speaker}_{take}.wav


def _compile(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise InputError(f"--pattern: bad regular expression {pattern!r} ({exc})") from None


def recording_spectrum(path, *, pattern: str, n_fft: int, n_bins: int, sample_rate: int):
    """The spectrum of one recording and its catalogue row; ``InputError`` (naming the file) for a file
    the in-memory loaders skip."""
    path = pathlib.Path(path)
    rx = _compile(pattern)
    m = rx.fullmatch(path.stem)
    if m is None:
        raise InputError(f"{path}: name does not match --pattern {rx.pattern!r}")
    spectrum = audible_spectrum(path, n_fft, n_bins, sample_rate).astype(np.float32)
    return spectrum, {"id": path.stem, "file": str(path), **m.groupdict()}


def recording_records(path, **options) -> list:
    x, row = recording_spectrum(path, **options)
    return [((x,), row)]


def ingest_task(inputs, out_dir, *, pattern: str = FSDD_PATTERN, n_fft: int = 8192, n_bins: int = 512,
                sample_rate: int = SAMPLE_RATE, task: int = 0, num_tasks: int = 1, workers: int = 1,
                shard_size: int = DEFAULT_SHARD_SIZE, log=None) -> dict:
    """Ingests this task's block of WAV files (folders, files or globs, comma-separated or a sequence)
    into shards; returns (and writes) the task report. Defaults are :mod:`research.data.fsdd`'s."""
    n_fft, n_bins, sample_rate = int(n_fft), int(n_bins), int(sample_rate)
    check_bins(n_fft, n_bins)
    groups = tuple(_compile(pattern).groupindex)
    if clash := [g for g in groups if g in ("id", "file", "shard", "row")]:
        raise InputError(f"--pattern: group name {clash[0]!r} is a catalogue column already; rename the group")
    files = shards.input_files(inputs, (".wav",))
    options = {"pattern": pattern, "n_fft": n_fft, "n_bins": n_bins, "sample_rate": sample_rate}
    grid = {"n_pixels": n_bins, "axis": frequencies(n_fft, n_bins, sample_rate).tolist(),
            "axis_label": "frequency (Hz)"}
    return shards.ingest_files(files, out_dir, functools.partial(shards.read_or_skip, recording_records), options, grid=grid, options=options, dataset="audio",
                               columns=("id", "file") + groups, layout="x", task=task, num_tasks=num_tasks,
                               workers=workers, shard_size=shard_size, log=log)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.audio --format shards",
                                     description="WAV recordings -> amplitude spectra in ArrayRecord shards + "
                                                 "Parquet catalogue")
    parser.add_argument("--format", choices=("shards",), default="shards")
    parser.add_argument("--input", nargs="+", help="folders of WAV files (or files, globs), ingested together")
    parser.add_argument("--output", required=True, help="shard folder")
    parser.add_argument("--pattern", default=FSDD_PATTERN,
                        help="regex on the whole file stem; each named group becomes a catalogue column")
    parser.add_argument("--n-fft", type=int, default=8192, help="samples per recording (zero-padded or cropped)")
    parser.add_argument("--n-bins", type=int, default=512, help="bins the n_fft/2 amplitudes are averaged into")
    parser.add_argument("--sample-rate", type=int, default=SAMPLE_RATE, help="Hz every file must have")
    shards.add_task_options(parser, DEFAULT_SHARD_SIZE, "spectra")
    args = parser.parse_args(argv)
    return shards.run_task(
        args, lambda log: ingest_task(args.input, args.output, pattern=args.pattern, n_fft=args.n_fft,
                                      n_bins=args.n_bins, sample_rate=args.sample_rate, task=args.shard or 0,
                                      num_tasks=args.num_shards, workers=args.workers, shard_size=args.shard_size,
                                      log=log),
        lambda r: f"ingested {r['n_ingested']}/{r['n_files']} recordings ({r['n_skipped']} skipped) of "
                  f"{r['grid']['n_pixels']} bins")
