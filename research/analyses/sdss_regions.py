"""Anomalous wavelength regions of the test spectra: detection, per-spectrum figures, metadata JSON.

Options in ``config.regions``: ``method`` ('window': the seed rule of :mod:`research.regions`;
'matched_filter': :mod:`research.matched_filter`) and its parameters, ``noise_units``,
``detrend_width`` / ``noise_width`` (residual preprocessing, :mod:`research.residuals`; 0 = off),
``only_anomalous`` (figures only for flagged spectra), ``sample_n`` / ``seed`` (a seeded sample of
the selected spectra; 0 = all) and ``image_dir`` (cached SDSS cutouts, ``<id>.jpg``).
"""

from __future__ import annotations

import numpy as np

from research.regions import check_method, detect, json_number, uses_ivar
from research.residuals import preprocess
from research.rundir import unique_path, write_json
from research.spectrum_plots import find_image, plot_spectrum

DETECTOR_KEYS = {"window": ("window_size", "percentile_threshold", "range_mismatch_factor", "overall_anomaly_threshold",
                            "threshold_scope", "abs_threshold", "rel_threshold", "chunk_size"),
                 "matched_filter": ("scales", "significance", "local_scale_block", "min_coverage",
                                    "merge_gap", "overall_anomaly_threshold", "chunk_size")}


def _default_image_dir():
    from research.data.sdss_fetch import DEFAULT_CACHE
    return DEFAULT_CACHE / "images"


def select(flags: np.ndarray, only_anomalous: bool, sample_n: int, seed: int) -> np.ndarray:
    """Indices to plot: all or only flagged, then a seeded sample of ``sample_n`` (0 = all), sorted."""
    idx = np.flatnonzero(flags) if only_anomalous else np.arange(len(flags))
    if sample_n and len(idx) > sample_n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, int(sample_n), replace=False))
    return idx


def check(config) -> str:
    """The configured detector method; a one-line error before training when it is unknown."""
    return check_method((config.get("regions") or {}).get("method") or "window")


def find_regions(config, x, recon, mask, ivar, axis):
    """The regions the configured detector finds in spectra ``x`` against their reconstructions
    (unscaled), with the reconstruction and ivar it compared them with; ``research.load_run`` uses this too."""
    cfg = dict(config.get("regions") or {})
    method = check(config)
    ivar = ivar if uses_ivar(method, cfg.get("noise_units")) else None
    # baseline-corrected reconstruction (smooth misfit removed) and local noise scale (both off at 0);
    # the figures show this reconstruction, the one the detector compares with
    recon, ivar = preprocess(x, recon, mask, ivar, int(cfg.get("detrend_width") or 0),
                             int(cfg.get("noise_width") or 0))
    params = {k: cfg[k] for k in DETECTOR_KEYS[method] if cfg.get(k) is not None}
    return detect(x, recon, mask, axis, method=method, ivar=ivar, **params), recon, ivar


def run(ctx) -> dict:
    cfg = dict(ctx.config.get("regions") or {})
    ds = ctx.dataset
    x = np.asarray(ds.test["x"])
    recon = np.asarray(ctx.recon_test).mean(0)
    if ctx.scaler is not None and getattr(ctx.scaler, "method", "none") != "none":
        x, recon = ctx.scaler.inverse(x), ctx.scaler.inverse(recon)  # ivar is in unscaled flux units
    mask = ds.test.get("mask")
    detrend_width, noise_width = int(cfg.get("detrend_width") or 0), int(cfg.get("noise_width") or 0)
    regions, recon, ivar = find_regions(ctx.config, x, recon, mask, ds.test.get("ivar"), ds.axis)

    ids = ds.test_ids or [str(i) for i in range(len(x))]
    catalogue = ds.meta.get("catalogue", {})
    labels = ds.test_labels
    seed = int(cfg.get("seed", 0))
    chosen = select(regions.flags, bool(cfg.get("only_anomalous")), int(cfg.get("sample_n") or 0), seed)
    image_dir = cfg.get("image_dir") or _default_image_dir()

    def describe(i):
        d = {"index": int(i), "id": ids[i], **catalogue.get(ids[i], {}), "score": float(regions.scores[i]),
             "flagged": bool(regions.flags[i]), "abs_threshold": json_number(regions.abs_threshold[i]),
             "rel_threshold": json_number(regions.rel_threshold[i]), "regions": regions.regions_of(i)}
        if labels is not None:
            d["label"] = int(labels[i])
        return d

    figures = []
    if ctx.run.writer:
        for i in chosen:
            info = catalogue.get(ids[i], {})
            z = info.get("z")
            title = (f"{ids[i]}   {info.get('class', '?')}   z={z:.4f}" if isinstance(z, float) else ids[i])
            title += f"   anomalous fraction {regions.scores[i]:.2f}" + ("  [FLAGGED]" if regions.flags[i] else "")
            thr = regions.abs_threshold[i]
            figures.append(str(plot_spectrum(
                ctx.run.plots / "spectra" / f"spectrum_{ids[i]}.png", ds.axis, x[i], recon[i],
                None if mask is None else mask[i], regions.regions_of(i), title,
                image=find_image(image_dir, ids[i]), xlabel=ds.axis_label, residual_threshold=None if ivar is not None else thr,
                residual_label="residual")))

    metadata = {
        "seed": seed, "only_anomalous": bool(cfg.get("only_anomalous")), "sample_n": int(cfg.get("sample_n") or 0),
        "sampled_indices": chosen.tolist(), "sampled_ids": [ids[i] for i in chosen],
        "detector": regions.params, "detrend_width": detrend_width, "noise_width": noise_width,
        "thresholds": {k: v for k, v in regions.thresholds().items() if not isinstance(v, list)},
        "per_spectrum_thresholds": {ids[i]: {"abs": json_number(regions.abs_threshold[i]),
                                             "rel": json_number(regions.rel_threshold[i])} for i in range(len(ids))},
        "flagged": [describe(i) for i in np.flatnonzero(regions.flags)],
        "figures": figures,
    }
    meta_path = None
    if ctx.run.writer:
        meta_path = unique_path(ctx.run.path / "regions_metadata.json")
        write_json(meta_path, metadata)

    summary = {"n_spectra": int(len(x)), "n_flagged": int(regions.flags.sum()), "n_regions": int(len(regions.start)),
               "mean_score": float(regions.scores.mean()) if len(x) else float("nan"),
               "n_figures": len(figures), "metadata": str(meta_path) if meta_path else None}
    if labels is not None and len(x):
        flags, labels = regions.flags.astype(bool), np.asarray(labels).astype(bool)
        summary["flag_precision"] = float((flags & labels).sum() / max(flags.sum(), 1))
        summary["flag_recall"] = float((flags & labels).sum() / max(labels.sum(), 1))
    return summary
