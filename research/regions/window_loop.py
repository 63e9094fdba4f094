"""The window rule (:mod:`research.regions.window`) as a plain loop over spectra and windows: the
reference that the compiled detector is tested against, and the baseline ``python -m bench.regions`` times."""

from __future__ import annotations

import numpy as np

from research.regions.base import EPS, Regions, spans
from research.regions.window import _check, _params, _range_factor


def detect_regions_loop(original, recon, mask=None, axis=None, *, ivar=None, window_size: int = 50,
                        percentile_threshold: float = 95.0, range_mismatch_factor: float | None = 1.5,
                        overall_anomaly_threshold: float = 0.3, threshold_scope: str = "spectrum",
                        abs_threshold: float | None = None, rel_threshold: float | None = None) -> Regions:
    """The same rule as :func:`detect_regions`, written as a plain loop over spectra and windows."""
    _check(original, recon, mask, ivar, window_size, threshold_scope)
    n, length = np.shape(original)
    n_windows = -(-length // window_size)
    factor = _range_factor(range_mismatch_factor)

    def residuals(i):
        o = np.asarray(original[i], np.float32)
        r = np.asarray(recon[i], np.float32)
        good = np.isfinite(o) & np.isfinite(r)
        if mask is not None:
            good &= np.asarray(mask[i], bool)
        iv = None
        if ivar is not None:
            iv = np.asarray(ivar[i], np.float32)
            good &= np.isfinite(iv) & (iv > 0)
        with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
            diff = np.abs(o - r)
            absr = diff * np.sqrt(iv) if iv is not None else diff
            relr = diff / (np.abs(o) + EPS)
        return o, r, good, absr, relr

    global_thr = None
    if threshold_scope == "global" and (abs_threshold is None or rel_threshold is None):
        all_abs, all_rel = [], []
        for i in range(n):
            _, _, good, absr, relr = residuals(i)
            all_abs.append(absr[good])
            all_rel.append(relr[good])
        global_thr = [float(np.percentile(np.concatenate(v), percentile_threshold)) for v in (all_abs, all_rel)]

    abs_thr_all, rel_thr_all = np.empty(n), np.empty(n)
    window_flags = np.zeros((n, n_windows), bool)
    scores = np.zeros(n)
    region_rows, region_start, region_end = [], [], []
    for i in range(n):
        o, r, good, absr, relr = residuals(i)
        thresholds = []
        for explicit, values, idx in ((abs_threshold, absr, 0), (rel_threshold, relr, 1)):
            if explicit is not None:
                thresholds.append(float(explicit))
            elif global_thr is not None:
                thresholds.append(global_thr[idx])
            else:
                thresholds.append(float(np.percentile(values[good].astype(np.float64), percentile_threshold))
                                  if good.any() else np.nan)
        abs_thr, rel_thr = thresholds
        abs_thr_all[i], rel_thr_all[i] = abs_thr, rel_thr
        usable = 0
        for w in range(n_windows):
            s, e = w * window_size, min((w + 1) * window_size, length)
            g = good[s:e]
            if not g.any():
                continue
            usable += 1
            hit = np.sum(absr[s:e][g]) / g.sum() > abs_thr and np.sum(relr[s:e][g]) / g.sum() > rel_thr
            if factor is not None:
                o_range = np.max(o[s:e][g]) - np.min(o[s:e][g])
                r_range = np.max(r[s:e][g]) - np.min(r[s:e][g])
                hit = hit or o_range > factor * r_range or r_range > factor * o_range
            window_flags[i, w] = hit
        scores[i] = window_flags[i].sum() / max(usable, 1)
        w = 0
        while w < n_windows:
            if window_flags[i, w]:
                first = w
                while w + 1 < n_windows and window_flags[i, w + 1]:
                    w += 1
                region_rows.append(i)
                region_start.append(first * window_size)
                region_end.append(min((w + 1) * window_size, length))
            w += 1

    start, end = np.asarray(region_start, np.int64), np.asarray(region_end, np.int64)
    wl0, wl1 = spans(start, end, axis)
    return Regions(np.asarray(region_rows, np.int64), start, end, wl0, wl1, scores,
                   scores > overall_anomaly_threshold, abs_thr_all, rel_thr_all, window_flags,
                   _params(window_size, percentile_threshold, range_mismatch_factor, overall_anomaly_threshold,
                           threshold_scope, abs_threshold, rel_threshold, ivar))

