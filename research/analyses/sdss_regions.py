"""Anomalous wavelength regions of the test spectra: detection, per-spectrum figures, metadata JSON.

Options in ``config.regions``: ``method`` (a detector of :mod:`research.regions.registry`: 'window',
the seed rule, or 'matched_filter') and the parameters it declares, ``noise_units``,
``detrend_width`` / ``noise_width`` / ``model_error_quantile`` / ``relative_error`` / ``line_tolerance``
(residual preprocessing, :mod:`research.regions.residuals`; 0 = off; the model error is calibrated on the
training spectra; the line tolerance needs rest-frame spectra),
``only_anomalous`` (figures only for flagged spectra), ``sample_n`` / ``seed`` (a seeded sample of
the selected spectra; 0 = all) and ``image_dir`` (cached SDSS cutouts, ``<id>.jpg``).
"""

from __future__ import annotations

import inspect

import numpy as np
from ml_collections.config_dict import placeholder

from research.config import check_block, field_type
from research.errors import InputError
from research.paths import SDSS_CACHE
from research.regions import DETECTORS, check_method, detect, detector, json_number, lines, uses_ivar
from research.regions.plots import find_image, plot_spectrum
from research.regions.registry import PREPROCESS, params_of
from research.regions.residuals import PREPROCESS_KEYS, detrend, model_error, preprocess, split_settings
from research.rundir import unique_path, write_json

MODEL_ERROR_FILE = "model_error.npy"  # the calibrated model error per pixel, in the run directory
CONFIG_BLOCK = "regions"  # the config block this analysis reads, declared by defaults()
OPTIONS = {  # the analysis's own keys of config.regions -> (default, comment)
    "method": ("window", "the region detector: a name in research/regions/registry.py DETECTORS"),
    "only_anomalous": (False, "figures only for the flagged spectra"),
    "sample_n": (0, "figures for a seeded sample of this many of the selected spectra; 0 = all"),
    "seed": (0, "seed of that sample"),
    "top_n": (10, "data.format=sharded: figures of the top_n highest scores (with the sample_n sample) only"),
    "image_dir": (placeholder(str), "cached SDSS cutouts <id>.jpg; None = cache/sdss/images"),
}


def declared() -> dict[str, tuple]:
    """Every key ``config.regions`` may set -> ``(default, comment)``: this analysis's options, the shared
    residual preprocessing and the parameters of every registered detector."""
    keys = {**OPTIONS, **PREPROCESS}
    for name in DETECTORS:
        keys.update(detector(name).schema())
    return keys


def defaults() -> dict:
    """The schema of ``config.regions`` (:func:`research.config.base_config` adds it, :func:`research.config.check`
    refuses other keys): every :func:`declared` key at its default, a ``None`` default as a typed placeholder."""
    types = {}
    for name in DETECTORS:
        keywords = inspect.signature(detector(name).detect).parameters
        types.update({k: field_type(keywords[k].annotation) for k in detector(name).params})
    return {k: placeholder(types.get(k, object)) if default is None else default
            for k, (default, _) in declared().items()}


def calibrated_model_error(ctx, detrend_width: int, quantile: float, width: int) -> np.ndarray:
    """:func:`~research.regions.residuals.model_error` of the training and validation spectra as the run's
    model reconstructs them (ensemble mean), detrended as the test spectra are."""
    ds = ctx.dataset
    splits = [split for split in (ds.train, ds.val) if split is not None and "ivar" in split]
    if not splits or ctx.trainer is None:
        raise InputError("config key regions.model_error_quantile: needs the training spectra's ivar and the "
                         "trained model")
    x = np.concatenate([s["x"] for s in splits])
    mask, ivar = (np.concatenate([s[k] for s in splits]) for k in ("mask", "ivar"))
    recon = np.asarray(ctx.trainer.predict(ctx.params, ctx.trainer.put({"x": x}))[0]).mean(0)
    if ctx.scaler is not None and getattr(ctx.scaler, "method", "none") != "none":
        x, recon = ctx.scaler.inverse(x), ctx.scaler.inverse(recon)
    recon = detrend(x, recon, mask, detrend_width, ivar)
    return model_error(x, recon, mask, ivar, quantile, width)


def select(flags: np.ndarray, only_anomalous: bool, sample_n: int, seed: int) -> np.ndarray:
    """Indices to plot: all or only flagged, then a seeded sample of ``sample_n`` (0 = all), sorted."""
    idx = np.flatnonzero(flags) if only_anomalous else np.arange(len(flags))
    if sample_n and len(idx) > sample_n:
        idx = np.sort(np.random.default_rng(seed).choice(idx, int(sample_n), replace=False))
    return idx


def check(config) -> str:
    """The configured detector method; a one-line error before training when it or a key of
    ``config.regions`` is unknown."""
    cfg = config.get("regions") or {}
    method = check_method(cfg.get("method") or "window")
    check_block("regions.", cfg, defaults())
    frame = (config.get("data") or {}).get("frame")
    if cfg.get("line_tolerance") and frame != "rest":
        raise InputError(f"config key regions.line_tolerance: needs rest-frame spectra (data.frame='rest', got "
                         f"{frame!r}): the known lines are at rest wavelengths")
    return method


def preprocess_settings(cfg) -> dict:
    """The residual-preprocessing keys of ``config.regions`` (:data:`~research.regions.residuals.PREPROCESS_KEYS`
    but ``model_sigma``, which comes from the calibration, not the config)."""
    return {k: cfg.get(k) for k in PREPROCESS_KEYS if k != "model_sigma"}


def find_regions(config, x, recon, mask, ivar, axis, model_sigma=None):
    """The regions the configured detector finds in spectra ``x`` against their reconstructions
    (unscaled), with the reconstruction and ivar it compared them with; ``research.load_run`` uses this too.
    ``model_sigma``: the model error per pixel (:func:`calibrated_model_error`), needed when
    ``regions.model_error_quantile`` is set."""
    cfg = dict(config.get("regions") or {})
    method = check(config)
    ivar = ivar if uses_ivar(method, cfg.get("noise_units")) else None
    if cfg.get("model_error_quantile") and model_sigma is None:
        raise InputError("config key regions.model_error_quantile: needs the model error calibrated on the "
                         f"training spectra ({MODEL_ERROR_FILE} of a run trained with it; 0 = off)")
    # baseline-corrected reconstruction (smooth misfit removed), model error and local noise scale (all
    # off at 0); the figures show this reconstruction, the one the detector compares with
    pre, _ = split_settings(preprocess_settings(cfg))
    recon, ivar = preprocess(x, recon, mask, ivar, axis=axis, **pre,
                             model_sigma=model_sigma if cfg.get("model_error_quantile") else None)
    return detect(x, recon, mask, axis, method=method, ivar=ivar, **params_of(method, cfg)), recon, ivar


def run(ctx) -> dict:
    cfg = dict(ctx.config.get("regions") or {})
    ds = ctx.dataset
    x = np.asarray(ds.test["x"])
    recon = np.asarray(ctx.recon_test).mean(0)
    if ctx.scaler is not None and getattr(ctx.scaler, "method", "none") != "none":
        x, recon = ctx.scaler.inverse(x), ctx.scaler.inverse(recon)  # ivar is in unscaled flux units
    mask = ds.test.get("mask")
    detrend_width, noise_width = int(cfg.get("detrend_width") or 0), int(cfg.get("noise_width") or 0)
    model_sigma = ctx.model_error
    if cfg.get("model_error_quantile") and model_sigma is None:
        model_sigma = calibrated_model_error(ctx, detrend_width, float(cfg["model_error_quantile"]),
                                             int(cfg.get("model_error_width") or 1))
        if ctx.run.writer:  # research.load_run's .regions() detects with it too
            np.save(ctx.run.path / MODEL_ERROR_FILE, model_sigma)
    regions, recon, ivar = find_regions(ctx.config, x, recon, mask, ds.test.get("ivar"), ds.axis, model_sigma)

    ids = ds.test_ids or [str(i) for i in range(len(x))]
    catalogue = ds.meta.get("catalogue", {})
    labels = ds.test_labels
    seed = int(cfg.get("seed", 0))
    chosen = select(regions.flags, bool(cfg.get("only_anomalous")), int(cfg.get("sample_n") or 0), seed)
    image_dir = cfg.get("image_dir") or SDSS_CACHE / "images"

    frame = ds.meta.get("frame", "observed")

    def regions_of(i):
        """The spectrum's regions, each with the nearest known line and any sky line it covers."""
        z = catalogue.get(ids[i], {}).get("z")
        return [{**r, **lines.label(r, frame, z if isinstance(z, float) else None)} if "start_wavelength" in r
                else r for r in regions.regions_of(i)]

    def describe(i):
        d = {"index": int(i), "id": ids[i], **catalogue.get(ids[i], {}), "score": float(regions.scores[i]),
             "flagged": bool(regions.flags[i]), "abs_threshold": json_number(regions.abs_threshold[i]),
             "rel_threshold": json_number(regions.rel_threshold[i]), "regions": regions_of(i)}
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
                None if mask is None else mask[i],
                [{**r, "label": lines.short_label(r)} for r in regions_of(i)], title,
                image=find_image(image_dir, ids[i]), xlabel=ds.axis_label, residual_threshold=None if ivar is not None else thr,
                residual_label="residual")))

    metadata = {
        "seed": seed, "only_anomalous": bool(cfg.get("only_anomalous")), "sample_n": int(cfg.get("sample_n") or 0),
        "sampled_indices": chosen.tolist(), "sampled_ids": [ids[i] for i in chosen],
        "detector": regions.params, "detrend_width": detrend_width, "noise_width": noise_width,
        "model_error_quantile": float(cfg.get("model_error_quantile") or 0.0),
        "relative_error": float(cfg.get("relative_error") or 0.0),
        "line_tolerance": float(cfg.get("line_tolerance") or 0.0),
        "line_halfwidth": float(cfg.get("line_halfwidth") or 0.0),
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
