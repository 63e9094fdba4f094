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
   (``None`` disables the range test).
4. Consecutive flagged windows merge into one region ``[start, end)`` in pixels (and wavelength of
   the first and last pixel). The spectrum's score is the fraction of its usable windows that are
   flagged; it is flagged when the score exceeds ``overall_anomaly_threshold``.

``detect_regions`` is vectorised over spectra and windows and processes ``chunk_size`` spectra at
a time, so its working memory is a few chunk-sized arrays (inputs may be memory-mapped).
``detect_regions_loop`` is the plain per-spectrum, per-window Python loop of the same rule; tests
check the two agree and ``bench/regions.py`` times them.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from research.errors import InputError

EPS = 1e-8
SCOPES = ("spectrum", "global")


@dataclasses.dataclass
class Regions:
    """Detected regions (one row per region) and per-spectrum results."""

    spectrum: np.ndarray  # (R,) index of the spectrum each region belongs to
    start: np.ndarray  # (R,) first pixel of the region
    end: np.ndarray  # (R,) one past the last pixel
    start_wavelength: np.ndarray | None  # (R,) axis value of the first pixel
    end_wavelength: np.ndarray | None  # (R,) axis value of the last pixel
    scores: np.ndarray  # (N,) fraction of usable windows flagged
    flags: np.ndarray  # (N,) bool, score > overall_anomaly_threshold
    abs_threshold: np.ndarray  # (N,) absolute residual threshold used for each spectrum
    rel_threshold: np.ndarray  # (N,) relative residual threshold used for each spectrum
    window_flags: np.ndarray  # (N, W) bool
    params: dict

    def regions_of(self, i: int) -> list[dict]:
        """Regions of spectrum ``i`` as dicts (pixels, and Angstrom when an axis was given)."""
        out = []
        for r in np.flatnonzero(self.spectrum == i):
            d = {"start": int(self.start[r]), "end": int(self.end[r])}
            if self.start_wavelength is not None:
                d["start_wavelength"] = float(self.start_wavelength[r])
                d["end_wavelength"] = float(self.end_wavelength[r])
            out.append(d)
        return out

    def thresholds(self) -> dict:
        """The thresholds used: scalars when one value applies to every spectrum, else lists."""
        def compact(a):
            a = np.asarray(a, np.float64)
            finite = a[np.isfinite(a)]
            if finite.size and np.all(finite == finite[0]):
                return float(finite[0])
            return [None if not np.isfinite(v) else float(v) for v in a]
        return {"abs_residual_threshold": compact(self.abs_threshold),
                "rel_residual_threshold": compact(self.rel_threshold),
                "range_mismatch_factor": self.params["range_mismatch_factor"],
                "overall_anomaly_threshold": self.params["overall_anomaly_threshold"],
                "scope": self.params["threshold_scope"], "percentile": self.params["percentile_threshold"]}


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


BIG = np.float32(3.0e38)  # stands in for infinity so masked pixels drop out of max/min/partition


@dataclasses.dataclass
class _Chunk:
    """A block of spectra with usable-pixel mask and residuals (unusable pixels hold 0)."""

    o: np.ndarray
    r: np.ndarray
    good: np.ndarray
    penalty: np.ndarray  # 0 where usable, -BIG where not
    absr: np.ndarray
    relr: np.ndarray


def _prepare(o, r, m, iv) -> _Chunk:
    o = np.asarray(o, np.float32)
    r = np.asarray(r, np.float32)
    finite = np.isfinite(o) & np.isfinite(r)
    good = finite if m is None else finite & np.asarray(m, bool)
    if iv is not None:
        iv = np.asarray(iv, np.float32)
        good &= np.isfinite(iv) & (iv > 0)
    if not finite.all():
        o, r = np.where(finite, o, 0).astype(np.float32), np.where(finite, r, 0).astype(np.float32)
    weight = good.astype(np.float32)
    penalty = (weight - 1) * BIG
    absr = np.subtract(o, r)
    np.abs(absr, out=absr)
    relr = np.abs(o)
    relr += np.float32(EPS)
    np.divide(absr, relr, out=relr)
    if iv is not None:
        absr *= np.sqrt(np.where(good, iv, 0), dtype=np.float32)
    absr *= weight
    relr *= weight
    return _Chunk(o, r, good, penalty, absr, relr)


def _lerp(a, b, t):
    """numpy.percentile's linear interpolation, term for term, so both implementations agree."""
    with np.errstate(invalid="ignore"):
        diff = b - a
        return np.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def row_percentile(values: np.ndarray, good: np.ndarray, q: float, penalty: np.ndarray | None = None) -> np.ndarray:
    """``np.percentile(values[i][good[i]], q)`` for every row at once (NaN for an empty row).

    Exact, without a full selection over every row: unusable entries are pushed below every
    usable one (``penalty``); a partition of every 8th value gives each row a safe lower bound
    for the wanted order statistic; the (few) values above it are packed into a short array and
    sorted, and the wanted ranks are read off. Rows where the bound was not safe (or short rows)
    take an exact partition of the whole row.
    """
    n, length = values.shape
    count = good.sum(1)
    if penalty is None:  # callers that pass a penalty guarantee 0 at unusable entries
        penalty = np.where(good, 0, -BIG).astype(np.float32)
        values = np.where(good, values, 0).astype(np.float32)
    v = values + penalty
    h = (np.maximum(count, 1) - 1) * (q / 100.0)
    k = np.floor(h).astype(np.int64)
    lo_rank = np.minimum(length - count + k, length - 1)
    hi_rank = np.minimum(lo_rank + 1, length - 1)
    a = np.empty(n, np.float64)
    b = np.empty(n, np.float64)
    exact = np.ones(n, bool)
    step = 8
    if length >= 64 * step and n:
        sub = v[:, ::step]
        frac = lo_rank / length
        margin = 4 * np.sqrt(sub.shape[1] * frac * (1 - frac)) + 2
        kk = int(np.clip(np.floor(frac * sub.shape[1] - margin), 0, sub.shape[1] - 1).min())
        bound = np.partition(sub, kk, axis=1)[:, kk]
        cand = v >= bound[:, None]
        n_cand = cand.sum(1)
        # rows whose bound fell below most of the row (nearly all masked, or heavy ties) go exact
        fast = (n_cand <= length // 3) & (lo_rank >= length - n_cand)
        if fast.any():
            cand[~fast] = False
            n_cand = np.where(fast, n_cand, 0)
            vals = v[cand]
            width = int(n_cand.max())
            offsets = np.cumsum(n_cand) - n_cand
            row_of = np.repeat(np.arange(n), n_cand)
            dense = np.full((n, width), -np.inf, np.float32)
            dense[row_of, np.arange(vals.size) - offsets[row_of]] = vals
            dense.sort(axis=1)
            rows = np.flatnonzero(fast)
            shift = width - length
            a[rows] = dense[rows, lo_rank[rows] + shift]
            b[rows] = dense[rows, hi_rank[rows] + shift]
            exact = ~fast
    rows = np.flatnonzero(exact)
    if rows.size:
        kmin = int(lo_rank[rows].min())
        top = np.sort(np.partition(v[rows], kmin, axis=1)[:, kmin:], axis=1)
        a[rows] = top[np.arange(rows.size), lo_rank[rows] - kmin]
        b[rows] = top[np.arange(rows.size), hi_rank[rows] - kmin]
    return np.where(count > 0, _lerp(a, b, h - k), np.nan)


def _window_flags(c: _Chunk, abs_thr, rel_thr, window_size, factor):
    length = c.o.shape[1]
    starts = np.arange(0, length, window_size)
    count = np.add.reduceat(c.good, starts, axis=1, dtype=np.int32)
    denom = np.maximum(count, 1)
    mean_abs = np.add.reduceat(c.absr, starts, axis=1) / denom
    mean_rel = np.add.reduceat(c.relr, starts, axis=1) / denom
    flagged = (mean_abs > abs_thr[:, None]) & (mean_rel > rel_thr[:, None])
    if factor is not None:
        ranges = []
        for a in (c.o, c.r):
            hi = np.maximum.reduceat(a + c.penalty, starts, axis=1)
            lo = np.minimum.reduceat(a - c.penalty, starts, axis=1)
            with np.errstate(over="ignore"):
                ranges.append(hi - lo)
        o_range, r_range = ranges
        flagged |= (o_range > factor * r_range) | (r_range > factor * o_range)
    usable = count > 0
    return flagged & usable, usable


def _merge(window_flags, window_size, length, axis):
    n, w = window_flags.shape
    edges = np.diff(np.pad(window_flags, ((0, 0), (1, 1))).astype(np.int8), axis=1)
    rows, starts = np.nonzero(edges == 1)
    _, ends = np.nonzero(edges == -1)
    start = starts * window_size
    end = np.minimum(ends * window_size, length)
    if axis is None:
        return rows, start, end, None, None
    axis = np.asarray(axis)
    return rows, start, end, axis[start], axis[end - 1]


def _params(window_size, percentile_threshold, range_mismatch_factor, overall_anomaly_threshold, scope,
            abs_threshold, rel_threshold, ivar):
    return {"window_size": int(window_size), "percentile_threshold": float(percentile_threshold),
            "range_mismatch_factor": None if range_mismatch_factor is None else float(range_mismatch_factor),
            "overall_anomaly_threshold": float(overall_anomaly_threshold), "threshold_scope": scope,
            "abs_threshold": abs_threshold, "rel_threshold": rel_threshold, "noise_units": ivar is not None}


def detect_regions(original, recon, mask=None, axis=None, *, ivar=None, window_size: int = 50,
                   percentile_threshold: float = 95.0, range_mismatch_factor: float | None = 1.5,
                   overall_anomaly_threshold: float = 0.3, threshold_scope: str = "spectrum",
                   abs_threshold: float | None = None, rel_threshold: float | None = None,
                   chunk_size: int = 2048) -> Regions:
    """Anomalous regions of every spectrum (rule in the module docstring), ``chunk_size`` rows at a time.

    ``original``/``recon``/``mask``/``ivar`` are ``(N, L)`` (mask True = usable pixel) and may be
    memory-mapped. ``threshold_scope='global'`` first collects every usable residual (one
    float32 copy of the data) to take the shared percentile.
    """
    _check(original, recon, mask, ivar, window_size, threshold_scope)
    n, length = np.shape(original)
    n_windows = -(-length // window_size)
    chunk_size = max(1, int(chunk_size))
    factor = None if range_mismatch_factor is None or not np.isfinite(range_mismatch_factor) else float(range_mismatch_factor)

    def chunk(lo, hi) -> _Chunk:
        return _prepare(original[lo:hi], recon[lo:hi], None if mask is None else mask[lo:hi],
                        None if ivar is None else ivar[lo:hi])

    global_thr = None
    if threshold_scope == "global" and (abs_threshold is None or rel_threshold is None):
        collected = [[], []]
        for lo in range(0, n, chunk_size):
            c = chunk(lo, lo + chunk_size)
            collected[0].append(c.absr[c.good])
            collected[1].append(c.relr[c.good])
        vals = [np.concatenate(c) for c in collected]
        global_thr = [float(np.percentile(v, percentile_threshold)) if v.size else np.nan for v in vals]

    abs_thr_all = np.empty(n)
    rel_thr_all = np.empty(n)
    window_flags = np.zeros((n, n_windows), bool)
    usable_windows = np.zeros((n, n_windows), bool)
    for lo in range(0, n, chunk_size):
        c = chunk(lo, lo + chunk_size)
        rows = c.o.shape[0]
        thr = []
        for explicit, values, idx in ((abs_threshold, c.absr, 0), (rel_threshold, c.relr, 1)):
            if explicit is not None:
                thr.append(np.full(rows, float(explicit)))
            elif global_thr is not None:
                thr.append(np.full(rows, global_thr[idx]))
            else:
                thr.append(row_percentile(values, c.good, percentile_threshold, c.penalty))
        abs_thr_all[lo:lo + rows], rel_thr_all[lo:lo + rows] = thr
        wf, usable = _window_flags(c, thr[0], thr[1], window_size, factor)
        window_flags[lo:lo + rows], usable_windows[lo:lo + rows] = wf, usable

    scores = window_flags.sum(1) / np.maximum(usable_windows.sum(1), 1)
    rows, start, end, wl0, wl1 = _merge(window_flags, window_size, length, axis)
    return Regions(rows, start, end, wl0, wl1, scores, scores > overall_anomaly_threshold,
                   abs_thr_all, rel_thr_all, window_flags,
                   _params(window_size, percentile_threshold, range_mismatch_factor, overall_anomaly_threshold,
                           threshold_scope, abs_threshold, rel_threshold, ivar))


def detect_regions_loop(original, recon, mask=None, axis=None, *, ivar=None, window_size: int = 50,
                        percentile_threshold: float = 95.0, range_mismatch_factor: float | None = 1.5,
                        overall_anomaly_threshold: float = 0.3, threshold_scope: str = "spectrum",
                        abs_threshold: float | None = None, rel_threshold: float | None = None) -> Regions:
    """The same rule as :func:`detect_regions`, written as a plain loop over spectra and windows."""
    _check(original, recon, mask, ivar, window_size, threshold_scope)
    n, length = np.shape(original)
    n_windows = -(-length // window_size)
    factor = None if range_mismatch_factor is None or not np.isfinite(range_mismatch_factor) else float(range_mismatch_factor)

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
    wl0 = wl1 = None
    if axis is not None:
        axis = np.asarray(axis)
        wl0, wl1 = axis[start], axis[end - 1]
    return Regions(np.asarray(region_rows, np.int64), start, end, wl0, wl1, scores,
                   scores > overall_anomaly_threshold, abs_thr_all, rel_thr_all, window_flags,
                   _params(window_size, percentile_threshold, range_mismatch_factor, overall_anomaly_threshold,
                           threshold_scope, abs_threshold, rel_threshold, ivar))
