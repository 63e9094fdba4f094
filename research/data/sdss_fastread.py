"""A fast SDSS spectrum reader: only the header cards, HDUs and columns that ingestion needs.

astropy parses every HDU of a ``spec-*.fits`` file (the 126-236-column SPECOBJ/SPALL table and dozens
of per-exposure tables), about 0.1 CPU-s per file. cfitsio (``fitsio``) is faster but still builds the
column descriptions of the whole SPECOBJ/SPALL table (12 ms of a 20 ms file) and a Python object for
every card of HDU 0 (4 ms). This reader walks the file's headers itself: it takes the cards of HDU 0,
the COADD table's four columns and row 0 of eight SPECOBJ/SPALL columns straight from the bytes
(FITS binary tables are fixed-width big-endian rows), about 2.5 ms a file, and returns the same
:class:`Spectrum` as :func:`research.data.sdss_fits.read_spectrum`. SDSS-I/II ``spSpec`` images are
read through ``fitsio``. Anything it does not recognise (scaled or array columns, a missing table,
an odd header), and every error, goes to the astropy reader, so bad files are reported with the same
messages.
"""

from __future__ import annotations

import pathlib
import re

import fitsio
import numpy as np

from research.data import sdss_fits
from research.data.sdss_fits import Spectrum, _bad_pixels

BLOCK = 2880  # FITS headers and data come in blocks of 2880 bytes
_COADD = ("loglam", "flux", "ivar", "and_mask")
# binary-table column codes this reader decodes (others: the full reader): numpy type, bytes per element
_CODES = {"L": ("i1", 1), "B": ("u1", 1), "I": (">i2", 2), "J": (">i4", 4), "K": (">i8", 8), "A": ("S", 1),
          "E": (">f4", 4), "D": (">f8", 8), "C": (None, 8), "M": (None, 16), "P": (None, 8), "Q": (None, 16)}
_TFORM = re.compile(r"\s*(\d*)([LXBIJKAEDCMPQ])")
_STRING = re.compile(r"'((?:[^']|'')*)'")


class _Unusual(Exception):
    """The file is not the plain case this reader handles; the full reader decides."""


def _value(v):
    v = v.item() if isinstance(v, np.generic) else v
    return v.strip() if isinstance(v, str) else v


class _Header:
    """One HDU's cards (first of each keyword), their values parsed only when asked for."""

    def __init__(self, cards: dict[str, bytes]):
        self._cards = cards

    def __contains__(self, key: str) -> bool:
        return key in self._cards

    def get(self, key: str, default=None):
        raw = self._cards.get(key)
        if raw is None:
            return default
        text = raw.decode("ascii", "replace").lstrip()
        if text.startswith("'"):
            match = _STRING.match(text)
            if not match:
                raise _Unusual
            return match.group(1).replace("''", "'").rstrip()
        token = text.split("/", 1)[0].strip()
        if token in ("T", "F"):
            return token == "T"
        if not token:
            return default
        try:
            return int(token)
        except ValueError:
            try:
                return float(token.replace("D", "E"))
            except ValueError:
                raise _Unusual from None

    def __getitem__(self, key: str):
        if key not in self._cards:
            raise KeyError(key)
        return self.get(key)

    def data_bytes(self) -> int:
        """Bytes of the HDU's data, padded to whole blocks."""
        size = abs(int(self.get("BITPIX", 8))) // 8
        naxis = int(self.get("NAXIS", 0))
        if naxis == 0:
            return 0
        for i in range(1, naxis + 1):
            size *= int(self.get(f"NAXIS{i}", 0))
        size = int(self.get("GCOUNT", 1)) * (int(self.get("PCOUNT", 0)) + size)
        return -(-size // BLOCK) * BLOCK


def _text(header: _Header, key: str) -> str:
    """A string card's value without parsing the card in general (the quote-free common case)."""
    raw = header._cards.get(key, b"''").lstrip()
    end = raw.find(b"'", 1)
    if raw[:1] != b"'" or end < 0 or raw[end + 1:end + 2] == b"'":
        return str(header.get(key, ""))
    return raw[1:end].decode("ascii", "replace").rstrip()


def _read_header(fh) -> _Header | None:
    """The next header (the file positioned at its data), or None at the end of the file."""
    cards: dict[str, bytes] = {}
    first = True
    while True:
        block = fh.read(BLOCK)
        if len(block) < BLOCK:
            if first and not block:
                return None
            raise _Unusual  # truncated: the full reader names it
        first = False
        for i in range(0, BLOCK, 80):
            key = block[i:i + 8].rstrip()
            if key == b"END":
                return _Header(cards)
            if block[i + 8:i + 10] == b"= ":
                cards.setdefault(key.decode("ascii", "replace"), block[i + 10:i + 80])


def _layout(header: _Header) -> dict[str, tuple[str, int, int, str | None, bool]]:
    """Every column of a binary table: name -> (code, repeat, byte offset in a row, numpy type or None,
    scaled). Names and forms are read from the raw cards (232-column tables: this is most of a file's time)."""
    out, offset = {}, 0
    for i in range(1, int(header.get("TFIELDS", 0)) + 1):
        match = _TFORM.match(_text(header, f"TFORM{i}"))
        if not match:
            raise _Unusual
        repeat, code = int(match.group(1) or 1), match.group(2)
        kind, width = _CODES.get(code, (None, 0))
        scaled = f"TSCAL{i}" in header or f"TZERO{i}" in header
        out.setdefault(_text(header, f"TTYPE{i}").strip(), (code, repeat, offset, kind, scaled))
        offset += (repeat + 7) // 8 if code == "X" else repeat * width
    if offset != int(header.get("NAXIS1", -1)):
        raise _Unusual
    return out


def _columns(layout: dict, wanted) -> dict[str, tuple[str, int]]:
    """Name -> (numpy type, byte offset in a row) of the ``wanted`` columns; scaled, array or unknown types
    are left to the full reader."""
    out = {}
    for name in wanted:
        code, repeat, offset, kind, scaled = layout[name]
        if kind is None or scaled or (code != "A" and repeat != 1):
            raise _Unusual
        out[name] = (f"S{repeat}" if code == "A" else kind, offset)
    return out


def _rows(fh, header: _Header, columns: dict, n_rows: int) -> np.ndarray:
    """The first ``n_rows`` rows of a binary table (the file at its data) as a record array of ``columns``."""
    row_bytes = int(header["NAXIS1"])
    dtype = np.dtype({"names": list(columns), "formats": [c[0] for c in columns.values()],
                      "offsets": [c[1] for c in columns.values()], "itemsize": row_bytes})
    buf = fh.read(row_bytes * n_rows)
    if len(buf) != row_bytes * n_rows:
        raise _Unusual
    return np.frombuffer(buf, dtype)


def _cell(rows: np.ndarray, name: str):
    value = rows[name][0]
    return value.decode("ascii").rstrip("\x00 ") if isinstance(value, bytes) else value


def _coadd(fh, primary: _Header, mask_bits) -> Spectrum:
    """A spec-*.fits file: HDU 0's cards, then the COADD table and the first SPECOBJ/SPALL table."""
    coadd = info = None
    while coadd is None or info is None:
        header = _read_header(fh)
        if header is None or header.get("XTENSION") != "BINTABLE":
            raise _Unusual  # an unnamed or other table: the full reader looks for it
        start, name = fh.tell(), str(header.get("EXTNAME", "")).strip().upper()
        if name == "COADD" and coadd is None:
            layout = _layout(header)
            names = {n.lower(): n for n in layout}
            if not {"loglam", "flux", "ivar"} <= set(names) or int(header.get("NAXIS2", 0)) == 0:
                raise _Unusual
            table = _rows(fh, header, _columns(layout, {names[c] for c in _COADD if c in names}),
                          int(header["NAXIS2"]))
            coadd = {c: table[names[c]] for c in _COADD if c in names}
        elif name in ("SPECOBJ", "SPALL") and info is None:
            if int(header.get("NAXIS2", 0)):
                layout = _layout(header)
                present = {next(n for n in names if n in layout)  # the first present: the one read
                           for names, _ in sdss_fits.INFO_COLUMNS.values() if any(n in layout for n in names)}
                info = (present, _rows(fh, header, _columns(layout, present), 1))
            else:
                info = (set(), None)
        fh.seek(start + header.data_bytes())
    loglam, flux, ivar = (np.asarray(coadd[c], np.float64) for c in ("loglam", "flux", "ivar"))
    mask_word = np.asarray(coadd["and_mask"]) if "and_mask" in coadd else np.zeros(len(flux), np.int64)
    meta = sdss_fits.coadd_meta(primary)
    present, row = info
    if row is not None:
        meta = sdss_fits.with_info(meta, lambda names, default: next(
            (_value(_cell(row, n)) for n in names if n in present), default))
    return Spectrum(loglam, flux, ivar, _bad_pixels(flux, ivar, mask_word, mask_bits), meta)


def _spspec(path, mask_bits) -> Spectrum:
    with fitsio.FITS(str(path)) as fits:
        header, image = fits[0].read_header(), fits[0].read()
    if image is None or image.ndim != 2 or image.shape[0] < 4:
        raise _Unusual
    return sdss_fits.spspec_from_image(image, header, mask_bits)


def read_spectrum(path, mask_bits: int | None = None) -> Spectrum:
    """:func:`research.data.sdss_fits.read_spectrum`, reading only the needed cards, HDUs and columns."""
    path = pathlib.Path(path)
    try:
        with open(path, "rb") as fh:
            primary = _read_header(fh)
            if primary is None or primary.get("SIMPLE") is not True:
                raise _Unusual
            if primary.get("NAXIS") == 2 and "COEFF0" in primary and "COEFF1" in primary:
                spec = None
            else:
                fh.seek(fh.tell() + primary.data_bytes())
                spec = _coadd(fh, primary, mask_bits)
        if spec is None:
            spec = _spspec(path, mask_bits)
        if any(spec.meta[k] is None for k in ("plate", "mjd", "fiberid")) or not np.all(np.diff(spec.loglam) > 0):
            raise _Unusual
    except Exception:  # noqa: BLE001 - any problem: the full reader reads it or names the problem
        return sdss_fits.read_spectrum(path, mask_bits)
    spec.meta = {k: _value(v) for k, v in spec.meta.items()}
    spec.meta["file"] = path.name
    return spec
