"""Anomaly scores from reconstruction errors, and the thresholds that turn scores into flags."""

from __future__ import annotations

import numpy as np

from research.errors import InputError

METHODS = ("mean_std", "percentile", "median_mad")
NORMALIZERS = ("none", "tv")
SPLITS = ("train", "val", "test")  # the splits a threshold can be fitted on
MAD_TO_SIGMA = 1.4826  # MAD of a Gaussian times this is its standard deviation


def ensemble_scores(member_errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Ensemble mean and spread (std across members) of per-sample errors shaped ``(K, N)``."""
    member_errors = np.asarray(member_errors, np.float64)
    return member_errors.mean(0), member_errors.std(0)


def complexity(x: np.ndarray) -> np.ndarray:
    """Total variation of each sample: mean absolute difference between neighbours, summed over
    the sample's axes (``(N, L)`` signals, ``(N, H, W)`` images, a trailing channel axis counts too)."""
    x = np.asarray(x, np.float64)
    return sum(np.abs(np.diff(x, axis=a)).reshape(len(x), -1).mean(1) for a in range(1, x.ndim) if x.shape[a] > 1)


def check_normalizer(method: str) -> None:
    """Fails before any training when ``score.normalize`` names no normaliser."""
    if method not in NORMALIZERS:
        raise InputError(f"config key score.normalize: unknown method {method!r}; choose one of {NORMALIZERS}")


def check_threshold(cfg) -> None:
    """Fails before any training when the ``threshold`` block could not be applied after it."""
    if cfg.method not in METHODS:
        raise InputError(f"config key threshold.method: unknown method {cfg.method!r}; choose one of {METHODS}")
    if cfg.fit_on not in SPLITS:
        raise InputError(f"config key threshold.fit_on: {cfg.fit_on!r} is not one of {SPLITS}")
    if cfg.method == "percentile" and not 0 <= cfg.percentile <= 100:
        raise InputError(f"config key threshold.percentile: must be in [0, 100], got {cfg.percentile}")


def normalize(member_errors: np.ndarray, x: np.ndarray, method: str = "none") -> np.ndarray:
    """Reconstruction errors ``(K, N)`` of the samples ``x``, divided by each sample's complexity.

    ``tv``: textured or busy samples reconstruct worse whatever their class, so the raw error
    partly ranks complexity; dividing by the sample's own total variation removes that (the
    "input complexity" correction of Serrà et al., ICLR 2020). ``none`` returns the errors as they are.
    """
    if method == "none":
        return np.asarray(member_errors)
    check_normalizer(method)
    return np.asarray(member_errors) / (complexity(x) + 1e-6)


def threshold(errors: np.ndarray, method: str, k: float = 2.0, percentile: float = 95.0) -> float:
    """``mean_std``: mean + k·std; ``percentile``: the given percentile;
    ``median_mad``: median + k·1.4826·MAD (k in Gaussian-σ units, robust to outliers in the fit set)."""
    errors = np.asarray(errors, np.float64)
    if errors.size == 0:
        raise InputError("threshold: no errors to fit the threshold on")
    if method == "mean_std":
        return float(errors.mean() + k * errors.std())
    if method == "percentile":
        return float(np.percentile(errors, percentile))
    if method == "median_mad":
        med = np.median(errors)
        return float(med + k * MAD_TO_SIGMA * np.median(np.abs(errors - med)))
    raise InputError(f"config key threshold.method: unknown method {method!r}; choose one of {METHODS}")


def flag(scores: np.ndarray, thr: float) -> np.ndarray:
    """1 where the score is strictly above the threshold (anomalous), else 0."""
    return (np.asarray(scores) > thr).astype(np.int32)
