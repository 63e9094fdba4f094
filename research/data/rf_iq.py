"""RF spectra: headerless I/Q captures -> windowed-FFT spectrum frames -> zip of complex ``.npy`` files.

Two inputs feed the same frames (one complex spectrum per row, grouped by source = capture/device):

* I/Q captures (URH layout, interleaved I,Q, no header): ``.complex`` float32, ``.complex16s`` int8,
  ``.complex32s`` int16; the dtype comes from the extension. URH's compressed ``.coco`` is a bzip2 tar
  holding one such file (float32 unless the member's own extension says otherwise).
* A zip archive of ``.npy`` members, each a 1-D complex spectrum. Members that are unreadable, not
  1-D, not complex or of the wrong length are skipped and reported, never fatal; an archive with no
  valid member is an :class:`~research.errors.InputError`.

Member names written by :func:`write_frames_zip` are ``<source>_<frame index>.npy`` (the index is
the frame's position in its capture, zero-padded), so a zip round trip keeps device and time order.

CLI::

    python -m data_prep.rf frames --input ../shared/data/rf_iq --output frames.zip --frame-length 256 --hop 128
    python -m data_prep.rf summary --input frames.zip
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import io
import pathlib
import re
import sys
import tarfile
import zipfile
from typing import Iterable, Mapping

import numpy as np
from scipy.signal import get_window

from research.data.sources import expand as expand_paths
from research.errors import InputError

IQ_DTYPES: dict[str, np.dtype] = {
    ".complex": np.dtype(np.float32),
    ".complex16s": np.dtype(np.int8),
    ".complex32s": np.dtype(np.int16),
}
COMPRESSED = ".coco"  # URH: bzip2-compressed tar of one capture
IQ_SUFFIXES = (*IQ_DTYPES, COMPRESSED)
_MEMBER = re.compile(r"^(?P<source>.+)_(?P<index>\d+)\.npy$")


# --------------------------------------------------------------------------- I/Q captures

def _decode(raw_bytes: bytes, dtype: np.dtype, source) -> np.ndarray:
    if len(raw_bytes) == 0:
        raise InputError(f"{source}: file is empty")
    if len(raw_bytes) % dtype.itemsize:
        raise InputError(f"{source}: {len(raw_bytes)} bytes is not a whole number of {dtype.name} values")
    raw = np.frombuffer(raw_bytes, dtype=dtype)
    if raw.size % 2:
        raise InputError(f"{source}: odd number of values ({raw.size}); interleaved I/Q needs pairs")
    if dtype.kind == "f" and not np.isfinite(raw).all():
        raise InputError(f"{source}: {int((~np.isfinite(raw)).sum())} non-finite I/Q values")
    return raw.astype(np.float32).view(np.complex64)


def _read_coco(path: pathlib.Path) -> np.ndarray:
    try:
        with tarfile.open(path, "r:bz2") as tar:
            members = [m for m in tar.getmembers() if m.isfile()]
            if len(members) != 1:
                raise InputError(f"{path}: a .coco archive holds one capture, found {len(members)} files")
            raw = tar.extractfile(members[0]).read()
    except (tarfile.TarError, OSError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .coco archive (bzip2 tar: {str(exc).splitlines()[0]})") from None
    dtype = IQ_DTYPES.get(pathlib.PurePosixPath(members[0].name).suffix.lower(), IQ_DTYPES[".complex"])
    return _decode(raw, dtype, f"{path}:{members[0].name}")


def read_iq(path: str | pathlib.Path) -> np.ndarray:
    """complex64 samples of one capture; integer formats keep their raw counts (no rescaling)."""
    path = pathlib.Path(path)
    suffix = path.suffix.lower()
    if suffix not in IQ_DTYPES and suffix != COMPRESSED:
        raise InputError(f"{path}: unknown I/Q extension {path.suffix!r}; expected one of {IQ_SUFFIXES}")
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    if suffix == COMPRESSED:
        return _read_coco(path)
    return _decode(path.read_bytes(), IQ_DTYPES[suffix], path)


def iq_files(paths) -> list[pathlib.Path]:
    """Captures of a folder, or of several files/folders/globs (comma-separated or a sequence)."""
    if isinstance(paths, (str, pathlib.Path)) and "," not in str(paths) and pathlib.Path(paths).is_dir():
        folder = pathlib.Path(paths)
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IQ_SUFFIXES and p.is_file())
        if not files:
            raise InputError(f"{folder}: no I/Q captures ({', '.join('*' + e for e in IQ_SUFFIXES)})")
        return files
    return expand_paths([str(paths)] if isinstance(paths, pathlib.Path) else paths, IQ_SUFFIXES)


# --------------------------------------------------------------------------- framing, magnitudes

def frame_spectra(iq: np.ndarray, frame_length: int = 256, hop: int = 128, window: str = "hann",
                  source: str = "signal") -> np.ndarray:
    """complex128 ``(n_frames, frame_length)`` FFTs of windowed frames, fftshifted (DC in the centre).

    Frame ``i`` covers samples ``[i*hop, i*hop + frame_length)``; a tail shorter than a frame is dropped.
    """
    if frame_length < 2:
        raise InputError(f"frame_length: must be >= 2, got {frame_length}")
    if hop < 1:
        raise InputError(f"hop: must be >= 1, got {hop}")
    iq = np.asarray(iq)
    if iq.ndim != 1:
        raise InputError(f"{source}: I/Q signal must be 1-D, got shape {iq.shape}")
    if len(iq) < frame_length:
        raise InputError(f"{source}: {len(iq)} samples is shorter than one frame ({frame_length})")
    try:
        win = get_window(window, frame_length, fftbins=True)
    except ValueError as exc:
        raise InputError(f"window: {exc}") from None
    frames = np.lib.stride_tricks.sliding_window_view(iq.astype(np.complex128), frame_length)[::hop]
    return np.fft.fftshift(np.fft.fft(frames * win, axis=-1), axes=-1)


def frequency_axis(frame_length: int, sample_rate: float = 1.0) -> np.ndarray:
    """Bin centre frequencies of :func:`frame_spectra` rows (same fftshift order)."""
    return np.fft.fftshift(np.fft.fftfreq(frame_length, d=1.0 / sample_rate))


def magnitudes(spectra: np.ndarray, db: bool = False, floor_db: float = -200.0) -> np.ndarray:
    """``|X|`` or ``20 log10 |X|`` (dB clipped below at ``floor_db`` so silent bins stay finite)."""
    mag = np.abs(spectra)
    if not db:
        return mag
    with np.errstate(divide="ignore"):
        return np.maximum(20.0 * np.log10(mag), floor_db)


def frames_from_folder(folder, frame_length: int = 256, hop: int = 128, window: str = "hann",
                       sources: Iterable[str] | None = None) -> tuple[dict[str, np.ndarray], list[tuple[str, str]]]:
    """Spectrum frames of every capture in ``folder`` (one or several, see :func:`iq_files`; source =
    file stem); bad captures, and a second capture with a stem already read, are skipped + reported."""
    wanted = None if sources is None else set(sources)
    frames: dict[str, np.ndarray] = {}
    skipped: list[tuple[str, str]] = []
    origin: dict[str, pathlib.Path] = {}
    for path in iq_files(folder):
        if wanted is not None and path.stem not in wanted:
            continue
        if path.stem in origin:
            skipped.append((path.name, f"{path}: same capture name {path.stem!r} as {origin[path.stem]}"))
            continue
        origin[path.stem] = path
        try:
            frames[path.stem] = frame_spectra(read_iq(path), frame_length, hop, window, source=str(path))
        except InputError as exc:
            skipped.append((path.name, str(exc)))
    if wanted is not None and (missing := wanted - set(frames) - {s for s, _ in skipped}):
        raise InputError(f"{folder}: no capture named {sorted(missing)[0]!r} (stems: "
                         f"{sorted(p.stem for p in iq_files(folder))})")
    if not frames:
        raise InputError(f"{folder}: no readable capture ({skipped[0][1] if skipped else 'none selected'})")
    return frames, skipped


# --------------------------------------------------------------------------- zip of .npy frames

def write_frames_zip(path, frames: Mapping[str, np.ndarray], overwrite: bool = False) -> pathlib.Path:
    """One complex128 ``.npy`` member per frame, named ``<source>_<index>.npy``."""
    path = pathlib.Path(path)
    if path.exists() and not overwrite:
        raise InputError(f"{path}: already exists (pass --overwrite to replace it)")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as zf:
        for source, rows in frames.items():
            width = max(6, len(str(len(rows) - 1)))
            for i, row in enumerate(np.asarray(rows, np.complex128)):
                buf = io.BytesIO()
                np.save(buf, row, allow_pickle=False)
                zf.writestr(f"{source}_{i:0{width}d}.npy", buf.getvalue())
    return path


def parse_member(name: str) -> tuple[str, int]:
    """``(source, frame index)`` of a member name; names without ``_<index>`` get index -1."""
    base = pathlib.PurePosixPath(name).name
    m = _MEMBER.match(base)
    if m:
        return m.group("source"), int(m.group("index"))
    return base[:-4] if base.endswith(".npy") else base, -1


@dataclasses.dataclass
class ZipFrames:
    """Valid members of an archive, in archive order, and the members skipped with the reason."""

    names: list[str]
    spectra: np.ndarray  # complex128 (N, L)
    skipped: list[tuple[str, str]]
    path: str = ""

    def by_source(self) -> dict[str, np.ndarray]:
        """Frames grouped by source, each group sorted by frame index (time order)."""
        groups: dict[str, list[tuple[int, int]]] = collections.defaultdict(list)
        for row, name in enumerate(self.names):
            source, index = parse_member(name)
            groups[source].append((index, row))
        return {s: self.spectra[[row for _, row in sorted(rows)]] for s, rows in groups.items()}

    def report(self) -> str:
        counts = collections.Counter(parse_member(n)[0] for n in self.names)
        lines = [f"{self.path}: {len(self.names)} frames of length {self.spectra.shape[1]} "
                 f"from {len(counts)} sources, {len(self.skipped)} members skipped"]
        lines += [f"  {source}: {n} frames" for source, n in sorted(counts.items())]
        lines += [f"  skipped {name}: {reason}" for name, reason in self.skipped]
        return "\n".join(lines)


def read_frames_zip(path, length: int | None = None) -> ZipFrames:
    """Reads 1-D complex ``.npy`` members; with ``length=None`` the most common length is expected."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as exc:
        raise InputError(f"{path}: not a readable zip archive ({exc})") from None
    candidates: list[tuple[str, np.ndarray]] = []
    skipped: list[tuple[str, str]] = []
    with zf:
        members = [m for m in zf.infolist() if not m.is_dir()]
        if not members:
            raise InputError(f"{path}: archive is empty")
        for info in members:
            if not info.filename.endswith(".npy"):
                skipped.append((info.filename, "not a .npy file"))
                continue
            try:
                arr = np.load(io.BytesIO(zf.read(info)), allow_pickle=False)
            except Exception as exc:  # corrupt member: zlib/CRC errors, bad header, pickled object
                skipped.append((info.filename, f"unreadable ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"))
                continue
            if arr.ndim != 1:
                skipped.append((info.filename, f"not 1-D (shape {arr.shape})"))
            elif not np.iscomplexobj(arr):
                skipped.append((info.filename, f"not complex (dtype {arr.dtype})"))
            elif not np.isfinite(arr).all():
                skipped.append((info.filename, "non-finite values"))
            else:
                candidates.append((info.filename, arr))
    if not candidates:
        first = skipped[0] if skipped else ("?", "?")
        raise InputError(f"{path}: no valid member (1-D complex .npy); {len(skipped)} skipped, "
                         f"first {first[0]}: {first[1]}")
    if length is None:
        length = collections.Counter(len(a) for _, a in candidates).most_common(1)[0][0]
    names, rows = [], []
    for name, arr in candidates:
        if len(arr) != length:
            skipped.append((name, f"wrong length {len(arr)} (expected {length})"))
        else:
            names.append(name)
            rows.append(arr.astype(np.complex128))
    if not rows:
        raise InputError(f"{path}: no member of length {length}; {len(skipped)} skipped")
    return ZipFrames(names, np.stack(rows), skipped, str(path))


# --------------------------------------------------------------------------- CLI

def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m data_prep.rf", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    f = sub.add_parser("frames", help="I/Q captures -> zip of complex spectrum frames (.npy)")
    f.add_argument("--input", required=True, help="folder of .complex/.complex16s/.complex32s captures")
    f.add_argument("--output", required=True, help="zip file to write")
    f.add_argument("--frame-length", type=int, default=256)
    f.add_argument("--hop", type=int, default=128)
    f.add_argument("--window", default="hann", help="scipy.signal.get_window name")
    f.add_argument("--sources", default=None, help="comma-separated capture stems (default: all)")
    f.add_argument("--overwrite", action="store_true")
    s = sub.add_parser("summary", help="frames per source and skipped members of a frames zip")
    s.add_argument("--input", required=True)
    s.add_argument("--frame-length", type=int, default=None, help="expected length (default: most common)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "frames":
            sources = args.sources.split(",") if args.sources else None
            frames, skipped = frames_from_folder(args.input, args.frame_length, args.hop, args.window, sources)
            out = write_frames_zip(args.output, frames, overwrite=args.overwrite)
            for source, rows in frames.items():
                print(f"{source}: {len(rows)} frames")
            for name, reason in skipped:
                print(f"skipped {name}: {reason}")
            print(f"wrote {sum(map(len, frames.values()))} frames of length {args.frame_length} to {out}")
        else:
            print(read_frames_zip(args.input, args.frame_length).report())
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
