"""Residual preprocessing before region detection: remove the smooth part of the model misfit.

A small autoencoder trained on few spectra does not reconstruct a galaxy to the noise level; most of
its misfit is broad (continuum shape), a few hundred pixels wide. Features worth reporting (lines,
troughs, dropped segments) are narrower. :func:`detrend` returns a *baseline-corrected*
reconstruction ``recon + running_median(orig - recon)`` so that only the narrow structure of the
residual is left; a running median of width ``W`` ignores a feature narrower than about ``W / 2``.

:func:`noise_scale` is a local, robust scale of the (detrended) residual in noise units: where the
model misfit is larger than the pipeline noise (e.g. around the galaxy's own strong lines), it is
> 1, and dividing ``ivar`` by its square keeps those places from counting as significant.

:func:`model_error` is the model's own error at each pixel of the common grid, measured on calibration
spectra (the training galaxies): the ``quantile`` over them of the squared residual beyond its noise
variance. In the rest frame the strong lines of a galaxy sit at the same pixels in every spectrum, and
so does the misfit of a model that reproduces them only on average; adding this error to the noise
(:func:`preprocess`, ``model_sigma``) keeps a held-out galaxy's own lines from counting as significant
there, and leaves the continuum (where an injected or real feature may land anywhere) at the noise.

:func:`relative_error` is an error proportional to the reconstruction's own line excess: a galaxy whose
lines are far stronger than the training galaxies' (an extreme emitter) is misfitted there by an amount
that grows with the line, which a per-pixel quantile over typical galaxies does not cover.
``relative_error = f`` adds ``(f * |recon - running_median(recon)|)^2`` to the noise variance
(:func:`preprocess`): the continuum (no excess) keeps its noise, a strong line tolerates a residual of
``f`` times its height.

:func:`line_error` is the same for the *observed* flux, only near the known lines
(:mod:`research.regions.lines`; rest-frame spectra): a starburst's own lines ([Ne III], Hδ, Hγ, He I,
[O III], Hα, ...), which the model does not draw at their strength, tolerate a residual of ``f`` times
their height, while a feature anywhere else keeps the noise alone.

Masked pixels (``mask`` False, non-finite values, or ``ivar <= 0``) are ignored: the running
statistics are taken over the usable pixels only (the window counts usable pixels), and masked
pixels get the value interpolated from their usable neighbours.
"""

from __future__ import annotations

import warnings

import numpy as np
from scipy import ndimage

from research.errors import InputError
from research.regions.lines import near_lines
from research.scoring import MAD_TO_SIGMA


def _usable(original, recon, mask, ivar=None) -> np.ndarray:
    good = np.isfinite(original) & np.isfinite(recon)
    if mask is not None:
        good &= np.asarray(mask, bool)
    if ivar is not None:
        good &= np.asarray(ivar) > 0
    return good


def running_median(values: np.ndarray, good: np.ndarray, width: int) -> np.ndarray:
    """Per row, the median of the ``width`` nearest usable values around every pixel.

    ``values``/``good`` are ``(N, L)`` (or ``(L,)``). The window slides over the row's usable pixels
    (masked ones are skipped, not counted); masked pixels get the linear interpolation of the
    result at their usable neighbours. A row without usable pixels gives zeros.
    """
    values = np.asarray(values, np.float64)
    good = np.asarray(good, bool)
    if values.shape != good.shape:
        raise InputError(f"residuals: values {values.shape} and mask {good.shape} differ")
    width = int(width)
    if width < 1:
        raise InputError(f"residuals: width must be >= 1, got {width}")
    squeeze = values.ndim == 1
    values, good = np.atleast_2d(values), np.atleast_2d(good)
    out = np.zeros_like(values)
    px = np.arange(values.shape[1])
    for i in range(len(values)):
        idx = np.flatnonzero(good[i])
        if idx.size == 0:
            continue
        med = ndimage.median_filter(values[i, idx], size=min(width, idx.size) | 1, mode="nearest")
        out[i] = med if idx.size == values.shape[1] else np.interp(px, idx, med)
    return out[0] if squeeze else out


def detrend(original: np.ndarray, recon: np.ndarray, mask: np.ndarray | None = None, width: int = 151,
            ivar: np.ndarray | None = None) -> np.ndarray:
    """Baseline-corrected reconstruction ``recon + running_median(original - recon, width)``.

    ``width`` in (usable) pixels; 0 or None returns ``recon`` unchanged. The result has the dtype of
    ``recon``; masked pixels follow the interpolated baseline.
    """
    recon = np.asarray(recon)
    if not width:
        return recon
    original = np.asarray(original)
    if original.shape != recon.shape:
        raise InputError(f"residuals: original {original.shape} and reconstruction {recon.shape} differ")
    good = _usable(original, recon, mask, ivar)
    resid = np.where(good, original.astype(np.float64) - recon, 0.0)
    return (recon + running_median(resid, good, width)).astype(recon.dtype)


def noise_scale(original: np.ndarray, recon: np.ndarray, ivar: np.ndarray, mask: np.ndarray | None = None,
                width: int = 101, floor: float = 1.0) -> np.ndarray:
    """Local robust scale of ``(original - recon) * sqrt(ivar)``: 1.4826 x the running median of its
    absolute value over ``width`` usable pixels, at least ``floor`` (1 = the pipeline noise)."""
    original, recon, ivar = np.asarray(original), np.asarray(recon), np.asarray(ivar)
    good = _usable(original, recon, mask, ivar)
    chi = np.where(good, np.abs(original.astype(np.float64) - recon) * np.sqrt(np.where(good, ivar, 0.0)), 0.0)
    return np.maximum(MAD_TO_SIGMA * running_median(chi, good, width), floor)


def model_error(original, recon, mask, ivar, quantile: float = 0.5, width: int = 5) -> np.ndarray:
    """``(L,)`` the model error per pixel (flux units) over calibration spectra ``(N, L)``: the square root of
    the ``quantile`` over spectra of ``residual^2 - 1/ivar`` (the excess over the noise; pure noise gives 0
    up to the 0.68 quantile), at least 0, then the running maximum over ``width`` pixels (a line lands a
    pixel or two apart in galaxies whose redshift is off by that much). Pass the residual as the detector
    sees it (detrended)."""
    if not 0 < quantile < 1:
        raise InputError(f"config key regions.model_error_quantile: must be in (0, 1), got {quantile}")
    original, recon, ivar = (np.asarray(a, np.float64) for a in (original, recon, ivar))
    good = _usable(original, recon, mask, ivar)
    excess = np.where(good, (original - recon) ** 2 - 1 / np.where(good, ivar, 1.0), np.nan)
    with warnings.catch_warnings():  # a pixel masked in every spectrum: no error there (0)
        warnings.simplefilter("ignore", RuntimeWarning)
        sigma = np.sqrt(np.clip(np.nan_to_num(np.nanquantile(excess, quantile, axis=0)), 0, None))
    return ndimage.maximum_filter1d(sigma, max(int(width), 1), mode="nearest")


def with_model_error(ivar, model_sigma) -> np.ndarray:
    """``1 / (1/ivar + model_sigma^2)`` where ``ivar > 0`` (0 elsewhere): the noise and the model's error."""
    ivar = np.asarray(ivar)
    good = ivar > 0
    return np.where(good, 1 / (1 / np.where(good, ivar, 1.0) + np.asarray(model_sigma) ** 2), 0.0).astype(ivar.dtype)


CONTINUUM_WIDTH = 51  # px: running median of the reconstruction taken as its continuum (lines are < ~10 px)


def relative_error(recon, mask=None, fraction: float = 0.0, width: int = CONTINUUM_WIDTH) -> np.ndarray:
    """``fraction * |recon - running_median(recon, width)|`` (flux units, shape of ``recon``): an error
    proportional to the reconstruction's line excess over its own continuum (0 on the continuum)."""
    recon = np.asarray(recon, np.float64)
    good = np.isfinite(recon) if mask is None else np.asarray(mask, bool) & np.isfinite(recon)
    values = np.where(good, recon, 0.0)
    return float(fraction) * np.abs(values - running_median(values, good, width))


def line_error(original, mask, near, fraction: float, width: int = CONTINUUM_WIDTH) -> np.ndarray:
    """``fraction * |original - running_median(original, width)|`` at the pixels ``near`` a known line
    (bool, ``(L,)`` or the shape of ``original``), 0 elsewhere (flux units)."""
    return relative_error(original, mask, fraction, width) * np.asarray(near, bool)


PREPROCESS_KEYS = {  # detector-settings key -> preprocess() keyword
    "detrend_width": "detrend_width", "noise_width": "noise_width", "model_sigma": "model_sigma",
    "relative_error": "relative", "line_tolerance": "line_tolerance", "line_halfwidth": "line_halfwidth"}


def split_settings(settings: dict) -> tuple[dict, dict]:
    """``(preprocess keyword arguments, the rest)`` of a dict of detector settings: one place that knows
    which settings are the residual's preprocessing and which the detector's own."""
    rest = dict(settings)
    return {PREPROCESS_KEYS[k]: rest.pop(k) for k in list(rest) if k in PREPROCESS_KEYS and rest[k] is not None}, rest


def preprocess(original, recon, mask=None, ivar=None, detrend_width: int | None = 0,
               noise_width: int | None = 0, model_sigma=None,
               relative: float = 0.0, line_tolerance: float = 0.0, line_halfwidth: float = 6.0,
               axis=None) -> tuple[np.ndarray, np.ndarray | None]:
    """``(recon', ivar')`` for a region detector: the detrended reconstruction
    (``detrend_width``; 0 = off), ``ivar`` with the model error ``model_sigma`` (:func:`model_error`; None = off),
    the :func:`relative_error` of the detrended reconstruction (``relative``; 0 = off) and the
    :func:`line_error` within ``line_halfwidth`` Å of the known lines (``line_tolerance``; 0 = off; ``axis``
    = rest wavelengths) added to the noise, then divided by the squared local :func:`noise_scale` of the
    detrended residual (``noise_width``; 0 = off, and off when ``ivar`` is None)."""
    recon = detrend(original, recon, mask, int(detrend_width or 0), ivar)
    if model_sigma is not None and ivar is not None:
        ivar = with_model_error(ivar, model_sigma)
    if relative and ivar is not None:
        if relative < 0:
            raise InputError(f"config key regions.relative_error: must be >= 0, got {relative}")
        ivar = with_model_error(ivar, relative_error(recon, mask, relative))
    if line_tolerance and ivar is not None:
        if line_tolerance < 0:
            raise InputError(f"config key regions.line_tolerance: must be >= 0, got {line_tolerance}")
        if axis is None:
            raise InputError("config key regions.line_tolerance: needs the spectra's rest wavelengths (axis)")
        ivar = with_model_error(ivar, line_error(original, mask, near_lines(axis, line_halfwidth), line_tolerance))
    if noise_width and ivar is not None:
        scale = noise_scale(original, recon, ivar, mask, noise_width)
        ivar = (np.asarray(ivar, np.float64) / scale ** 2).astype(np.asarray(ivar).dtype)
    return recon, ivar
