"""The compiled (numba) kernel of the window rule (:mod:`research.regions.window`).

It repeats numpy's float arithmetic exactly: float32 residuals, numpy's pairwise float32 sums for
window means, exact order statistics and ``np.percentile``'s float64 interpolation, so its output
equals the plain loop's (:mod:`research.regions.window_loop`). Importing this module imports numba;
each function compiles on its first call (a few seconds, then cached in ``__pycache__``), so
:mod:`research.regions.window` imports it only when it detects.
"""

import numba
import numpy as np

from research.regions.base import EPS


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
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


@numba.njit(parallel=True, cache=True, nogil=True, error_model="numpy")
def rows(o, r, m, iv, mask_step, ivar_step, quant, fit_abs, fit_rel, abs_thr, rel_thr, window_size, factor,
          use_factor, flags, n_usable, scratch):
    """The whole rule for a block of spectra, in parallel over spectra.

    ``m``/``iv`` are the mask and ivar rows, or a single row of ones with ``mask_step``/``ivar_step`` 0.
    """
    for i in numba.prange(o.shape[0]):  # one call per spectrum: views taken inside stay contiguous
        _spectrum(i, o, r, m, iv, mask_step, ivar_step, quant, fit_abs, fit_rel, abs_thr, rel_thr, window_size,
                  factor, use_factor, flags, n_usable, scratch)


@numba.njit(cache=True, nogil=True, error_model="numpy")
def _spectrum(i, o, r, m, iv, mask_step, ivar_step, quant, fit_abs, fit_rel, abs_thr, rel_thr, window_size, factor,
              use_factor, flags, n_usable, scratch):
    """Residuals, thresholds and window flags of spectrum ``i`` (arguments as for :func:`rows`)."""
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


@numba.njit(cache=True, nogil=True, error_model="numpy")
def find_regions(flags, window_size, length):
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
