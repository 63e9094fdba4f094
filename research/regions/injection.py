"""Artificial features with known pixel spans and amplitudes, and region-level scoring.

Amplitudes are in units of the *local* noise: sigma = median of ``1/sqrt(ivar)`` over the
feature's usable pixels, so "5 sigma" means the same significance in a bright and a faint spectrum.

Kinds (peak amplitude ``A * sigma``; span = the pixels the truth counts as anomalous):

* ``emission``: Gaussian spike, width ``s`` px; span ``[c - 2s, c + 2s]`` (profile >= 13.5% of peak).
* ``absorption``: Gaussian trough (negative), width ``s`` px; span ``[c - 2s, c + 2s]``.
* ``dropout``: a dropped segment, flux lowered by ``A * sigma`` over the whole span.

Scoring is region-level: a predicted region *matches* a feature when they overlap and their IoU is
at least ``min_iou`` (default 0.05: window-quantised regions around a narrow feature pass, a region
covering most of the spectrum does not). Precision = matching regions / predicted regions, recall =
features matched by at least one region / features, IoU = |span & matched regions| /
|span | matched regions| per feature (0 when missed).
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import numpy as np

from research.errors import InputError
from research.regions.base import Regions
from research.regions.registry import detect as detect_with, uses_ivar
from research.regions.residuals import preprocess, split_settings

KINDS = ("emission", "absorption", "dropout")
DEFAULT_WIDTHS = {"emission": (2.0, 5.0), "absorption": (5.0, 12.0), "dropout": (20.0, 80.0)}


@dataclasses.dataclass
class Feature:
    spectrum: int  # row in the injected batch
    source: int  # row of the clean spectrum it was made from
    kind: str
    start: int
    end: int  # one past the last pixel
    amplitude: float  # in local-noise sigma
    sigma: float  # the local noise in flux units


def local_sigma(ivar: np.ndarray, mask: np.ndarray, start: int, end: int) -> float:
    iv = ivar[start:end][mask[start:end] & (ivar[start:end] > 0)]
    return float(np.median(1.0 / np.sqrt(iv))) if iv.size else float("nan")


def _profile(kind: str, length: int, center: float, width: float) -> tuple[np.ndarray, int, int]:
    """Unit-peak profile over the whole spectrum and its span ``[start, end)``."""
    px = np.arange(length)
    if kind == "dropout":
        start = int(round(center - width / 2))
        end = start + int(round(width))
        return ((px >= start) & (px < end)).astype(np.float64) * -1.0, start, end
    sign = 1.0 if kind == "emission" else -1.0
    start, end = int(np.floor(center - 2 * width)), int(np.ceil(center + 2 * width)) + 1
    return sign * np.exp(-0.5 * ((px - center) / width) ** 2), start, end


def inject_one(x: np.ndarray, ivar: np.ndarray, mask: np.ndarray, kind: str, amplitude: float,
               rng: np.random.Generator, width_range: tuple[float, float] | None = None,
               min_good: float = 0.9, tries: int = 200) -> tuple[np.ndarray, tuple[int, int, float]]:
    """One spectrum with one feature at a random place whose span is >= ``min_good`` usable.

    Returns the new flux and ``(start, end, sigma)``.
    """
    if kind not in KINDS:
        raise InputError(f"injection: unknown kind {kind!r}; choose one of {KINDS}")
    lo_w, hi_w = width_range or DEFAULT_WIDTHS[kind]
    length = x.shape[0]
    good = np.flatnonzero(mask)
    if good.size == 0:
        raise InputError("injection: spectrum has no usable pixels")
    for _ in range(tries):
        width = rng.uniform(lo_w, hi_w)
        center = rng.uniform(good[0] + 2 * width + 1, good[-1] - 2 * width - 1)
        profile, start, end = _profile(kind, length, center, width)
        if start < 0 or end > length or mask[start:end].mean() < min_good:
            continue
        sigma = local_sigma(ivar, mask, start, end)
        if not np.isfinite(sigma):
            continue
        return (x + amplitude * sigma * profile).astype(x.dtype), (start, end, sigma)
    raise InputError(f"injection: no place with >= {min_good:.0%} usable pixels for a {kind} feature")


def inject_batch(x: np.ndarray, ivar: np.ndarray, mask: np.ndarray, kinds: Sequence[str], amplitude: float,
                 copies: int, seed: int, widths: dict | None = None) -> tuple[np.ndarray, list[Feature]]:
    """``copies`` injected versions of every spectrum for every kind (one feature each)."""
    rng = np.random.default_rng(seed)
    out, feats = [], []
    for kind in kinds:
        for src in range(len(x)):
            for _ in range(copies):
                new, (start, end, sigma) = inject_one(x[src], ivar[src], mask[src], kind, amplitude, rng,
                                                      (widths or {}).get(kind))
                feats.append(Feature(len(out), src, kind, start, end, float(amplitude), sigma))
                out.append(new)
    return np.asarray(out, x.dtype), feats


MIN_IOU = 0.05


def _iou(a0, a1, b0, b1) -> float:
    inter = max(0, min(a1, b1) - max(a0, b0))
    return inter / (max(a1, b1) - min(a0, b0)) if inter else 0.0


def score(features: Sequence[Feature], regions: Regions, spectra: Sequence[int] | None = None,
          clean: dict[int, list[tuple[int, int]]] | None = None, min_iou: float = MIN_IOU) -> dict:
    """Region-level precision, recall and IoU of ``regions`` against the injected ``features``.

    Predicted regions count only in the rows listed in ``spectra`` (default: rows with a feature).
    ``clean`` maps a source spectrum to the regions found in it *before* injection; with it,
    ``precision_new`` also leaves out false regions that were already there (the spectrum's own
    features, which an injection test cannot call right or wrong). ``precision`` counts them.
    """
    rows = set(spectra) if spectra is not None else {f.spectrum for f in features}
    by_row: dict[int, list[tuple[int, int]]] = {}
    for i, s, e in zip(regions.spectrum, regions.start, regions.end):
        if int(i) in rows:
            by_row.setdefault(int(i), []).append((int(s), int(e)))
    feats_by_row: dict[int, list[Feature]] = {}
    for f in features:
        feats_by_row.setdefault(f.spectrum, []).append(f)

    source = {f.spectrum: f.source for f in features}

    def overlaps(s, e, spans):
        return any(s < b and a < e for a, b in spans)

    def matches(s, e, spans):
        return any(_iou(s, e, a, b) >= min_iou for a, b in spans)

    n_pred = sum(len(v) for v in by_row.values())
    tp_pred = sum(1 for i, regs in by_row.items() for s, e in regs
                  if matches(s, e, [(f.start, f.end) for f in feats_by_row.get(i, ())]))
    old = 0
    if clean is not None:
        old = sum(1 for i, regs in by_row.items() for s, e in regs
                  if not matches(s, e, [(f.start, f.end) for f in feats_by_row.get(i, ())])
                  and overlaps(s, e, clean.get(source.get(i), ())))
    hits, ious = 0, []
    for f in features:
        hit = [(s, e) for s, e in by_row.get(f.spectrum, ()) if _iou(s, e, f.start, f.end) >= min_iou]
        if not hit:
            ious.append(0.0)
            continue
        hits += 1
        covered = np.zeros(max(e for _, e in hit + [(0, f.end)]), bool)
        for s, e in hit:
            covered[s:e] = True
        truth = np.zeros_like(covered)
        truth[f.start:f.end] = True
        ious.append(float((covered & truth).sum() / (covered | truth).sum()))
    n = len(features)
    return {"n_features": n, "n_predicted": n_pred,
            "precision": tp_pred / n_pred if n_pred else float("nan"),
            "precision_new": tp_pred / (n_pred - old) if n_pred - old else float("nan"),
            "recall": hits / n if n else float("nan"),
            "iou": float(np.mean(ious)) if ious else float("nan"),
            "iou_detected": float(np.mean([v for v in ious if v > 0])) if hits else float("nan")}


@dataclasses.dataclass
class Trial:
    """Injected spectra at one amplitude, their features and their reconstructions."""

    amplitude: float
    x: np.ndarray
    features: list[Feature]
    source: np.ndarray  # clean row of every injected row
    recon: np.ndarray | None = None


def make_trials(x, ivar, mask, reconstruct: Callable[[np.ndarray], np.ndarray], amplitudes: Sequence[float],
                kinds: Sequence[str] = KINDS, copies: int = 10, seed: int = 0, widths: dict | None = None) -> list[Trial]:
    """Every held-out spectrum gets ``copies`` single-feature versions per kind and amplitude;
    ``reconstruct`` (the trained model) sees the injected flux, as it would see a real anomaly."""
    trials = []
    for a_i, amp in enumerate(amplitudes):
        xi, feats = inject_batch(x, ivar, mask, kinds, amp, copies, seed + 1000 * a_i, widths)
        trials.append(Trial(float(amp), xi, feats, np.array([f.source for f in feats]), np.asarray(reconstruct(xi))))
    return trials


def concat_trials(parts: Sequence[Sequence[Trial]], sizes: Sequence[int]) -> list[Trial]:
    """Trials made separately for several sets of clean spectra (e.g. cross-validation folds, each with
    its own model) as one set over the clean spectra stacked in order; ``sizes`` = spectra per set."""
    out = []
    for same_amp in zip(*parts):
        rows = src = 0
        xs, feats, sources, recons = [], [], [], []
        for t, size in zip(same_amp, sizes):
            xs.append(t.x)
            feats += [dataclasses.replace(f, spectrum=f.spectrum + rows, source=f.source + src) for f in t.features]
            sources.append(t.source + src)
            recons.append(t.recon)
            rows, src = rows + len(t.x), src + size
        out.append(Trial(same_amp[0].amplitude, np.concatenate(xs), feats, np.concatenate(sources),
                         None if any(r is None for r in recons) else np.concatenate(recons)))
    return out


def score_trials(trials: Sequence[Trial], x, ivar, mask, clean_recon, detector: dict | None = None,
                 kinds: Sequence[str] = KINDS, axis=None) -> list[dict]:
    """Precision/recall/IoU per amplitude and kind (plus an ``all`` row) for one detector setting."""
    detector = dict(detector or {})
    base = detect(x, clean_recon, mask, ivar, detector, axis)
    clean = {i: [(int(s), int(e)) for s, e in zip(base.start[base.spectrum == i], base.end[base.spectrum == i])]
             for i in range(len(x))}
    rows = []
    for t in trials:
        regions = detect(t.x, t.recon, mask[t.source], ivar[t.source], detector, axis)
        for kind in kinds:
            sel = [f for f in t.features if f.kind == kind]
            if sel:
                rows.append({"amplitude": t.amplitude, "kind": kind, **score(sel, regions, clean=clean)})
        rows.append({"amplitude": t.amplitude, "kind": "all", **score(t.features, regions, clean=clean),
                     "clean_regions_per_spectrum": float(len(base.start) / max(len(x), 1))})
    return rows


def detect(x, recon, mask, ivar, detector: dict, axis=None) -> Regions:
    """The regions that the detector a dict describes finds: ``method`` (default 'window') names a
    registered detector (:mod:`research.regions.registry`), the other keys are its parameters and the
    shared ones: ``noise_units=True`` passes ``ivar`` (sigma units; always for detectors that need it),
    the preprocessing keys (:func:`research.regions.residuals.split_settings`: ``detrend_width``,
    ``noise_width``, ``relative_error``, ``line_tolerance`` ...; 0 or absent = off) preprocess the residual
    first (:func:`research.regions.residuals.preprocess`). ``axis``: wavelengths (rest frame for
    ``line_tolerance``)."""
    params = dict(detector)
    method = params.pop("method", "window")
    noise_units = uses_ivar(method, params.pop("noise_units", False))
    params.pop("model_error_width", None)
    if params.pop("model_error_quantile", 0):
        raise InputError("injection: the model error needs calibration spectra; add it to ivar first "
                         "(research.regions.residuals.model_error, with_model_error)")
    pre, params = split_settings(params)
    if not noise_units:  # the noise terms need ivar
        pre = {k: v for k, v in pre.items() if k == "detrend_width"}
    recon, ivar = preprocess(x, recon, mask, ivar, axis=axis, **pre)
    return detect_with(x, recon, mask, axis, method=method, ivar=ivar if noise_units else None, **params)


def markdown_table(rows: Sequence[dict], kinds: Sequence[str] = ("all",) + KINDS) -> str:
    """Amplitude x kind table: precision (all regions) / precision (new regions) / recall / IoU."""
    amps = sorted({r["amplitude"] for r in rows})
    head = "| amplitude (σ) | " + " | ".join(f"{k}: P / P_new / R / IoU" for k in kinds) + " |"
    sep = "|---|" + "---|" * len(kinds)
    lines = [head, sep]
    for a in amps:
        cells = []
        for k in kinds:
            r = next((r for r in rows if r["amplitude"] == a and r["kind"] == k), None)
            cells.append("-" if r is None else
                         f"{r['precision']:.2f} / {r['precision_new']:.2f} / {r['recall']:.2f} / {r['iou']:.2f}")
        lines.append(f"| {a:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
