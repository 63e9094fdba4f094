"""Matched-filter region detection: windows whose summed residual is significant in noise sigma.

The window rule of :mod:`research.regions.window` compares the *mean absolute* residual of a window
with a percentile of the spectrum's own residuals. Absolute values do not average noise down, so
a narrow line of 5 sigma peak barely moves a 10-pixel window mean, and the percentile rises with
the model's misfit. Here the statistic is the significance of the window's *signed* summed
residual, the boxcar matched filter of line searches::

    chi_i = (orig_i - recon_i) * sqrt(ivar_i)          (usable pixels only)
    z_w(j) = sum of chi over the window of w pixels centred on j / sqrt(usable pixels in it)

For white noise ``z_w`` is a standard normal at every scale ``w``; a feature of peak ``A`` sigma
and width ``s`` reaches about ``A * sqrt(s)``. Windows at several ``scales`` catch spikes and
wide dropped segments alike. Where the model misfit is larger than the noise, ``z`` is not unit
normal: ``local_scale_block > 0`` divides each ``z_w`` by its robust scale (1.4826 x median
``|z_w|``) in blocks of that many pixels, linearly interpolated, at least 1.

A pixel is flagged when the window centred on it has ``|z_w| > significance`` at any scale and
at least ``min_coverage`` of that window is usable: the flagged pixels are where the filter
response exceeds the threshold, which for a feature of span ``S`` is about ``S`` plus part of a
window, not the union of whole windows (that would spread a 5-pixel line over 64). Runs of
flagged pixels separated by at most ``merge_gap`` pixels are joined, and the runs are the
regions. The spectrum's score is the fraction of its usable pixels inside regions; it is flagged
when the score exceeds ``overall_anomaly_threshold``. Vectorised over the spectra of a chunk (cumulative sums, no loop
per spectrum or window); working memory is a few float64 rows per spectrum of a chunk.
"""

from __future__ import annotations

import warnings

import numpy as np

from research.errors import InputError
from research.regions.base import Regions, spans
from research.regions.registry import Detector
from research.scoring import MAD_TO_SIGMA

DEFAULT_SCALES = (4, 8, 16, 32, 64)


def _check(original, recon, mask, ivar, scales, significance):
    shape = np.shape(original)
    if len(shape) != 2 or np.shape(recon) != shape:
        raise InputError(f"matched filter: original {shape} and reconstruction {np.shape(recon)} must be equal (N, L)")
    if ivar is None:
        raise InputError("matched filter: needs ivar (significance is in noise sigma)")
    for name, a in (("mask", mask), ("ivar", ivar)):
        if a is not None and np.shape(a) != shape:
            raise InputError(f"matched filter: {name} shape {np.shape(a)} differs from the spectra {shape}")
    if not scales or any(int(w) < 1 for w in scales):
        raise InputError(f"matched filter: scales must be window widths >= 1 pixel, got {scales}")
    if not significance > 0:
        raise InputError(f"matched filter: significance must be > 0 sigma, got {significance}")


def _block_scale(z: np.ndarray, ok: np.ndarray, block: int) -> np.ndarray:
    """Robust scale of ``z`` (where ``ok``) per block of ``block`` pixels, interpolated between block centres."""
    n, length = z.shape
    nb = -(-length // block)
    vals = np.full((n, nb * block), np.nan)
    vals[:, :length] = np.where(ok, np.abs(z), np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN blocks (fully masked) give NaN
        med = MAD_TO_SIGMA * np.nanmedian(vals.reshape(n, nb, block), axis=2)
    centres = np.minimum(np.arange(nb) * block + (block - 1) / 2, length - 1)
    px = np.arange(length)
    out = np.ones((n, length))
    for i in range(n):  # np.interp is 1-D; one call per row over precomputed block medians
        good = np.isfinite(med[i])
        if good.any():
            out[i] = np.interp(px, centres[good], med[i, good])
    return out


def _prefix_sums(a: np.ndarray) -> np.ndarray:
    """``out[:, j] = a[:, :j].sum(1)``: any window sum is then one subtraction."""
    out = np.zeros((a.shape[0], a.shape[1] + 1))
    np.cumsum(a, axis=1, out=out[:, 1:])
    return out


def _significance(csum, cgood, good, width, min_coverage, block):
    """``(z, window_ok)`` at one scale for a chunk of rows, from the prefix sums of chi and of usable pixels."""
    length = good.shape[1]
    lo = np.clip(np.arange(length) - width // 2, 0, length)
    hi = np.clip(np.arange(length) - width // 2 + width, 0, length)
    used = cgood[:, hi] - cgood[:, lo]
    ok = used >= max(1.0, min_coverage * width)
    z = np.where(ok, (csum[:, hi] - csum[:, lo]) / np.sqrt(np.maximum(used, 1)), 0.0)
    if block:
        z /= np.maximum(_block_scale(z, ok & good, block), 1.0)
    return z, ok


def _close_gaps(flags: np.ndarray, gap: int) -> np.ndarray:
    """``flags`` with every run of at most ``gap`` unflagged pixels between two flagged ones filled."""
    from scipy import ndimage
    padded = np.pad(flags, ((0, 0), (gap + 1, gap + 1)))
    closed = ndimage.binary_closing(padded, structure=np.ones((1, gap + 1), bool))
    return closed[:, gap + 1:-gap - 1] | flags


def _runs(flags: np.ndarray):
    """Rows, starts and ends of the runs of True in each row of ``flags``, ordered by row then start."""
    edges = np.diff(np.pad(flags.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    rows, start = np.nonzero(edges == 1)
    _, end = np.nonzero(edges == -1)
    return rows, start, end


def detect_significant_regions(original, recon, mask=None, axis=None, *, ivar, scales=DEFAULT_SCALES,
                               significance: float = 5.0, local_scale_block: int = 0, min_coverage: float = 0.5,
                               merge_gap: int = 0, overall_anomaly_threshold: float = 0.3, chunk_size: int = 256) -> Regions:
    """Regions of significant signed residual in every spectrum (rule in the module docstring).

    ``original``/``recon``/``mask``/``ivar`` are ``(N, L)`` (mask True = usable) and may be
    memory-mapped; ``axis`` gives the wavelength of each pixel. Returns :class:`Regions` with
    ``window_flags`` holding the per-pixel flags and ``abs_threshold`` the significance (sigma).
    """
    scales = tuple(int(w) for w in np.atleast_1d(scales))
    _check(original, recon, mask, ivar, scales, significance)
    n, length = np.shape(original)
    block = int(local_scale_block or 0)
    pixel_flags = np.zeros((n, length), bool)
    n_usable, usable_flagged = np.zeros(n, np.int64), np.zeros(n, np.int64)
    chunk = max(1, int(chunk_size))
    for lo_row in range(0, n, chunk):
        sl = slice(lo_row, lo_row + chunk)
        o = np.asarray(original[sl], np.float64)
        r = np.asarray(recon[sl], np.float64)
        iv = np.asarray(ivar[sl], np.float64)
        good = np.isfinite(o) & np.isfinite(r) & np.isfinite(iv) & (iv > 0)
        if mask is not None:
            good &= np.asarray(mask[sl], bool)
        with np.errstate(invalid="ignore"):  # unusable pixels (NaN, ivar <= 0) are replaced by 0
            chi = np.where(good, (o - r) * np.sqrt(iv), 0.0)
        csum, cgood = _prefix_sums(chi), _prefix_sums(good)
        flags = pixel_flags[sl]
        for width in scales:
            z, ok = _significance(csum, cgood, good, width, min_coverage, block)
            flags |= ok & (np.abs(z) > significance)
        if merge_gap:
            flags[:] = _close_gaps(flags, int(merge_gap))
        n_usable[sl] = good.sum(1)
        usable_flagged[sl] = (flags & good).sum(1)
    rows, start, end = _runs(pixel_flags)
    scores = usable_flagged / np.maximum(n_usable, 1)
    wl0, wl1 = spans(start, end, axis)
    params = {"method": "matched_filter", "scales": list(scales), "significance": float(significance),
              "local_scale_block": block, "min_coverage": float(min_coverage), "merge_gap": int(merge_gap),
              "overall_anomaly_threshold": float(overall_anomaly_threshold), "noise_units": True}
    return Regions(rows, start, end, wl0, wl1, scores, scores > overall_anomaly_threshold,
                   np.full(n, float(significance)), np.full(n, np.nan), pixel_flags, params, "matched_filter")


def thresholds(regions: Regions) -> dict:
    p = regions.params
    return {"significance": p["significance"], **{k: p[k] for k in (
        "scales", "local_scale_block", "min_coverage", "merge_gap", "overall_anomaly_threshold")}}


DETECTOR = Detector(detect_significant_regions, {
    "scales": "window widths (px) of the summed residual",
    "significance": "a pixel is flagged where a window's |summed residual| exceeds this many sigma",
    "local_scale_block": "> 0: divide each scale's significance by its robust scale in blocks of this many px",
    "min_coverage": "least usable fraction of a window for it to count",
    "merge_gap": "join runs of flagged pixels at most this many px apart",
    "overall_anomaly_threshold": "a spectrum is flagged above this fraction of its usable pixels in regions",
    "chunk_size": "spectra per vectorised step (bounds the working memory)",
}, thresholds, needs_ivar=True)
