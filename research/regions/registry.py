"""Region detectors by name: ``config.regions.method`` picks one.

A detector is a module-level :class:`Detector` in its own file, registered here by one line of
:data:`DETECTORS` (or :func:`register`). It declares its parameters with a one-line comment each
(the keys ``config.regions`` may set for it; the defaults are those of its ``detect`` function,
:meth:`Detector.schema` gives both), whether it reads ``ivar``, and what its thresholds are for the
run's metadata. :data:`PREPROCESS` are the keys every detector shares: the residual preprocessing
of :mod:`research.regions.residuals` and the noise units.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import inspect
from typing import Callable

from research.errors import InputError


@dataclasses.dataclass(frozen=True)
class Detector:
    """``detect(original, recon, mask, axis, *, ivar, **params) -> Regions``; ``thresholds(regions) -> dict``."""

    detect: Callable
    params: dict[str, str]  # parameter -> one-line comment; each is a keyword argument of detect
    thresholds: Callable
    needs_ivar: bool = False  # True: always in noise sigma; False: only with noise_units=True

    def __post_init__(self):
        keywords = inspect.signature(self.detect).parameters
        missing = [k for k in self.params if k not in keywords or keywords[k].default is inspect.Parameter.empty]
        if missing:
            raise TypeError(f"{self.detect.__qualname__} has no keyword argument with a default for {missing}")

    def schema(self) -> dict[str, tuple]:
        """``{parameter: (default, comment)}``, the defaults taken from ``detect``'s signature."""
        keywords = inspect.signature(self.detect).parameters
        return {k: (keywords[k].default, doc) for k, doc in self.params.items()}


DETECTORS: dict[str, str] = {
    # name -> "module:attribute"; imported on first use
    "window": "research.regions.window:DETECTOR",
    "matched_filter": "research.regions.matched_filter:DETECTOR",
}

PREPROCESS = {  # key -> (default, comment)
    "noise_units": (False, "True: residuals in noise sigma (reads ivar); detectors that need ivar always are"),
    "detrend_width": (0, "running-median width (px) of the residual added to the reconstruction; 0 = off"),
    "noise_width": (0, "width (px) of the local robust noise scale that divides sigma units; 0 = off"),
    "model_error_quantile": (0.0, "the model's error per pixel, this quantile over the training spectra's "
                                  "residuals beyond their noise, added to the noise (sigma units); 0 = off"),
    "model_error_width": (5, "running maximum (px) of that model error"),
    "relative_error": (0.0, "f: (f x the reconstruction's line excess over its 51 px running median)^2 added "
                            "to the noise variance (strong lines tolerate a larger misfit); 0 = off"),
    "line_tolerance": (0.0, "f: (f x the observed excess over its 51 px running median)^2 added to the noise "
                            "variance within line_halfwidth of a known line (rest-frame spectra); 0 = off"),
    "line_halfwidth": (6.0, "Å (rest frame) around each line of research/regions/lines.py that line_tolerance covers"),
}


def register(name: str, target: str) -> None:
    """Adds the detector ``module:attribute`` under ``name``."""
    DETECTORS[name] = target
    detector.cache_clear()


def check_method(method: str) -> str:
    """``method`` when it names a region detector, else a one-line config error."""
    if method not in DETECTORS:
        raise InputError(f"config key regions.method: unknown method {method!r}; choose one of {tuple(DETECTORS)}")
    return method


@functools.cache
def detector(method: str) -> Detector:
    module, attr = DETECTORS[check_method(method)].split(":")
    return getattr(importlib.import_module(module), attr)


def uses_ivar(method: str, noise_units: bool) -> bool:
    """Whether the detector reads ``ivar``: always when it needs it, else only in noise units."""
    return bool(noise_units) or detector(method).needs_ivar


def params_of(method: str, settings) -> dict:
    """The detector's own parameters that ``settings`` sets (None = the detector's default)."""
    return {k: settings[k] for k in detector(method).params if settings.get(k) is not None}


def detect(original, recon, mask=None, axis=None, *, method: str = "window", ivar=None, **params):
    """The regions that the detector named by ``method`` finds (``params`` are its declared parameters)."""
    return detector(method).detect(original, recon, mask, axis, ivar=ivar, **params)
