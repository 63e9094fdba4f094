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

``detect_regions`` runs a numba kernel over ``chunk_size`` spectra at a time, in parallel over the
spectra on numba's threads (``numba.set_num_threads``); its working memory is three float32 rows
per spectrum of a chunk (inputs may be memory-mapped). It repeats numpy's float arithmetic exactly
(float32 residuals, numpy's pairwise float32 sums for window means, exact order statistics and
``np.percentile``'s float64 interpolation), so its output equals that of ``detect_regions_loop``,
the plain per-spectrum, per-window Python loop of the same rule; tests check this and
``bench/regions.py`` times both. numba is imported and the kernel compiled (a few seconds, then
cached in ``__pycache__``) on the first call, not on import.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from research.errors import InputError

EPS = 1e-8
SCOPES = ("spectrum", "global")


def json_number(value) -> float | None:
    """A threshold for JSON: None where the detector has none (NaN), so files stay standard JSON."""
    return float(value) if np.isfinite(value) else None


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
            return [json_number(v) for v in a]
        if self.params.get("method") == "matched_filter":
            keys = ("scales", "local_scale_block", "min_coverage", "merge_gap", "overall_anomaly_threshold")
            return {"significance": self.params["significance"], **{k: self.params[k] for k in keys}}
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


# ---- compiled kernel ---------------------------------------------------------------------------
# Plain Python below, compiled by numba on the first call of _compiled() (so importing this module
# does not import numba). The functions call each other through module globals, which
# _compiled() replaces by their compiled versions; machine code is cached in __pycache__.

_prange = range


def _sum32(a, lo, n):
    """``np.sum(a[lo:lo + n])`` of float32 ``a``, bit for bit: numpy's pairwise summation (8 accumulators
    over blocks of at most 128, halved at multiples of 8 above). No recursion: numba cannot cache it."""
    if n > 128:
        node_lo, node_n, node_open = np.empty(128, np.int64), np.empty(128, np.int64), np.empty(128, np.bool_)
        vals = np.empty(128, np.float32)
        node_lo[0], node_n[0], node_open[0] = lo, n, False
        top, n_vals = 0, 0
        while top >= 0:
            b_lo, b_n, done = node_lo[top], node_n[top], node_open[top]
            if done:  # both halves summed: combine them
                n_vals -= 1
                vals[n_vals - 1] = vals[n_vals - 1] + vals[n_vals]
                top -= 1
            elif b_n <= 128:
                vals[n_vals] = _sum32_block(a, b_lo, b_n)
                n_vals += 1
                top -= 1
            else:
                half = b_n // 2
                half -= half % 8
                node_open[top] = True
                node_lo[top + 1], node_n[top + 1], node_open[top + 1] = b_lo + half, b_n - half, False
                node_lo[top + 2], node_n[top + 2], node_open[top + 2] = b_lo, half, False
                top += 2
        return vals[0]
    return _sum32_block(a, lo, n)


def _sum32_block(a, lo, n):
    """numpy's pairwise sum of ``a[lo:lo + n]`` for ``n <= 128``."""
    if n < 8:
        res = np.float32(0)
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = lo + 8
    stop = lo + n - n % 8
    while i < stop:
        r0 += a[i]
        r1 += a[i + 1]
        r2 += a[i + 2]
        r3 += a[i + 3]
        r4 += a[i + 4]
        r5 += a[i + 5]
        r6 += a[i + 6]
        r7 += a[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        res += a[i]
        i += 1
    return res


def _select(a, lo, hi, k):
    """Reorder ``a[lo:hi + 1]`` so that ``a[k]`` is its (k - lo)-th smallest and ``a[k + 1:hi + 1] >= a[k]``."""
    for _ in range(64):  # quickselect, median-of-3 pivot (Hoare partition)
        if hi <= lo:
            return a[k]
        mid = (lo + hi) >> 1
        if a[mid] < a[lo]:
            a[mid], a[lo] = a[lo], a[mid]
        if a[hi] < a[lo]:
            a[hi], a[lo] = a[lo], a[hi]
        if a[hi] < a[mid]:
            a[hi], a[mid] = a[mid], a[hi]
        pivot = a[mid]
        i, j = lo, hi
        while i <= j:
            while a[i] < pivot:
                i += 1
            while a[j] > pivot:
                j -= 1
            if i <= j:
                a[i], a[j] = a[j], a[i]
                i += 1
                j -= 1
        if k <= j:
            hi = j
        elif k >= i:
            lo = i
        else:
            return a[k]
    a[lo:hi + 1].sort()  # pathological pivots: finish with a sort
    return a[k]


def _select_fast(a, lo, hi, k):
    """As :func:`_select`, with a branch-free (Lomuto) partition while the range is large and the split fair."""
    while hi - lo > 32:
        mid = (lo + hi) >> 1
        x, y, z = a[lo], a[mid], a[hi]
        if (x <= y) == (y <= z):  # median of three to a[hi], as the pivot
            a[mid], a[hi] = z, y
        elif (y <= x) == (x <= z):
            a[lo], a[hi] = z, x
        pivot = a[hi]
        c = lo
        for j in range(lo, hi):  # a[lo:c] < pivot <= a[c:j]
            v = a[j]
            a[j] = a[c]
            a[c] = v
            c += v < pivot
        a[hi] = a[c]
        a[c] = pivot
        if k == c:
            return pivot
        size = hi - lo
        if k < c:
            hi = c - 1
        else:
            lo = c + 1
        if 16 * (hi - lo) > 15 * size:  # ties or bad pivots: finish with the Hoare partition
            break
    return _select(a, lo, hi, k)


def _order_pair(src, dst, n, k):
    """The k-th and (k+1)-th smallest values of ``src[:n]`` (``k + 1 < n``), using ``dst`` as scratch;
    NaN, NaN if ``src[:n]`` holds a NaN.

    Floyd-Rivest style: two order statistics of every 16th value bracket the wanted ranks (with a
    3-sigma margin); one pass counts the values below and above the bracket and packs those inside
    it (a few hundred) into ``dst``, to select from. If the bracket misses, select from all values.
    """
    if n >= 1024:
        ns = n // 16
        for t in range(ns):
            dst[t] = src[16 * t]
        frac = k / n
        margin = 3.0 * np.sqrt(ns * frac * (1.0 - frac)) + 2.0
        i_lo, i_hi = int(np.floor(frac * ns - margin)), int(np.ceil(frac * ns + margin))
        b_lo, b_hi = -np.inf, np.inf
        if i_lo >= 0:
            b_lo = _select_fast(dst, 0, ns - 1, i_lo)
        if i_hi < ns:
            b_hi = _select_fast(dst, max(i_lo + 1, 0), ns - 1, i_hi)
        below, above, m = 0, 0, 0
        for j in range(n):
            x = src[j]
            below += x < b_lo
            above += x > b_hi
            dst[m] = x
            m += (x >= b_lo) & (x <= b_hi)
        if below + above + m < n:  # NaN (neither below, above nor inside)
            return np.nan, np.nan
        if below <= k and n - above >= k + 2:
            k -= below
            lower = _select_fast(dst, 0, m - 1, k)
            return lower, dst[k + 1:m].min()
    nans = 0
    for j in range(n):
        nans += src[j] != src[j]
    if nans:
        return np.nan, np.nan
    dst[:n] = src[:n]
    lower = _select_fast(dst, 0, n - 1, k)
    return lower, dst[k + 1:n].min()


def _percentile(src, dst, length, n, quant):
    """``np.percentile(usable.astype(np.float64), 100 * quant)`` bit for bit, where ``src[:length]`` holds
    the ``n`` usable values (all >= 0 or NaN) and -1 elsewhere; ``dst`` is scratch."""
    if n == 0:
        return np.nan
    virtual = (n - 1) * quant
    if virtual >= n - 1:  # numpy takes the last value for both neighbours, with previous index -1
        top = src[0]
        for j in range(length):
            if src[j] != src[j]:
                return np.nan
            top = max(top, src[j])
        prev, lower, upper = -1.0, np.float64(top), np.float64(top)
    else:
        k = int(np.floor(virtual))
        lo_val, hi_val = _order_pair(src, dst, length, length - n + k)  # the -1s rank first
        if lo_val != lo_val:
            return np.nan  # as numpy: NaN in the data gives NaN
        prev, lower, upper = float(k), np.float64(lo_val), np.float64(hi_val)
    t = virtual - prev
    diff = upper - lower
    if t >= 0.5:
        return upper - diff * (1 - t)
    return lower + diff * t


def _range_mismatch(o, r, relr, s, e, full, factor):
    """Whether the ranges (max - min) of ``o[s:e]`` and ``r[s:e]`` where ``relr`` is not -1 (all of it
    if ``full``) differ by more than ``factor`` either way."""
    o_hi, o_lo, r_hi, r_lo = o[s], o[s], r[s], r[s]
    if full:
        for j in range(s + 1, e):
            oj, rj = o[j], r[j]
            o_hi, o_lo, r_hi, r_lo = max(o_hi, oj), min(o_lo, oj), max(r_hi, rj), min(r_lo, rj)
    else:
        inf = np.float32(np.inf)
        o_hi, o_lo, r_hi, r_lo = -inf, inf, -inf, inf
        for j in range(s, e):
            if relr[j] != -1:
                oj, rj = o[j], r[j]
                o_hi, o_lo, r_hi, r_lo = max(o_hi, oj), min(o_lo, oj), max(r_hi, rj), min(r_lo, rj)
    o_range, r_range = o_hi - o_lo, r_hi - r_lo
    return o_range > factor * r_range or r_range > factor * o_range


def _rows(o, r, m, iv, mask_step, ivar_step, quant, fit_abs, fit_rel, abs_thr, rel_thr, window_size, factor,
          use_factor, flags, n_usable, scratch):
    """The whole rule for a block of spectra, in parallel over spectra.

    ``m``/``iv`` are the mask and ivar rows, or a single row of ones with ``mask_step``/``ivar_step`` 0.
    """
    for i in _prange(o.shape[0]):  # one call per spectrum: views taken inside stay contiguous
        _spectrum(i, o, r, m, iv, mask_step, ivar_step, quant, fit_abs, fit_rel, abs_thr, rel_thr, window_size,
                  factor, use_factor, flags, n_usable, scratch)


def _spectrum(i, o, r, m, iv, mask_step, ivar_step, quant, fit_abs, fit_rel, abs_thr, rel_thr, window_size, factor,
              use_factor, flags, n_usable, scratch):
    """Residuals, thresholds and window flags of spectrum ``i`` (arguments as for :func:`_rows`)."""
    length = o.shape[1]
    eps, inf = np.float32(EPS), np.float32(np.inf)
    absr, relr, sel = scratch[i, 0], scratch[i, 1], scratch[i, 2]  # residuals are -1 where unusable
    mi, vi = m[i * mask_step], iv[i * ivar_step]
    n = 0
    for j in range(length):  # no branches, so this loop is vectorised
        oj, rj, v = o[i, j], r[i, j], vi[j]
        ok = (abs(oj) < inf) & (abs(rj) < inf) & mi[j] & (abs(v) < inf) & (v > 0)
        diff = abs(oj - rj)
        absr[j] = diff * np.sqrt(v) if ok else np.float32(-1)
        relr[j] = diff / (abs(oj) + eps) if ok else np.float32(-1)
        n += ok
    if fit_abs:
        abs_thr[i] = _percentile(absr, sel, length, n, quant)
    if fit_rel:
        rel_thr[i] = _percentile(relr, sel, length, n, quant)
    o_row, r_row = o[i], r[i]
    usable = 0
    for w in range(flags.shape[1]):
        s = w * window_size
        e = min(s + window_size, length)
        c = 0
        for j in range(s, e):
            c += relr[j] != -1
        if c == 0:
            continue
        usable += 1
        hit = use_factor and _range_mismatch(o_row, r_row, relr, s, e, c == e - s, factor)
        if not hit:
            if c < e - s:  # pack the usable residuals to the window's start: numpy sums exactly these, in order
                c = 0
                for j in range(s, e):
                    ok = relr[j] != -1
                    absr[s + c] = absr[j]
                    relr[s + c] = relr[j]
                    c += ok
            hit = (np.float64(_sum32(absr, s, c)) / c > abs_thr[i]
                   and np.float64(_sum32(relr, s, c)) / c > rel_thr[i])
        flags[i, w] = hit
    n_usable[i] = usable


def _find_regions(flags, window_size, length):
    """Runs of flagged windows as (row, first pixel, one past the last pixel) arrays."""
    n, n_windows = flags.shape
    count = 0
    for i in range(n):
        for w in range(n_windows):
            count += flags[i, w] and (w == 0 or not flags[i, w - 1])
    rows, start, end = np.empty(count, np.int64), np.empty(count, np.int64), np.empty(count, np.int64)
    t = 0
    for i in range(n):
        w = 0
        while w < n_windows:
            if flags[i, w]:
                first = w
                while w + 1 < n_windows and flags[i, w + 1]:
                    w += 1
                rows[t], start[t], end[t] = i, first * window_size, min((w + 1) * window_size, length)
                t += 1
            w += 1
    return rows, start, end


_COMPILED = {}


def _compiled():
    """The numba-compiled functions (compiled, or loaded from numba's cache, on first use)."""
    if not _COMPILED:
        import numba

        names = globals()
        for name in ("_sum32_block", "_sum32", "_select", "_select_fast", "_order_pair", "_percentile",
                     "_range_mismatch", "_spectrum", "_find_regions"):
            names[name] = numba.njit(cache=True, nogil=True, error_model="numpy")(names[name])
        names["_prange"] = numba.prange
        _COMPILED["rows"] = numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")(_rows)
        _COMPILED["find_regions"] = names["_find_regions"]
        _COMPILED["numba"] = numba
    return _COMPILED


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
    compiled = _compiled()

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
    with compiled["numba"].parallel_chunksize(8):  # small work units: threads stay busy when a core is shared
        for lo in range(0, n, chunk_size):
            hi = min(lo + chunk_size, n)
            compiled["rows"](
                np.ascontiguousarray(original[lo:hi], np.float32), np.ascontiguousarray(recon[lo:hi], np.float32),
                no_mask if mask is None else np.ascontiguousarray(mask[lo:hi], bool),
                no_ivar if ivar is None else np.ascontiguousarray(ivar[lo:hi], np.float32),
                int(mask is not None), int(ivar is not None), float(percentile_threshold) / 100, fit[0], fit[1],
                abs_thr_all[lo:hi], rel_thr_all[lo:hi], window_size, np.float32(factor or 0), factor is not None,
                window_flags[lo:hi], n_usable[lo:hi], scratch)

    scores = window_flags.sum(1) / np.maximum(n_usable, 1)
    rows, start, end = compiled["find_regions"](window_flags, window_size, length)
    wl0 = wl1 = None
    if axis is not None:
        axis = np.asarray(axis)
        wl0, wl1 = axis[start], axis[end - 1]
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
    wl0 = wl1 = None
    if axis is not None:
        axis = np.asarray(axis)
        wl0, wl1 = axis[start], axis[end - 1]
    return Regions(np.asarray(region_rows, np.int64), start, end, wl0, wl1, scores,
                   scores > overall_anomaly_threshold, abs_thr_all, rel_thr_all, window_flags,
                   _params(window_size, percentile_threshold, range_mismatch_factor, overall_anomaly_threshold,
                           threshold_scope, abs_threshold, rel_threshold, ivar))


METHODS = ("window", "matched_filter")


def check_method(method: str) -> str:
    """``method`` when it names a region detector, else a one-line config error."""
    if method not in METHODS:
        raise InputError(f"config key regions.method: unknown method {method!r}; choose one of {METHODS}")
    return method


def uses_ivar(method: str, noise_units: bool) -> bool:
    """Whether the detector reads ``ivar``: the window rule only in noise units, the matched filter always."""
    return bool(noise_units) or check_method(method) == "matched_filter"


def detect(original, recon, mask=None, axis=None, *, method: str = "window", ivar=None, **params) -> Regions:
    """The region detector named by ``method``: ``'window'`` is :func:`detect_regions` (the seed rule;
    ``ivar`` puts absolute residuals in sigma), ``'matched_filter'`` is
    :func:`research.matched_filter.detect_significant_regions` (needs ``ivar``)."""
    if check_method(method) == "window":
        return detect_regions(original, recon, mask, axis, ivar=ivar, **params)
    from research.matched_filter import detect_significant_regions  # imports this module
    return detect_significant_regions(original, recon, mask, axis, ivar=ivar, **params)
