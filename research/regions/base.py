"""The result every region detector returns: regions as rows, and per-spectrum scores and flags."""

from __future__ import annotations

import dataclasses

import numpy as np

EPS = 1e-8


def json_number(value) -> float | None:
    """A threshold for JSON: None where the detector has none (NaN), so files stay standard JSON."""
    return float(value) if np.isfinite(value) else None


def compact(values) -> float | list:
    """One float when every finite value is the same, else the list (None for NaN)."""
    a = np.asarray(values, np.float64)
    finite = a[np.isfinite(a)]
    if finite.size and np.all(finite == finite[0]):
        return float(finite[0])
    return [json_number(v) for v in a]


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
    method: str = "window"  # the registered detector that found them

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
        """The thresholds used, as the detector that found the regions reports them (JSON-ready)."""
        from research.regions.registry import detector  # the registry names this class's detectors

        return detector(self.method).thresholds(self)


def spans(start, end, axis):
    """Wavelengths of the first and last pixel of each region, or (None, None) without an axis."""
    if axis is None:
        return None, None
    axis = np.asarray(axis)
    return axis[start], axis[end - 1]
