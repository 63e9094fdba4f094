"""Feature scaling fitted on the training split only, ignoring masked elements."""

from __future__ import annotations

import dataclasses

import numpy as np

from research.errors import InputError

PREPROCESSING = "preprocessing.npz"  # in a run directory: the scaler, sample shape and axis of the run
METHODS = ("none", "minmax", "standard", "global_minmax", "global_standard")


@dataclasses.dataclass
class Scaler:
    """``minmax``/``standard`` scale each feature (column), ``global_*`` use one pair of numbers."""

    method: str = "none"
    offset: np.ndarray | float = 0.0
    scale: np.ndarray | float = 1.0

    @classmethod
    def fit(cls, method: str, x: np.ndarray, mask: np.ndarray | None = None) -> "Scaler":
        if method not in METHODS:
            raise InputError(f"config key data.scaling: unknown scaling {method!r}; choose one of {METHODS}")
        if method == "none":
            return cls()
        vals = np.where(mask.astype(bool), x, np.nan) if mask is not None else x.astype(np.float64)
        axis = None if method.startswith("global") else 0
        with np.errstate(all="ignore"):
            if method.endswith("minmax"):
                lo, hi = np.nanmin(vals, axis=axis), np.nanmax(vals, axis=axis)
                offset, scale = lo, hi - lo
            else:
                offset, scale = np.nanmean(vals, axis=axis), np.nanstd(vals, axis=axis)
        offset = np.nan_to_num(offset, nan=0.0)
        scale = np.where(np.nan_to_num(scale, nan=0.0) > 1e-12, np.nan_to_num(scale, nan=1.0), 1.0)
        return cls(method, offset.astype(np.float32) if axis == 0 else float(offset),
                   scale.astype(np.float32) if axis == 0 else float(scale))

    def transform(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.offset) / self.scale).astype(np.float32)

    def inverse(self, x: np.ndarray) -> np.ndarray:
        return (x * self.scale + self.offset).astype(np.float32)


def save_preprocessing(path, scaler: Scaler, sample_shape, axis) -> None:
    """What scoring new data needs besides the parameters: the fitted scaler, the sample shape the
    model was built for, and the sample axis (for spectra: the wavelength grid new data is put on)."""
    np.savez(path, method=np.asarray(scaler.method), offset=np.asarray(scaler.offset, np.float32),
             scale=np.asarray(scaler.scale, np.float32), sample_shape=np.asarray(sample_shape, np.int64),
             axis=np.asarray([] if axis is None else axis, np.float64))


def load_preprocessing(path) -> tuple[Scaler, tuple[int, ...], np.ndarray | None]:
    with np.load(path) as z:
        method, offset, scale = str(z["method"]), z["offset"], z["scale"]
        if method in ("none",) or method.startswith("global"):
            offset, scale = float(offset), float(scale)
        axis = z["axis"] if z["axis"].size else None
        return Scaler(method, offset, scale), tuple(int(s) for s in z["sample_shape"]), axis
