"""SDSS spectra -> one dataset file on a common log-wavelength grid.

Reads both SDSS spectrum formats, detected from the HDUs (never from the file name):

* ``spec-PLATE-MJD-FIBER.fits`` (DR8+): HDU ``COADD`` (loglam, flux, ivar, and_mask) and HDU
  ``SPECOBJ`` or ``SPALL`` (class, subclass, z, zwarning, plate, mjd, fiberid, ra/dec); a file whose
  HDUs carry no names is read by the columns of its tables.
* ``spSpec-MJD-PLATE-FIBER.fit`` (DR7 and older): HDU 0 image with rows flux, continuum-subtracted
  flux, error, mask; wavelength ``10**(COEFF0 + COEFF1 * i)``; identifiers and class in the header.

Identifiers come from the file's header and tables (plate/mjd/fiber, or the SDSS objid when those are
absent), never from its name: shared spectra carry names like ``MRK 0955.fits`` or an objid.

Every spectrum is resampled onto one grid (observed frame, or rest frame from z), normalised, and
given a pixel mask. ``mask`` is **True for a good pixel** (the convention of ``research.data``); a
pixel is bad when ivar == 0, one of the selected SPPIXMASK bits (:data:`DEFAULT_MASK_BITS`) is set in
and_mask, a value is not finite, or the grid pixel is outside the spectrum's coverage. Bad pixels hold flux 0 and ivar 0, so every stored value is finite.

``ingest`` writes ``<out>.npz`` (flux, ivar, mask, loglam, wavelength, ids), ``<out>_catalogue.csv``
(one row per spectrum, keyed by plate/mjd/fiber) and ``<out>_report.json`` (skipped files with the
reason). A bad file is skipped and reported; the run goes on.

CLI: ``python -m data_prep.sdss --input ../shared/data/sdss ../shared/data/sdss_extra --output data/sdss.npz``
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import pathlib
import sys
import time
import warnings
from typing import Iterable, Sequence

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyWarning

from research.errors import InputError

LOGLAM_STEP = 1e-4  # SDSS and BOSS pixels are 1e-4 in log10(wavelength / Angstrom)
FITS_SUFFIXES = (".fits", ".fit", ".fits.gz", ".fit.gz")
SPEC_CLN = {0: "UNKNOWN", 1: "STAR", 2: "GALAXY", 3: "QSO", 4: "QSO", 5: "SKY", 6: "STAR", 7: "GALAXY"}
CATALOGUE_COLUMNS = ("index", "id", "plate", "mjd", "fiberid", "objid", "class", "subclass", "z", "zwarning",
                     "ra", "dec", "format", "file", "norm", "good_fraction")

# SPPIXMASK, the bits of and_mask (and of the spSpec mask row): sdss3.org/dr10/algorithms/bitmask_sppixmask.php.
# Bits 0-15 describe a whole fibre (or one spectrograph half of it), 16-31 one pixel.
PIXMASK_BITS = {
    "NOPLUG": 0, "BADTRACE": 1, "BADFLAT": 2, "BADARC": 3, "MANYBADCOLUMNS": 4, "MANYREJECTED": 5,
    "LARGESHIFT": 6, "BADSKYFIBER": 7, "NEARWHOPPER": 8, "WHOPPER": 9, "SMEARIMAGE": 10, "SMEARHIGHSN": 11,
    "SMEARMEDSN": 12, "NEARBADPIXEL": 16, "LOWFLAT": 17, "FULLREJECT": 18, "PARTIALREJECT": 19,
    "SCATTEREDLIGHT": 20, "CROSSTALK": 21, "NOSKY": 22, "BRIGHTSKY": 23, "NODATA": 24, "COMBINEREJ": 25,
    "BADFLUXFACTOR": 26, "BADSKYCHI": 27, "REDMONSTER": 28, "EMLINE": 30}
# The bits that say the flux is not to be trusted: the fibre was not plugged, or its trace, flat or arc
# calibration failed; the pixel was rejected in extraction or in the combine, the sky there is unknown,
# or the sky is brighter than the object by > 10 sigma (the bit the SDSS docs single out, e.g. 5577 A).
# Left out: the informational bits (MANYBADCOLUMNS is set on ~45 % of many good SDSS-I spectra, the
# spSpec EMLINE bit marks the object's own emission lines, NEARBADPIXEL/LOWFLAT/PARTIALREJECT/
# SCATTEREDLIGHT/BADSKYCHI leave a measured value) and NODATA, which the docs say to ignore in favour of
# ivar = 0 (which always masks).
DEFAULT_MASK_BITS = ("NOPLUG", "BADTRACE", "BADFLAT", "BADARC", "FULLREJECT", "NOSKY", "BRIGHTSKY", "COMBINEREJ")


@dataclasses.dataclass
class Spectrum:
    """One spectrum as read from its file, on its native pixels."""

    loglam: np.ndarray  # float64, log10(wavelength / Angstrom)
    flux: np.ndarray  # float64, 1e-17 erg/s/cm^2/A
    ivar: np.ndarray  # float64, 1 / flux error^2 (0 = no information)
    bad: np.ndarray  # bool, True = unusable pixel
    meta: dict

    @property
    def id(self) -> str:
        return _meta_id(self.meta)


def spectrum_id(plate, mjd, fiber) -> str:
    """``PLATE-MJD-FIBER`` zero-padded as in SDSS file names: ``0266-51602-0001``."""
    return f"{int(plate):04d}-{int(mjd):05d}-{int(fiber):04d}"


def _meta_id(meta: dict) -> str:
    if all(meta.get(k) is not None for k in ("plate", "mjd", "fiberid")):
        return spectrum_id(meta["plate"], meta["mjd"], meta["fiberid"])
    return f"objid-{meta['objid']}"


def mask_bit_value(bits) -> int:
    """The and_mask bits that make a pixel bad, as one integer: ``None`` = :data:`DEFAULT_MASK_BITS`, an
    integer as it is (-1 = any bit), or a sequence of SPPIXMASK names and/or bit numbers ("ANY" = -1)."""
    if bits is None:
        bits = DEFAULT_MASK_BITS
    if isinstance(bits, (int, np.integer)):
        return int(bits)
    if isinstance(bits, str):
        bits = [b for b in bits.replace(",", " ").split() if b]
    value = 0
    for b in bits:
        if isinstance(b, str) and b.upper() == "ANY":
            return -1
        if isinstance(b, str) and b.upper() in PIXMASK_BITS:
            value |= 1 << PIXMASK_BITS[b.upper()]
        elif isinstance(b, (int, np.integer)) and 0 <= int(b) < 32:
            value |= 1 << int(b)
        else:
            raise InputError(f"mask_bits: unknown SDSS mask bit {b!r}; use names of {sorted(PIXMASK_BITS)} "
                             "or bit numbers 0-31")
    return value


# ---- readers ------------------------------------------------------------------------------------

def _bad_pixels(flux, ivar, mask_word, mask_bits) -> np.ndarray:
    flagged = (mask_word.astype(np.int64) & mask_bit_value(mask_bits)) != 0
    return ~np.isfinite(flux) | ~np.isfinite(ivar) | (ivar <= 0) | flagged


def _objid(value):
    """An SDSS objid as text (a 64-bit integer, or the DR7 header's 'run rerun camcol field id' joined by
    '-')."""
    if value is None:
        return None
    text = "-".join(str(value).split())
    return text or None


def _first(table, names: Sequence[str], default=None):
    for name in names:
        if name in table.columns.names:
            value = table[name][0]
            return value.strip() if isinstance(value, str) else value
    return default


def _table_with(hdul, names: Sequence[str], columns: set[str]):
    """The first HDU named one of ``names``, else the first table holding all of ``columns``."""
    for name in names:
        if name in hdul:
            return hdul[name].data
    for hdu in hdul[1:]:
        if isinstance(hdu, fits.BinTableHDU) and columns <= {c.lower() for c in hdu.columns.names}:
            return hdu.data
    return None


# catalogue key -> the SPECOBJ/SPALL columns that hold it (the first present wins) and its value when none does
INFO_COLUMNS = {"plate": (("PLATE",), None), "mjd": (("MJD",), None), "fiberid": (("FIBERID",), None),
                "objid": (("BESTOBJID", "OBJID"), None), "class": (("CLASS",), ""), "subclass": (("SUBCLASS",), ""),
                "z": (("Z",), np.nan), "zwarning": (("ZWARNING",), None), "ra": (("RA", "PLUG_RA"), None),
                "dec": (("DEC", "PLUG_DEC"), None)}  # None: HDU 0's value stays


def coadd_meta(header) -> dict:
    """The catalogue row of a spec-*.fits file from its HDU 0 ``header`` (anything with ``get``), before the
    SPECOBJ/SPALL row (:func:`with_info`)."""
    return {"plate": header.get("PLATEID"), "mjd": header.get("MJD"), "fiberid": header.get("FIBERID"),
            "objid": _objid(header.get("OBJID")), "class": "", "subclass": "", "z": np.nan, "zwarning": None,
            "ra": header.get("PLUG_RA", np.nan), "dec": header.get("PLUG_DEC", np.nan), "format": "spec"}


def with_info(meta: dict, first) -> dict:
    """``meta`` with the SPECOBJ/SPALL row's values; ``first(names, default)`` reads the first of the columns
    ``names`` present in row 0 of the table (stripped text), else ``default``."""
    out = dict(meta)
    for key, (names, default) in INFO_COLUMNS.items():
        out[key] = first(names, meta[key] if default is None else default)
    out["objid"] = _objid(out["objid"])
    return out


def _read_coadd(path: pathlib.Path, hdul, mask_bits) -> Spectrum:
    coadd = _table_with(hdul, ("COADD",), {"loglam", "flux", "ivar"})
    names = {n.lower() for n in coadd.columns.names}
    missing = {"loglam", "flux", "ivar"} - names
    if missing:
        raise InputError(f"{path}: COADD table lacks column(s) {sorted(missing)}")
    if len(coadd) == 0:
        raise InputError(f"{path}: COADD table is empty")
    loglam = np.asarray(coadd["loglam"], np.float64)
    flux = np.asarray(coadd["flux"], np.float64)
    ivar = np.asarray(coadd["ivar"], np.float64)
    mask_word = np.asarray(coadd["and_mask"]) if "and_mask" in names else np.zeros(len(flux), np.int64)
    meta = coadd_meta(hdul[0].header)
    info = _table_with(hdul, ("SPECOBJ", "SPALL"), {"class", "z"})
    if info is not None and len(info):
        meta = with_info(meta, lambda names, default: _first(info, names, default))
    return Spectrum(loglam, flux, ivar, _bad_pixels(flux, ivar, mask_word, mask_bits), meta)


def _read_spspec(path: pathlib.Path, hdul, mask_bits) -> Spectrum:
    header, image = hdul[0].header, hdul[0].data
    if image.ndim != 2 or image.shape[0] < 4:
        raise InputError(f"{path}: HDU 0 image has shape {image.shape}, expected >= 4 rows "
                         "(flux, continuum-subtracted, error, mask)")
    return spspec_from_image(image, header, mask_bits)


def spspec_from_image(image, header, mask_bits) -> Spectrum:
    """An SDSS-I/II spSpec spectrum from its HDU 0 image (flux, continuum-subtracted, error, mask rows) and
    header, whichever FITS reader read them (astropy here, fitsio in :mod:`research.data.sdss_fastread`)."""
    flux = np.asarray(image[0], np.float64)
    err = np.asarray(image[2], np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        ivar = np.where(err > 0, 1.0 / (err * err), 0.0)
    loglam = header["COEFF0"] + header["COEFF1"] * np.arange(image.shape[1], dtype=np.float64)
    cln = header.get("SPEC_CLN")
    meta = {"plate": header.get("PLATEID"), "mjd": header.get("MJD"), "fiberid": header.get("FIBERID"),
            "objid": _objid(header.get("OBJID")),
            "class": SPEC_CLN.get(int(cln), "UNKNOWN") if cln is not None else str(header.get("OBJTYPE", "")),
            "subclass": "", "z": header.get("Z", np.nan), "zwarning": header.get("Z_WARNIN"),
            "ra": header.get("RAOBJ", header.get("RA", np.nan)),
            "dec": header.get("DECOBJ", header.get("DEC", np.nan)), "format": "spSpec"}
    return Spectrum(loglam, flux, ivar, _bad_pixels(flux, ivar, np.nan_to_num(image[3]), mask_bits), meta)


def read_spectrum(path, mask_bits=None) -> Spectrum:
    """Reads one spectrum of either format; every problem is an ``InputError`` naming the file.

    ``mask_bits``: the and_mask / pixel-mask bits that make a pixel bad (see :func:`mask_bit_value`;
    None = :data:`DEFAULT_MASK_BITS`).
    """
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", AstropyWarning)
        try:
            with fits.open(path, memmap=False, lazy_load_hdus=False) as hdul:
                truncated = [w for w in caught if "truncated" in str(w.message)]
                if truncated:
                    raise InputError(f"{path}: truncated FITS file ({str(truncated[0].message).strip()})")
                primary = hdul[0]
                if _table_with(hdul, ("COADD",), {"loglam", "flux", "ivar"}) is not None:
                    spec = _read_coadd(path, hdul, mask_bits)
                elif primary.header.get("NAXIS") == 2 and "COEFF0" in primary.header and "COEFF1" in primary.header:
                    spec = _read_spspec(path, hdul, mask_bits)
                else:
                    raise InputError(f"{path}: no COADD HDU (spec-*.fits) and no spSpec image with "
                                     "COEFF0/COEFF1 in HDU 0; not an SDSS spectrum")
        except InputError:
            raise
        except (OSError, ValueError, TypeError, KeyError, IndexError, EOFError) as exc:
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"{path}: corrupt or truncated FITS ({reason})") from None
    missing = [k.upper() for k in ("plate", "mjd", "fiberid") if spec.meta[k] is None]
    if missing and spec.meta.get("objid") is None:
        raise InputError(f"{path}: no {'/'.join(missing)} and no OBJID in the header or SPECOBJ/SPALL table")
    if not np.all(np.diff(spec.loglam) > 0):
        raise InputError(f"{path}: wavelengths are not strictly increasing")
    spec.meta = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in spec.meta.items()}
    spec.meta["file"] = path.name
    return spec


# ---- common grid, resampling, normalisation ----------------------------------------------------

def make_grid(loglam_min: float, loglam_max: float, step: float = LOGLAM_STEP) -> np.ndarray:
    """Log-wavelength grid snapped to multiples of ``step`` (so native SDSS pixels land on it)."""
    lo = np.floor(loglam_min / step + 1e-6) * step
    n = int(np.floor((loglam_max - lo) / step + 1e-6)) + 1
    return lo + step * np.arange(n)


def shifted_loglam(spec: Spectrum, frame: str) -> np.ndarray:
    if frame == "observed":
        return spec.loglam
    if frame == "rest":
        z = spec.meta.get("z")
        if z is None or not np.isfinite(z) or z <= -1:
            raise InputError(f"{spec.meta.get('file')}: no valid redshift for the rest frame (z={z})")
        return spec.loglam - np.log10(1.0 + z)
    raise InputError(f"frame: unknown frame {frame!r}; choose 'observed' or 'rest'")


def resample(spec: Spectrum, grid: np.ndarray, frame: str = "observed") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Flux, ivar and good-pixel mask of one spectrum on ``grid`` (linear interpolation in loglam).

    Bad native pixels are first filled from their good neighbours so they cannot leak into the
    interpolation; a grid pixel is bad if more than 1% of its interpolation weight came from a bad
    pixel (1% absorbs float32 loglam rounding on grids aligned with the native pixels).
    """
    x = shifted_loglam(spec, frame)
    good = ~spec.bad
    if not good.any():
        return np.zeros(len(grid)), np.zeros(len(grid)), np.zeros(len(grid), bool)
    idx = np.arange(len(x))
    flux = np.interp(idx, idx[good], spec.flux[good])
    ivar = np.where(good, spec.ivar, 0.0)
    inside = (grid >= x[0] - 1e-9) & (grid <= x[-1] + 1e-9)
    bad_weight = np.interp(grid, x, (~good).astype(np.float64))
    out_flux = np.interp(grid, x, flux)
    out_ivar = np.interp(grid, x, ivar)
    mask = inside & (bad_weight <= 0.01) & (out_ivar > 0)
    return np.where(mask, out_flux, 0.0), np.where(mask, out_ivar, 0.0), mask


NORMALISATIONS = ("median", "mean", "none")


def normalisation(flux: np.ndarray, mask: np.ndarray, wavelength: np.ndarray, method: str = "median",
                  window: tuple[float, float] | None = None) -> float:
    """The factor a spectrum is divided by: median or mean of good flux in ``window`` (Angstrom,
    in the grid's frame; None = the whole good range), or 1 for ``none``."""
    if method == "none":
        return 1.0
    if method not in NORMALISATIONS:
        raise InputError(f"norm: unknown normalisation {method!r}; choose one of {NORMALISATIONS}")
    sel = mask.copy()
    if window is not None:
        sel &= (wavelength >= window[0]) & (wavelength <= window[1])
    if not sel.any():
        raise InputError(f"no good pixels in the normalisation window {window}")
    value = float(np.median(flux[sel]) if method == "median" else np.mean(flux[sel]))
    if not np.isfinite(value) or value <= 0:
        raise InputError(f"{method} flux in the normalisation window is {value:.4g} (must be > 0)")
    return value


# ---- ingestion -----------------------------------------------------------------------------------

def find_files(inputs: str | pathlib.Path | Iterable) -> list[pathlib.Path]:
    """FITS files of a folder (sorted) or the given list of files."""
    if isinstance(inputs, (str, pathlib.Path)):
        inputs = pathlib.Path(inputs)
        if inputs.is_dir():
            return sorted(p for p in inputs.iterdir() if p.name.lower().endswith(FITS_SUFFIXES))
        if not inputs.exists():
            raise InputError(f"{inputs}: no such file or folder")
        return [inputs]
    return [pathlib.Path(p) for p in inputs]


def output_paths(out_path) -> dict[str, pathlib.Path]:
    out = pathlib.Path(out_path)
    out = out if out.suffix == ".npz" else out.with_suffix(".npz")
    return {"npz": out, "catalogue": out.with_name(out.stem + "_catalogue.csv"),
            "report": out.with_name(out.stem + "_report.json")}


def ingest(folder_or_files, out_path, *, frame: str = "observed", norm: str = "median",
           norm_window: tuple[float, float] | None = None, wave_range: tuple[float, float] | None = None,
           step: float = LOGLAM_STEP, mask_bits=None, min_good_fraction: float = 0.1,
           log=None) -> dict:
    """Reads, grids, normalises and writes all spectra; returns the ingestion report.

    ``wave_range`` (Angstrom) fixes the grid; by default it spans the union of the readable
    spectra's coverage. A spectrum with fewer than ``min_good_fraction`` good grid pixels, an
    unreadable file, or a duplicate plate/mjd/fiber is skipped and listed with the reason.
    """
    t0 = time.time()
    mask_value = mask_bit_value(mask_bits)
    files = find_files(folder_or_files)
    if not files:
        raise InputError(f"{folder_or_files}: no FITS files (*.fits, *.fit) found")
    skipped: list[dict] = []
    spectra: list[Spectrum] = []
    seen: dict[str, str] = {}
    for i, path in enumerate(files, 1):
        try:
            spec = read_spectrum(path, mask_value)
            if (~spec.bad).sum() == 0:
                raise InputError(f"{path}: fully masked (no pixel with ivar > 0, finite flux and no bad-data mask bit)")
            x = shifted_loglam(spec, frame)
            if spec.id in seen:
                raise InputError(f"{path}: duplicate of {seen[spec.id]} (same plate-mjd-fiber {spec.id})")
            seen[spec.id] = path.name
            spectra.append(spec)
            status = f"ok {spec.id} {spec.meta['class']} z={spec.meta['z']:.4f} ({x.size} px)"
        except InputError as exc:
            skipped.append({"file": path.name, "reason": str(exc)})
            status = f"skipped: {exc}"
        if log:
            log(f"[{i}/{len(files)}] {path.name}: {status}")

    if wave_range is not None:
        grid = make_grid(np.log10(wave_range[0]), np.log10(wave_range[1]), step)
    elif spectra:
        lo = min(shifted_loglam(s, frame)[~s.bad].min() for s in spectra)
        hi = max(shifted_loglam(s, frame)[~s.bad].max() for s in spectra)
        grid = make_grid(lo, hi, step)
    else:
        grid = np.zeros(0)
    wavelength = 10.0 ** grid

    rows, fluxes, ivars, masks = [], [], [], []
    for spec in spectra:
        flux, ivar, mask = resample(spec, grid, frame)
        try:
            if mask.mean() < min_good_fraction:
                raise InputError(f"{spec.meta['file']}: only {mask.mean():.1%} good pixels on the common grid "
                                 f"(min_good_fraction={min_good_fraction}); fully or mostly masked")
            scale = normalisation(flux, mask, wavelength, norm, norm_window)
        except InputError as exc:
            msg = str(exc) if str(exc).startswith(spec.meta["file"]) else f"{spec.meta['file']}: {exc}"
            skipped.append({"file": spec.meta["file"], "reason": msg})
            if log:
                log(f"skipped: {msg}")
            continue
        fluxes.append(flux / scale)
        ivars.append(ivar * scale * scale)
        masks.append(mask)
        rows.append({**spec.meta, "id": spec.id, "norm": scale, "good_fraction": round(float(mask.mean()), 4)})

    paths = output_paths(out_path)
    report = {"input": str(folder_or_files) if isinstance(folder_or_files, (str, pathlib.Path)) else
              [str(f) for f in files],
              "n_files": len(files), "n_ingested": len(rows), "n_skipped": len(skipped), "skipped": skipped,
              "frame": frame, "norm": norm, "norm_window": list(norm_window) if norm_window else None,
              "grid": {"n_pixels": int(grid.size), "loglam_step": step,
                       "wavelength_min": float(wavelength[0]) if grid.size else None,
                       "wavelength_max": float(wavelength[-1]) if grid.size else None},
              "mask_bits": mask_value, "min_good_fraction": min_good_fraction,
              "outputs": {k: str(v) for k, v in paths.items()}, "seconds": round(time.time() - t0, 2)}
    if not rows:
        report["outputs"] = {}
        raise InputError(f"{folder_or_files}: no usable spectra ({len(skipped)} skipped: "
                         f"{skipped[0]['reason'] if skipped else 'none'})")
    for i, row in enumerate(rows):
        row["index"] = i
    paths["npz"].parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        paths["npz"], flux=np.asarray(fluxes, np.float32), ivar=np.asarray(ivars, np.float32),
        mask=np.asarray(masks, bool), loglam=grid, wavelength=wavelength,
        ids=np.asarray([r["id"] for r in rows]), frame=np.asarray(frame),
        mask_meaning=np.asarray("True = good pixel (use)"))
    with open(paths["catalogue"], "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=CATALOGUE_COLUMNS, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    paths["report"].write_text(json.dumps(report, indent=2) + "\n")
    return report


# ---- reading an ingested dataset -------------------------------------------------------------------

def read_catalogue(path) -> dict[str, np.ndarray]:
    """The catalogue CSV as columns (numbers parsed, ``z``/``ra``/``dec`` as float)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: catalogue file not found")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise InputError(f"{path}: catalogue is empty")
    cols = {k: [r[k] for r in rows] for k in rows[0]}
    out = {}
    for k, v in cols.items():
        if k in ("index", "plate", "mjd", "fiberid", "zwarning"):
            out[k] = np.asarray([int(x) if x not in ("", "None") else -1 for x in v], np.int64)
        elif k in ("z", "ra", "dec", "norm", "good_fraction"):
            out[k] = np.asarray([float(x) if x not in ("", "None") else np.nan for x in v])
        else:
            out[k] = np.asarray(v)
    return out


def load_ingested(out_path) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Arrays of the npz and the catalogue columns, checked to describe the same spectra."""
    paths = output_paths(out_path)
    if not paths["npz"].is_file():
        raise InputError(f"{paths['npz']}: ingested SDSS file not found (run python -m data_prep.sdss)")
    try:
        with np.load(paths["npz"]) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise InputError(f"{paths['npz']}: unreadable npz ({exc})") from None
    missing = {"flux", "ivar", "mask", "wavelength", "ids"} - set(arrays)
    if missing:
        raise InputError(f"{paths['npz']}: missing arrays {sorted(missing)}")
    cat = read_catalogue(paths["catalogue"])
    if list(cat["id"]) != list(arrays["ids"]):
        raise InputError(f"{paths['catalogue']}: ids do not match {paths['npz'].name}")
    return arrays, cat


# ---- CLI ----------------------------------------------------------------------------------------------

def _pair(text: str | None):
    if not text:
        return None
    parts = [float(p) for p in text.split(",")]
    if len(parts) != 2 or parts[0] >= parts[1]:
        raise InputError(f"expected LOW,HIGH in Angstrom, got {text!r}")
    return tuple(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_prep.sdss", description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", required=True, nargs="+", help="folders of SDSS FITS files (or files), "
                        "ingested together")
    parser.add_argument("--output", required=True, help="output .npz (catalogue CSV and report JSON go beside it)")
    parser.add_argument("--frame", choices=("observed", "rest"), default="observed")
    parser.add_argument("--norm", choices=NORMALISATIONS, default="median")
    parser.add_argument("--norm-window", help="LOW,HIGH Angstrom for the normalisation (default: whole spectrum)")
    parser.add_argument("--wave-range", help="LOW,HIGH Angstrom of the common grid (default: union of coverage)")
    parser.add_argument("--min-good-fraction", type=float, default=0.1)
    parser.add_argument("--mask-bits", type=lambda v: int(v, 0) if v[:1].isdigit() or v[:1] == "-" else v,
                        default=None, help="and_mask bits that make a pixel bad: names (NOPLUG,BRIGHTSKY) or an "
                        f"integer (-1 = any bit); default {','.join(DEFAULT_MASK_BITS)}")
    parser.add_argument("--quiet", action="store_true", help="only the summary line")
    args = parser.parse_args(argv)
    try:
        inputs = args.input[0] if len(args.input) == 1 else [f for i in args.input for f in find_files(i)]
        report = ingest(inputs, args.output, frame=args.frame, norm=args.norm,
                        norm_window=_pair(args.norm_window), wave_range=_pair(args.wave_range),
                        min_good_fraction=args.min_good_fraction, mask_bits=args.mask_bits,
                        log=None if args.quiet else (lambda m: print(m, flush=True)))
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    g = report["grid"]
    print(f"ingested {report['n_ingested']}/{report['n_files']} spectra ({report['n_skipped']} skipped) on "
          f"{g['n_pixels']} px {g['wavelength_min']:.1f}-{g['wavelength_max']:.1f} A ({report['frame']} frame) "
          f"-> {report['outputs']['npz']} ({report['seconds']:.1f} s)")
    return 0
