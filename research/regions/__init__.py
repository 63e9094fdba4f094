"""Anomalous regions of 1-D spectra from their reconstruction residuals.

``base`` the result type (:class:`Regions`); ``registry`` the detectors by name and their declared
parameters; ``window`` the seed's window rule (compiled kernel in ``kernel``, reference loop in
``window_loop``); ``matched_filter`` the significance of the summed residual; ``residuals``
detrending before detection; ``injection`` injected features and region-level scoring, and
``injection_eval`` the evaluation on held-out SDSS galaxies, ``injection_cv`` its cross-validation over
every galaxy with the learning curve and the latent-density AUCs; ``lines`` the known lines that name a
region; ``plots`` the per-spectrum figure.
A new detector is one file with a module-level :class:`~research.regions.registry.Detector` and
one line in :data:`~research.regions.registry.DETECTORS`.
"""

from research.regions.base import Regions, json_number
from research.regions.registry import DETECTORS, check_method, detect, detector, register, uses_ivar
from research.regions.window import detect_regions
from research.regions.window_loop import detect_regions_loop

__all__ = ["DETECTORS", "Regions", "check_method", "detect", "detect_regions", "detect_regions_loop", "detector",
           "json_number", "register", "uses_ivar"]
