"""Windowed residual anomaly-region detection for 1-D spectra.

The rule (seed parameters: ``window_size=50``, ``percentile_threshold=95``,
``range_mismatch_factor=1.5``, ``overall_anomaly_threshold=0.3``):

1. Residuals over the usable pixels (``mask`` True, finite values, and ``ivar > 0`` when ivar is
   given): absolute ``|orig - recon|`` (times ``sqrt(ivar)``, i.e. in noise sigma, when ``ivar``
   is given) and relative ``|orig - recon| / (|orig| + 1e-8)``.
2. Thresholds: the ``percentile_threshold`` percentile (numpy's linear interpolation) of the
   absolute and of the relative residuals, taken over each spectrum's own usable pixels
   (``threshold_scope='spectrum'``, default) or over the usable pixels of all spectra together
   (``'global'``). Explicit ``abs_threshold`` / ``rel_threshold`` override the percentile.
3. The spectrum is cut into consecutive non-overlapping windows of ``window_size`` pixels (the
   last one may be shorter). A window with at least one usable pixel is flagged when
   (a) the mean absolute residual exceeds the absolute threshold **and** the mean relative residual
   exceeds the relative threshold, or (b) the dynamic range (max - min over usable pixels) of the
   reconstruction and of the original differ by more than ``range_mismatch_factor`` either way
   (``None`` or 0 disables the range test).
4. Consecutive flagged windows merge into one region ``[start, end)`` in pixels (and wavelength of
   the first and last pixel). The spectrum's score is the fraction of its usable windows that are
   flagged; it is flagged when the score exceeds ``overall_anomaly_threshold``.

``detect_regions`` runs a numba kernel (:mod:`research.regions.kernel`) over ``chunk_size`` spectra at a time, in parallel over the
spectra on numba's threads (``numba.set_num_threads``); its working memory is three float32 rows
per spectrum of a chunk (inputs may be memory-mapped). It repeats numpy's float arithmetic exactly
(float32 residuals, numpy's pairwise float32 sums for window means, exact order statistics and
``np.percentile``'s float64 interpolation), so its output equals that of ``detect_regions_loop``,
the plain per-spectrum, per-window Python loop of the same rule
(:mod:`research.regions.window_loop`); tests check this and ``bench/regions.py`` times both.
numba is imported and the kernel compiled (a few seconds, then cached in ``__pycache__``) on the
first call, not on import.
"""

from __future__ import annotations

import numpy as np

from research.errors import InputError
from research.regions.base import EPS, Regions, compact, spans
from research.regions.registry import Detector

SCOPES = ("spectrum", "global")


def _check(original, recon, mask, ivar, window_size, scope):
    original, recon = np.asarray(original), np.asarray(recon)
    if original.ndim != 2 or recon.shape != original.shape:
        raise InputError(f"regions: original {original.shape} and reconstruction {recon.shape} must be equal (N, L)")
    for name, a in (("mask", mask), ("ivar", ivar)):
        if a is not None and np.shape(a) != original.shape:
            raise InputError(f"regions: {name} shape {np.shape(a)} differs from the spectra {original.shape}")
    if int(window_size) < 1:
        raise InputError(f"regions: window_size must be >= 1, got {window_size}")
    if scope not in SCOPES:
        raise InputError(f"regions: unknown threshold_scope {scope!r}; choose one of {SCOPES}")


def _global_thresholds(original, recon, mask, ivar, q, chunk_size):
    """The percentile of all usable absolute and relative residuals together, as the loop takes it."""
    parts = ([], [])
    for lo in range(0, len(original), chunk_size):
        o = np.asarray(original[lo:lo + chunk_size], np.float32)
        r = np.asarray(recon[lo:lo + chunk_size], np.float32)
        good = np.isfinite(o) & np.isfinite(r)
        if mask is not None:
            good &= np.asarray(mask[lo:lo + chunk_size], bool)
        if ivar is not None:
            iv = np.asarray(ivar[lo:lo + chunk_size], np.float32)
            good &= np.isfinite(iv) & (iv > 0)
        o, r = o[good], r[good]
        diff = np.abs(o - r)
        parts[0].append(diff * np.sqrt(iv[good]) if ivar is not None else diff)
        parts[1].append(diff / (np.abs(o) + np.float32(EPS)))
    vals = [np.concatenate(p) for p in parts]
    return [float(np.percentile(v, q)) if v.size else np.nan for v in vals]


def _range_factor(value) -> float | None:
    """The range-mismatch factor, or None when the range test is off (None, 0 or not finite)."""
    return float(value) if value and np.isfinite(value) else None


def _params(window_size, percentile_threshold, range_mismatch_factor, overall_anomaly_threshold, scope,
            abs_threshold, rel_threshold, ivar):
    return {"window_size": int(window_size), "percentile_threshold": float(percentile_threshold),
            "range_mismatch_factor": _range_factor(range_mismatch_factor),
            "overall_anomaly_threshold": float(overall_anomaly_threshold), "threshold_scope": scope,
            "abs_threshold": abs_threshold, "rel_threshold": rel_threshold, "noise_units": ivar is not None}


def detect_regions(original, recon, mask=None, axis=None, *, ivar=None, window_size: int = 50,
                   percentile_threshold: float = 95.0, range_mismatch_factor: float | None = 1.5,
                   overall_anomaly_threshold: float = 0.3, threshold_scope: str = "spectrum",
                   abs_threshold: float | None = None, rel_threshold: float | None = None,
                   chunk_size: int = 256) -> Regions:
    """Anomalous regions of every spectrum (rule in the module docstring), ``chunk_size`` rows at a time.

    ``original``/``recon``/``mask``/``ivar`` are ``(N, L)`` (mask True = usable pixel) and may be
    memory-mapped. The compiled kernel runs the spectra of a chunk in parallel on numba's threads
    (``numba.set_num_threads`` limits them). ``threshold_scope='global'`` first collects every
    usable residual (one float32 copy of the data) to take the shared percentile.
    """
    _check(original, recon, mask, ivar, window_size, threshold_scope)
    n, length = np.shape(original)
    window_size = int(window_size)
    n_windows = -(-length // window_size)
    chunk_size = max(1, int(chunk_size))
    factor = _range_factor(range_mismatch_factor)
    from research.regions import kernel  # imports numba

    abs_thr_all = np.full(n, np.nan)
    rel_thr_all = np.full(n, np.nan)
    global_thr = [np.nan, np.nan]
    if threshold_scope == "global" and (abs_threshold is None or rel_threshold is None):
        global_thr = _global_thresholds(original, recon, mask, ivar, percentile_threshold, chunk_size)
    fit = []
    for explicit, out, idx in ((abs_threshold, abs_thr_all, 0), (rel_threshold, rel_thr_all, 1)):
        fixed = float(explicit) if explicit is not None else global_thr[idx] if threshold_scope == "global" else None
        if fixed is not None:
            out[:] = fixed
        fit.append(fixed is None)

    window_flags = np.zeros((n, n_windows), bool)
    n_usable = np.zeros(n, np.int64)
    scratch = np.empty((min(chunk_size, n), 3, length), np.float32)  # per spectrum: 2 residual rows, 1 to select in
    no_mask, no_ivar = np.ones((1, length), bool), np.ones((1, length), np.float32)
    with kernel.numba.parallel_chunksize(8):  # small work units: threads stay busy when a core is shared
        for lo in range(0, n, chunk_size):
            hi = min(lo + chunk_size, n)
            kernel.rows(
                np.ascontiguousarray(original[lo:hi], np.float32), np.ascontiguousarray(recon[lo:hi], np.float32),
                no_mask if mask is None else np.ascontiguousarray(mask[lo:hi], bool),
                no_ivar if ivar is None else np.ascontiguousarray(ivar[lo:hi], np.float32),
                int(mask is not None), int(ivar is not None), float(percentile_threshold) / 100, fit[0], fit[1],
                abs_thr_all[lo:hi], rel_thr_all[lo:hi], window_size, np.float32(factor or 0), factor is not None,
                window_flags[lo:hi], n_usable[lo:hi], scratch)

    scores = window_flags.sum(1) / np.maximum(n_usable, 1)
    rows, start, end = kernel.find_regions(window_flags, window_size, length)
    wl0, wl1 = spans(start, end, axis)
    return Regions(rows, start, end, wl0, wl1, scores, scores > overall_anomaly_threshold,
                   abs_thr_all, rel_thr_all, window_flags,
                   _params(window_size, percentile_threshold, range_mismatch_factor, overall_anomaly_threshold,
                           threshold_scope, abs_threshold, rel_threshold, ivar))


def thresholds(regions: Regions) -> dict:
    """The thresholds used: scalars when one value applies to every spectrum, else lists."""
    p = regions.params
    return {"abs_residual_threshold": compact(regions.abs_threshold),
            "rel_residual_threshold": compact(regions.rel_threshold),
            "range_mismatch_factor": p["range_mismatch_factor"],
            "overall_anomaly_threshold": p["overall_anomaly_threshold"],
            "scope": p["threshold_scope"], "percentile": p["percentile_threshold"]}


DETECTOR = Detector(detect_regions, {
    "window_size": "pixels per window",
    "percentile_threshold": "percentile of the residuals that a window mean must exceed",
    "range_mismatch_factor": "flag a window whose original and reconstruction ranges differ by more; 0 = off",
    "overall_anomaly_threshold": "a spectrum is flagged above this fraction of flagged windows",
    "threshold_scope": "percentile over each spectrum's own residuals, or 'global'",
    "abs_threshold": "fixed absolute threshold instead of the percentile",
    "rel_threshold": "fixed relative threshold instead of the percentile; 0 = always passes",
    "chunk_size": "spectra per call of the compiled kernel (bounds the working memory)",
}, thresholds)
