"""SDSS FITS -> ArrayRecord shards (:mod:`research.data.shards`), in parallel and in SLURM array tasks.

Task ``t`` of ``T`` takes the ``t``-th contiguous block of the sorted file list, so the tasks'
catalogues joined in task order list the spectra as one task would. ``workers`` processes read
and grid files (:mod:`research.data.sdss_fastread`) while this process writes the records in file
order, so the shards do not depend on the number of workers. Each spectrum is gridded,
normalised and masked exactly as :func:`research.data.sdss_fits.ingest` does; the grid is fixed
by ``wave_range``, so tasks ingested independently agree.

CLI (``python -m data_prep.sdss --format shards ...``)::

    python -m data_prep.sdss --format shards --input ../shared/data/sdss --output data/sdss_shards \\
        --wave-range 3600,10400 --workers 2                       # one task, merged at the end
    python -m data_prep.sdss --format shards ... --shard 3 --num-shards 64  # one task of an array
    python -m data_prep.sdss --format shards --merge --output data/sdss_shards
"""

from __future__ import annotations

import argparse
import multiprocessing
import pathlib
import time

import numpy as np

from research.data import sdss_fits, sdss_fastread, shards
from research.errors import InputError

DEFAULT_SHARD_SIZE = 1024
COLUMNS = tuple(c for c in sdss_fits.CATALOGUE_COLUMNS if c != "index") + ("file_index",)


def grid_spectrum(spec, grid: np.ndarray, *, frame: str, norm: str, norm_window, min_good_fraction: float):
    """float32 flux, ivar and the mask of one spectrum on ``grid``, normalised; its catalogue row.
    Raises ``InputError`` (naming the file) for what :func:`sdss_fits.ingest` skips."""
    name = spec.meta["file"]
    sdss_fits.shifted_loglam(spec, frame)
    flux, ivar, mask = sdss_fits.resample(spec, grid, frame)
    if mask.mean() < min_good_fraction:
        raise InputError(f"{name}: only {mask.mean():.1%} good pixels on the common grid "
                         f"(min_good_fraction={min_good_fraction}); fully or mostly masked")
    try:
        scale = sdss_fits.normalisation(flux, mask, 10.0 ** grid, norm, norm_window)
    except InputError as exc:
        raise InputError(f"{name}: {exc}") from None
    row = {**spec.meta, "id": spec.id, "norm": scale, "good_fraction": round(float(mask.mean()), 4)}
    return (flux / scale).astype(np.float32), (ivar * scale * scale).astype(np.float32), mask, row


def _read_one(job):
    """Worker: one file -> ('ok', arrays, row) or ('skip', reason). Module level so it pickles."""
    (index, path), options = job
    try:
        spec = sdss_fastread.read_spectrum(path, options["mask_bits"])
        if (~spec.bad).sum() == 0:
            raise InputError(f"{path}: fully masked (no pixel with ivar > 0, finite flux and no mask bit)")
        flux, ivar, mask, row = grid_spectrum(spec, options["grid"], frame=options["frame"], norm=options["norm"],
                                              norm_window=options["norm_window"],
                                              min_good_fraction=options["min_good_fraction"])
        return "ok", (flux, ivar, mask), {**row, "file_index": index}
    except InputError as exc:
        return "skip", None, {"file": pathlib.Path(path).name, "reason": str(exc)}


task_block = shards.task_block


def ingest_task(inputs, out_dir, *, wave_range, task: int = 0, num_tasks: int = 1, workers: int = 1,
                shard_size: int = DEFAULT_SHARD_SIZE, frame: str = "observed", norm: str = "median",
                norm_window=None, step: float = sdss_fits.LOGLAM_STEP, mask_bits: int | None = None,
                min_good_fraction: float = 0.1, log=None) -> dict:
    """Ingests this task's block of files into shards; writes the task report and returns it without the list of
    skipped files (that is in the report file: :func:`shards.write_report`)."""
    t0 = time.time()
    if wave_range is None:
        raise InputError("--wave-range: required with --format shards (shards ingested apart must share one grid)")
    if workers < 1:
        raise InputError(f"--workers: must be >= 1, got {workers}")
    files = shards.FileList.find(inputs, sdss_fits.FITS_SUFFIXES)
    if not files:
        raise InputError(f"{inputs}: no FITS files (*.fits, *.fit) found")
    block = task_block(len(files), task, num_tasks)
    grid = sdss_fits.make_grid(np.log10(wave_range[0]), np.log10(wave_range[1]), step)
    options = {"frame": frame, "norm": norm, "norm_window": list(norm_window) if norm_window else None,
               "mask_bits": mask_bits, "min_good_fraction": min_good_fraction, "loglam_step": step,
               "wave_range": list(wave_range)}
    work = {**options, "grid": grid}
    writer = shards.ShardWriter(out_dir, task, num_tasks, shard_size, grid.size, COLUMNS)
    skipped, seen = shards.SkipList(out_dir, writer.name), shards.IdIndex()  # id -> file index: flat in the files
    jobs = (((i, files[i]), work) for i in block)
    pool = multiprocessing.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_read_one, jobs, chunksize=8) if pool else map(_read_one, jobs)
        for done, (status, arrays, row) in enumerate(results, 1):
            if status == "ok" and (earlier := seen.get(row["id"])) is not None:
                status, row = "skip", {"file": row["file"], "reason": f"{files[row['file_index']]}: duplicate of "
                                       f"{pathlib.PurePath(files[earlier]).name} (same plate-mjd-fiber {row['id']})"}
            if status == "ok":
                seen[row["id"]] = row["file_index"]
                writer.add(*arrays, row=row)
            else:
                skipped.append(row)
            if log and (done % 1000 == 0 or status == "skip"):
                log(f"[{done}/{len(block)}] " + (f"skipped: {row['reason']}" if status == "skip" else "ok"))
    finally:
        if pool:
            pool.close()
            pool.join()
    writer.close()
    report = {"task": task, "num_tasks": num_tasks, "n_files": len(block), "n_ingested": writer.n_records,
              "n_skipped": len(skipped), "skipped": skipped, "shards": writer.shards,
              "grid": {"n_pixels": int(grid.size), "loglam": grid.tolist(),
                       "wavelength_min": float(10 ** grid[0]), "wavelength_max": float(10 ** grid[-1])},
              "options": options, "workers": workers, "seconds": round(time.time() - t0, 2)}
    return shards.write_report(pathlib.Path(out_dir) / f"{shards.task_name(task, num_tasks)}.json", report)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.sdss --format shards",
                                     description="SDSS FITS -> ArrayRecord shards + Parquet catalogue")
    parser.add_argument("--format", choices=("shards",), default="shards")
    parser.add_argument("--input", nargs="+", help="folders of SDSS FITS files (or files), ingested together")
    parser.add_argument("--output", required=True, help="shard folder")
    parser.add_argument("--wave-range", help="LOW,HIGH Angstrom of the common grid (required: fixes the grid)")
    parser.add_argument("--frame", choices=("observed", "rest"), default="observed")
    parser.add_argument("--norm", choices=sdss_fits.NORMALISATIONS, default="median")
    parser.add_argument("--norm-window", help="LOW,HIGH Angstrom for the normalisation (default: whole spectrum)")
    parser.add_argument("--min-good-fraction", type=float, default=0.1)
    parser.add_argument("--mask-bits", type=lambda v: int(v, 0) if v[:1].isdigit() or v[:1] == "-" else v,
                        default=None, help="and_mask bits that make a pixel bad: names (NOPLUG,BRIGHTSKY) or an "
                        f"integer (-1 = any bit); default {','.join(sdss_fits.DEFAULT_MASK_BITS)}")
    shards.add_task_options(parser, DEFAULT_SHARD_SIZE, "spectra")
    args = parser.parse_args(argv)
    def ingest(log):
        inputs = shards.FileList.join([shards.FileList.find(i, sdss_fits.FITS_SUFFIXES) for i in args.input])
        return ingest_task(inputs, args.output, wave_range=sdss_fits._pair(args.wave_range),
                           task=args.shard or 0, num_tasks=args.num_shards, workers=args.workers,
                           shard_size=args.shard_size, frame=args.frame, norm=args.norm,
                           norm_window=sdss_fits._pair(args.norm_window), mask_bits=args.mask_bits,
                           min_good_fraction=args.min_good_fraction, log=log)

    return shards.run_task(args, ingest, lambda r: f"ingested {r['n_ingested']}/{r['n_files']} spectra "
                                                   f"({r['n_skipped']} skipped) of {r['grid']['n_pixels']} px")
