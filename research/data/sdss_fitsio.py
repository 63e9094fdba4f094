"""A fast SDSS spectrum reader: cfitsio (``fitsio``) reading only what ingestion needs.

astropy parses every HDU of a ``spec-*.fits`` file (the 126-236-column SPECOBJ/SPALL table and
dozens of per-exposure tables), about 0.1 CPU-s per file. This reader takes HDU 0's header, four
COADD columns and eight SPECOBJ/SPALL columns, and returns the same :class:`Spectrum` as
:func:`research.data.sdss_fits.read_spectrum`. Anything it does not recognise, and every error,
goes to that reader, so bad files are reported with the same messages.
"""

from __future__ import annotations

import pathlib

import fitsio
import numpy as np

from research.data import sdss_fits
from research.data.sdss_fits import Spectrum, _bad_pixels, _objid

_COADD = ("loglam", "flux", "ivar", "and_mask")
_INFO = {"plate": ("PLATE",), "mjd": ("MJD",), "fiberid": ("FIBERID",), "objid": ("BESTOBJID", "OBJID"),
         "class": ("CLASS",), "subclass": ("SUBCLASS",), "z": ("Z",), "zwarning": ("ZWARNING",),
         "ra": ("RA", "PLUG_RA"), "dec": ("DEC", "PLUG_DEC")}


class _Unusual(Exception):
    """The file is not the plain case this reader handles; the full reader decides."""


def _value(v):
    v = v.item() if isinstance(v, np.generic) else v
    return v.strip() if isinstance(v, str) else v


def _coadd(path, fits, header, mask_bits) -> Spectrum:
    hdu = fits["COADD"]
    names = {c.lower(): c for c in hdu.get_colnames()}
    if not {"loglam", "flux", "ivar"} <= set(names) or hdu.get_nrows() == 0:
        raise _Unusual
    cols = [names[c] for c in _COADD if c in names]
    table = hdu.read(columns=cols)
    loglam, flux, ivar = (np.asarray(table[names[c]], np.float64) for c in ("loglam", "flux", "ivar"))
    mask_word = np.asarray(table[names["and_mask"]]) if "and_mask" in names else np.zeros(len(flux), np.int64)
    meta = {"plate": header.get("PLATEID"), "mjd": header.get("MJD"), "fiberid": header.get("FIBERID"),
            "objid": _objid(header.get("OBJID")), "class": "", "subclass": "", "z": np.nan, "zwarning": None,
            "ra": header.get("PLUG_RA", np.nan), "dec": header.get("PLUG_DEC", np.nan), "format": "spec"}
    info = next((fits[n] for n in ("SPECOBJ", "SPALL") if n in fits), None)
    if info is None:  # an unnamed catalogue table: the full reader looks for it
        raise _Unusual
    if info.get_nrows():
        present = set(info.get_colnames())
        wanted = {key: next((n for n in names_ if n in present), None) for key, names_ in _INFO.items()}
        row = info.read(columns=sorted({n for n in wanted.values() if n}), rows=[0])
        defaults = {"class": "", "subclass": "", "z": np.nan, "zwarning": None}
        meta.update({key: _value(row[n][0]) if n else defaults.get(key, meta[key]) for key, n in wanted.items()})
        meta["objid"] = _objid(meta["objid"])
    return Spectrum(loglam, flux, ivar, _bad_pixels(flux, ivar, mask_word, mask_bits), meta)


def _spspec(fits, header, mask_bits) -> Spectrum:
    image = fits[0].read()
    if image is None or image.ndim != 2 or image.shape[0] < 4:
        raise _Unusual
    return sdss_fits.spspec_from_image(image, header, mask_bits)


def read_spectrum(path, mask_bits: int | None = None) -> Spectrum:
    """:func:`research.data.sdss_fits.read_spectrum`, reading only the needed HDUs and columns."""
    path = pathlib.Path(path)
    try:
        with fitsio.FITS(str(path)) as fits:
            header = fits[0].read_header()
            if "COADD" in fits:
                spec = _coadd(path, fits, header, mask_bits)
            elif header.get("NAXIS") == 2 and "COEFF0" in header and "COEFF1" in header:
                spec = _spspec(fits, header, mask_bits)
            else:
                raise _Unusual
        if any(spec.meta[k] is None for k in ("plate", "mjd", "fiberid")) or not np.all(np.diff(spec.loglam) > 0):
            raise _Unusual
    except Exception:  # noqa: BLE001 - any problem: the full reader reads it or names the problem
        return sdss_fits.read_spectrum(path, mask_bits)
    spec.meta = {k: _value(v) for k, v in spec.meta.items()}
    spec.meta["file"] = path.name
    return spec
