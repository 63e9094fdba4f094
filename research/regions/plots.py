"""Per-spectrum figure: original and reconstruction against wavelength, residuals, anomalous
regions shaded, masked pixels greyed, and the object's SDSS cutout when one is cached."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from research.rundir import unique_path  # noqa: E402

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def find_image(image_dir, spectrum_id: str) -> pathlib.Path | None:
    """``<image_dir>/<PLATE-MJD-FIBER>.jpg`` (or .png) when it exists."""
    if not image_dir:
        return None
    for suffix in IMAGE_SUFFIXES:
        path = pathlib.Path(image_dir) / f"{spectrum_id}{suffix}"
        if path.is_file():
            return path
    return None


def _shade_masked(ax, wavelength, mask):
    ax.fill_between(wavelength, 0, 1, where=~mask, transform=ax.get_xaxis_transform(), color="0.85",
                    step="mid", linewidth=0, label="masked")


def _shade_regions(ax, regions, label=True):
    for j, r in enumerate(regions):
        ax.axvspan(r["start_wavelength"], r["end_wavelength"], color="tab:red", alpha=0.2, linewidth=0,
                   label="anomalous region" if (label and j == 0) else None)
        if label and r.get("label"):  # the line the region lies on (research/regions/lines.py)
            ax.text((r["start_wavelength"] + r["end_wavelength"]) / 2, 0.97, r["label"], rotation=90, fontsize=7,
                    ha="center", va="top", color="tab:red", transform=ax.get_xaxis_transform())


def plot_spectrum(path, wavelength, original, recon, mask=None, regions=(), title: str = "",
                  image: str | pathlib.Path | None = None, xlabel: str = "wavelength (Å)",
                  residual_threshold: float | None = None, residual_label: str = "residual") -> pathlib.Path:
    """Writes the figure to ``path`` (or ``path_1``, ... if taken) and returns the path used.

    ``regions`` are dicts with ``start_wavelength`` / ``end_wavelength`` (Angstrom) and an optional
    ``label`` (e.g. the nearest known line) written over the region.
    """
    wavelength = np.asarray(wavelength)
    mask = np.ones(len(wavelength), bool) if mask is None else np.asarray(mask, bool)
    orig = np.where(mask, original, np.nan)
    resid = np.where(mask, np.asarray(original) - np.asarray(recon), np.nan)

    fig = plt.figure(figsize=(13 if image else 10, 6))
    grid = fig.add_gridspec(2, 2 if image else 1, height_ratios=(3, 1.3), width_ratios=(3, 1) if image else None)
    ax = fig.add_subplot(grid[0, 0])
    axr = fig.add_subplot(grid[1, 0], sharex=ax)
    _shade_masked(ax, wavelength, mask)
    _shade_regions(ax, regions)
    ax.plot(wavelength, orig, color="0.25", linewidth=0.6, label="original")
    ax.plot(wavelength, np.where(mask, recon, np.nan), color="tab:orange", linewidth=0.9, alpha=0.9,
            label="reconstruction")
    finite = orig[np.isfinite(orig)]
    if finite.size:
        lo, hi = np.percentile(finite, [0.5, 99.5])
        pad = 0.15 * (hi - lo + 1e-6)
        ax.set_ylim(lo - pad, hi + pad)
    ax.set_ylabel("normalised flux")
    ax.legend(loc="upper right", fontsize=8, ncol=4)
    ax.set_title(title, fontsize=10)
    plt.setp(ax.get_xticklabels(), visible=False)

    _shade_masked(axr, wavelength, mask)
    _shade_regions(axr, regions, label=False)
    axr.plot(wavelength, resid, color="0.3", linewidth=0.5)
    axr.axhline(0, color="k", linewidth=0.5)
    if residual_threshold is not None and np.isfinite(residual_threshold):
        for sign in (1, -1):
            axr.axhline(sign * residual_threshold, color="tab:red", linestyle="--", linewidth=0.7)
    axr.set_ylabel(residual_label)
    axr.set_xlabel(xlabel)
    axr.set_xlim(wavelength[0], wavelength[-1])

    if image:
        axi = fig.add_subplot(grid[:, 1])
        axi.imshow(plt.imread(str(image)))
        axi.set_axis_off()
        axi.set_title("SDSS image", fontsize=9)

    path = unique_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
