"""Known spectral lines for naming a region: the nearest emission/absorption line in the rest frame,
and whether the region covers a bright night-sky line in the observed frame.

Wavelengths are SDSS's vacuum values in Å: the strong lines, and the weaker ones ([Ne III], Hδ, Hγ, He I,
[O I], [Ar III]) that a starburst shows and a model trained on ordinary galaxies misfits. A region that
lies on a galaxy line is most likely the object's own light; one on 5578 or 6302 Å *observed* a
sky-subtraction residual; one on neither, the model's misfit or a real feature.
"""

from __future__ import annotations

import numpy as np

LINES = {  # name -> rest wavelength (Å, vacuum)
    "Lyα": 1215.67, "C IV": 1549.06, "Mg II": 2798.75, "[O II] 3727": 3728.48, "[Ne III] 3869": 3869.86,
    "Ca K": 3934.78, "Ca H": 3969.59, "Hδ": 4102.89, "Hγ": 4341.68, "[O III] 4363": 4364.44,
    "He I 4471": 4472.73, "He II 4686": 4687.02, "Hβ": 4862.68, "[O III] 4959": 4960.30,
    "[O III] 5007": 5008.24, "He I 5876": 5877.25, "Na D": 5894.60, "[O I] 6300": 6302.05,
    "[O I] 6363": 6365.54, "[N II] 6548": 6549.86, "Hα": 6564.61, "[N II] 6583": 6585.27,
    "He I 6678": 6679.99, "[S II] 6716": 6718.29, "[S II] 6731": 6732.67, "He I 7065": 7067.14,
    "[Ar III] 7136": 7137.76,
}
SKY_LINES = {"sky 5577": 5578.89, "sky 6300": 6302.05}  # [O I] airglow, observed frame (vacuum)
SKY_TOLERANCE = 5.0  # Å: a region this close to a sky line covers it


def nearest_line(start: float, end: float) -> tuple[str, float, float]:
    """``(name, rest wavelength, distance in Å)`` of the line nearest the rest-frame span ``start-end``
    (distance 0 when the line lies inside it)."""
    names = list(LINES)
    rest = np.array([LINES[n] for n in names])
    distance = np.maximum(0.0, np.maximum(start - rest, rest - end))
    i = int(np.argmin(distance))
    return names[i], float(rest[i]), float(distance[i])


def label(region: dict, frame: str, z: float | None) -> dict:
    """The region's line fields: ``line`` (nearest line), ``line_wavelength``, ``line_distance`` (rest Å)
    and ``sky`` (a sky line the region covers in the observed frame, or None). ``frame`` is the axis of
    ``start_wavelength``/``end_wavelength`` ('rest' or 'observed'); without a redshift an observed-frame
    region gets no line and a rest-frame one no sky test."""
    lo, hi = float(region["start_wavelength"]), float(region["end_wavelength"])
    known_z = z is not None and np.isfinite(z)
    rest = (lo, hi) if frame == "rest" else ((lo / (1 + z), hi / (1 + z)) if known_z else None)
    observed = (lo, hi) if frame == "observed" else ((lo * (1 + z), hi * (1 + z)) if known_z else None)
    out = {"line": None, "line_wavelength": None, "line_distance": None, "sky": None}
    if rest is not None:
        out["line"], out["line_wavelength"], out["line_distance"] = nearest_line(*rest)
    if observed is not None:
        out["sky"] = next((name for name, w in SKY_LINES.items()
                           if observed[0] - SKY_TOLERANCE <= w <= observed[1] + SKY_TOLERANCE), None)
    return out


def short_label(fields: dict, near: float = 20.0) -> str:
    """Text for the figure: the line when the region is within ``near`` Å of it, the sky line, or ''."""
    parts = [fields["line"]] if fields.get("line") and fields["line_distance"] <= near else []
    if fields.get("sky"):
        parts.append(fields["sky"])
    return ", ".join(parts)


def near_lines(rest_wavelength, halfwidth: float) -> np.ndarray:
    """Pixels of a rest-frame wavelength axis within ``halfwidth`` Å of a known line (:data:`LINES`)."""
    wave = np.asarray(rest_wavelength, np.float64)
    rest = np.array(list(LINES.values()))
    return (np.abs(wave[..., None] - rest) <= float(halfwidth)).any(-1)
