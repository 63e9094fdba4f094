"""Scores, thresholds and anomalous regions as one streaming pass over shards, written as Parquet parts.

Per evaluation batch: the ensemble's reconstructions and errors (the trainer's own ``predict``),
the scores (``score.normalize``), and, given a threshold, flags and the region detector's results.
Each process writes its own rows into ``<out>/part-PPPPP-NNNNN.parquet`` files of at most
``part_rows`` rows (scores) and ``regions-PPPPP-NNNNN.parquet`` (one row per region): memory is one
batch, whatever the number of spectra. Only the scalar scores of the threshold's split are kept
(8 bytes per spectrum), so percentile thresholds are exact.
"""

from __future__ import annotations

import pathlib

import jax
from jax.experimental import multihost_utils
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from research import scoring
from research.data import stream
from research.regions import detect
from research.regions.residuals import preprocess, split_settings
from research.streaming import eval_pieces, pad_batch


def batches(trainer, params, source, prepare: stream.Prepare, normalize: str = "none"):
    """Yields, per evaluation batch, this process's rows: ``(batch, recon_mean, score, score_std)``.

    ``batch`` holds the prepared arrays plus ``index`` (catalogue row) and ``ivar`` when ``prepare``
    keeps them."""
    per_proc = trainer.eval_batch_size // jax.process_count()
    pieces = eval_pieces(len(source), per_proc)
    loader = stream.eval_loader(source, prepare, batch_size=trainer.eval_batch_size)
    it, like = iter(loader), stream.Stream(source, prepare).like()
    sharding = jax.sharding.NamedSharding(trainer.mesh, jax.sharding.PartitionSpec("data"))
    lo = jax.process_index() * per_proc
    for _ in range(pieces):
        batch = next(it, None)
        local, ok = pad_batch(batch, per_proc, like)
        model_in = {k: local[k] for k in ("x", "mask", "weights") if k in local}
        data = {k: jax.make_array_from_process_local_data(sharding, v, (per_proc * jax.process_count(), *v.shape[1:]))
                for k, v in model_in.items()}
        recon, err = trainer.predict(params, data)
        recon = np.asarray(recon)[:, lo: lo + per_proc][:, ok]
        err = np.asarray(err)[:, lo: lo + per_proc][:, ok]
        rows = {k: v[ok] for k, v in local.items()}
        score, spread = scoring.ensemble_scores(scoring.normalize(err, rows["x"], normalize))
        yield rows, recon.mean(0), score, spread


def fit_scores(trainer, params, source, prepare, normalize: str) -> np.ndarray:
    """Every score of a split, from all processes (for the threshold): 8 bytes per spectrum, the
    arrays never kept."""
    per_proc = trainer.eval_batch_size // jax.process_count()
    out = []
    for _, _, score, _ in batches(trainer, params, source, prepare, normalize):
        if jax.process_count() > 1:
            padded = np.full(per_proc, np.nan)
            padded[: len(score)] = score
            score = multihost_utils.process_allgather(padded, tiled=True)
            score = score[np.isfinite(score)]
        out.append(score)
    return np.concatenate(out) if out else np.zeros(0)


def model_error(trainer, params, source, prepare, *, quantile: float, width: int, detrend_width: int) -> np.ndarray:
    """The model error per pixel (:func:`research.regions.residuals.model_error`) over the spectra of
    ``source`` (the caller passes a seeded sample of at most ``MODEL_ERROR_ROWS`` training rows, so memory
    is bounded whatever N; below that it is every training spectrum, as on the in-memory path)."""
    from research.regions.residuals import detrend, model_error as per_pixel

    keep = ("x", "mask", "ivar", "recon")
    parts = {k: [] for k in keep}
    for rows, recon, _, _ in batches(trainer, params, source, prepare):
        for k, v in {**rows, "recon": recon}.items():
            if k in parts:
                parts[k].append(np.asarray(v))
    arrays = {k: np.concatenate(v) for k, v in parts.items()}
    if jax.process_count() > 1:  # every process's rows, padded to the longest, then the padding dropped
        n = int(np.max(multihost_utils.process_allgather(np.asarray([len(arrays["x"])]))))
        ok = np.zeros(n, bool)
        ok[: len(arrays["x"])] = True
        ok = multihost_utils.process_allgather(ok, tiled=True)
        arrays = {k: multihost_utils.process_allgather(
            np.concatenate([v, np.zeros((n - len(v), *v.shape[1:]), v.dtype)]), tiled=True)[ok]
            for k, v in arrays.items()}
    x, mask, ivar = arrays["x"], arrays["mask"].astype(bool), arrays["ivar"]
    recon = detrend(x, arrays["recon"], mask, detrend_width, ivar)
    return per_pixel(x, recon, mask, ivar, quantile, width)


MODEL_ERROR_ROWS = 4096  # training spectra sampled for the model-error calibration (memory ~ rows x pixels)


class PartWriter:
    """Parquet files of at most ``part_rows`` rows, named by process and part number."""

    def __init__(self, folder, stem: str, part_rows: int):
        self.folder, self.stem, self.part_rows = pathlib.Path(folder), stem, part_rows
        self.folder.mkdir(parents=True, exist_ok=True)
        self.files: list[str] = []
        self._writer, self._rows = None, 0

    def write(self, columns: dict) -> None:
        table = pa.table(columns)
        if table.num_rows == 0:
            return
        if self._writer is None or self._rows >= self.part_rows:
            self.close()
            name = f"{self.stem}-{jax.process_index():05d}-{len(self.files):05d}.parquet"
            self.files.append(name)
            self._writer, self._rows = pq.ParquetWriter(self.folder / name, table.schema), 0
        self._writer.write_table(table)
        self._rows += table.num_rows

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def score_split(trainer, params, source, prepare, out_dir, *, threshold: float, normalize: str, ids, labels,
                axis, regions_cfg: dict | None, part_rows: int = 65536) -> dict:
    """One pass over ``source``: scores, flags and regions into Parquet parts; returns the summary.

    ``ids``/``labels`` are indexed by catalogue row. Counts are this process's rows.
    ``regions_cfg``: the detector's keyword arguments (with ``method``, the residual preprocessing and
    ``model_sigma``: :func:`research.regions.residuals.split_settings`), or None for no regions."""
    scores = PartWriter(out_dir, "scores", part_rows)
    region_parts = PartWriter(out_dir, "regions", part_rows)
    n = n_flag = n_regions = n_region_flag = 0
    for rows, recon, score, spread in batches(trainer, params, source, prepare, normalize):
        index = rows["index"]
        flags = scoring.flag(score, threshold)
        cols = {"index": index, "id": [ids[i] for i in index], "score": score, "score_std": spread, "flag": flags}
        if labels is not None:
            cols["label"] = np.asarray(labels)[index]
        regions = None
        if regions_cfg is not None:
            pre, params = split_settings(regions_cfg)
            r_recon, r_ivar = preprocess(rows["x"], recon, rows.get("mask"), rows.get("ivar"), axis=axis, **pre)
            regions = detect(rows["x"], r_recon, rows.get("mask"), axis, ivar=r_ivar, **params)
            cols["region_score"], cols["region_flag"] = regions.scores, regions.flags.astype(np.int32)
            cols["n_regions"] = np.bincount(regions.spectrum, minlength=len(index)).astype(np.int32)
            region_parts.write({"index": index[regions.spectrum], "id": [ids[index[i]] for i in regions.spectrum],
                                "start": regions.start, "end": regions.end,
                                **({"start_wavelength": regions.start_wavelength,
                                    "end_wavelength": regions.end_wavelength}
                                   if regions.start_wavelength is not None else {})})
            n_regions += len(regions.start)
            n_region_flag += int(regions.flags.sum())
        scores.write(cols)
        n += len(index)
        n_flag += int(flags.sum())
    scores.close()
    region_parts.close()
    return {"n": n, "n_flagged": n_flag, "n_regions": n_regions, "n_region_flagged": n_region_flag,
            "score_files": scores.files,
            "region_files": region_parts.files}


def read_parts(out_dir, stem: str = "scores", columns=None) -> pa.Table:
    """All processes' parts of ``stem`` as one table, sorted by catalogue row."""
    files = sorted(pathlib.Path(out_dir).glob(f"{stem}-*.parquet"))
    if not files:
        return pa.table({})
    table = pa.concat_tables([pq.read_table(f, columns=columns) for f in files])
    return table.sort_by("index") if "index" in table.column_names else table
