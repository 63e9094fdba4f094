"""Public datasets on a fresh machine: download from the canonical source (or a mirror), verify,
unpack and convert into the folder layout the loaders read (that of ``../shared/data``).

Where: ``$RESEARCH_DATA`` if set, else ``~/.cache/research/data`` (``$XDG_CACHE_HOME`` respected).
``$RESEARCH_DATA_MIRROR`` replaces every source: file ``F`` of dataset ``D`` is then fetched from
``<mirror>/D/F``. A dataset already in place is never fetched again.

Verification: a published checksum where the source publishes one (Fashion-MNIST's md5 sums), and
for every dataset a check of the content (rows, shapes, labels, sample counts, WAV format). The
sha256 of every downloaded file goes into ``manifest.json`` beside the datasets.

Everything is downloaded and converted inside a temporary folder next to the target and renamed
into place only when it verified: offline, a bad checksum or a corrupt archive leave nothing
behind and raise one :class:`FetchError` line naming the dataset, the URL and the manual way.
"""

from __future__ import annotations

import importlib
import dataclasses
import datetime
import gzip
import hashlib
import http.client
import json
import os
import pathlib
import re
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
import wave
import zipfile
from typing import Callable

import numpy as np

from research.errors import InputError


def _reader(name: str):
    """A dataset's own reader, named "module:function" like the loaders in :mod:`research.data`: the loaders
    call this module on first use, so it names them instead of importing them."""
    module, func = name.split(":")
    return getattr(importlib.import_module(module), func)

MIRROR_ENV = "RESEARCH_DATA_MIRROR"
TIMEOUT = 60


class FetchError(InputError):
    """A dataset could not be fetched or did not verify; the message is one line."""


def cache_root() -> pathlib.Path:
    base = os.environ.get("XDG_CACHE_HOME") or pathlib.Path.home() / ".cache"
    return pathlib.Path(base) / "research" / "data"


def fetch_root() -> pathlib.Path:
    """Where fetched datasets go: ``$RESEARCH_DATA``, else the per-user cache."""
    env = os.environ.get("RESEARCH_DATA")
    return pathlib.Path(env).expanduser() if env else cache_root()


@dataclasses.dataclass(frozen=True)
class Source:
    filename: str
    url: str
    md5: str | None = None  # only a sum the source itself publishes


@dataclasses.dataclass(frozen=True)
class Spec:
    name: str
    folder: str  # the dataset's folder under the data root, as the loaders read it
    sources: tuple[Source, ...]
    convert: Callable[[dict[str, pathlib.Path], pathlib.Path], None]  # downloads -> dataset folder
    validate: Callable[[pathlib.Path], dict]  # raises FetchError; returns a content summary
    verified: str  # how the download is checked, for the manifest and the README
    manual: str  # what to put where when downloading by hand


# ---- ECG5000 (UCR archive) ----------------------------------------------------------------------
ECG_URL = "https://timeseriesclassification.com/aeon-toolkit/ECG5000.zip"
ECG_ROWS = {"TRAIN": 500, "TEST": 4500}


def _ts_to_ucr(text: str) -> str:
    """A univariate ``.ts`` file (``v1,v2,...:label`` after ``@data``) as UCR text (label, values)."""
    rows, data = [], False
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if data:
            values, label = line.rsplit(":", 1)
            rows.append(" ".join([f"{float(label):.7e}", *(f"{float(v):.7e}" for v in values.split(","))]))
        elif line.lower().startswith("@data"):
            data = True
    return "\n".join(rows) + "\n"


def _convert_ecg(files: dict[str, pathlib.Path], out: pathlib.Path) -> None:
    with zipfile.ZipFile(files["ECG5000.zip"]) as z:
        names = {pathlib.PurePosixPath(n).name: n for n in z.namelist()}
        for split in ECG_ROWS:
            target = out / f"ECG5000_{split}.txt"
            if f"ECG5000_{split}.txt" in names:
                target.write_bytes(z.read(names[f"ECG5000_{split}.txt"]))
            elif f"ECG5000_{split}.ts" in names:
                target.write_text(_ts_to_ucr(z.read(names[f"ECG5000_{split}.ts"]).decode()))
            else:
                raise FetchError(f"ECG5000.zip holds neither ECG5000_{split}.txt nor ECG5000_{split}.ts")


def _validate_ecg(folder: pathlib.Path) -> dict:
    read_ucr = _reader("research.data.ecg5000:read_ucr")

    out = {}
    for split, rows in ECG_ROWS.items():
        labels, x = read_ucr(folder / f"ECG5000_{split}.txt")
        if len(x) != rows or not set(np.unique(labels)) <= {0, 1, 2, 3, 4, 5}:
            raise FetchError(f"ECG5000_{split}.txt: {len(x)} rows with labels {sorted(set(labels))}, "
                             f"expected {rows} rows with classes 1-5")
        out[split] = {"rows": int(len(x)), "normal": int((labels == 1).sum())}
    return out


# ---- Fashion-MNIST (official IDX files) -----------------------------------------------------------
FASHION_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
# md5 sums as published in the README of github.com/zalandoresearch/fashion-mnist
FASHION_MD5 = {
    "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
    "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
    "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
    "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
}


def _copy_all(files: dict[str, pathlib.Path], out: pathlib.Path) -> None:
    for name, path in files.items():
        shutil.copyfile(path, out / name)


def _validate_fashion(folder: pathlib.Path) -> dict:
    read_split = _reader("research.data.fashion_mnist:read_split")

    out = {}
    for split, n in (("train", 60000), ("test", 10000)):
        images, labels = read_split(folder, split)
        counts = np.bincount(labels, minlength=10)
        if images.shape != (n, 28, 28) or len(counts) != 10 or not (counts == n // 10).all():
            raise FetchError(f"fashion_mnist {split}: images {images.shape}, class counts {counts.tolist()}; "
                             f"expected ({n}, 28, 28) and {n // 10} per class")
        out[split] = {"images": list(images.shape)}
    return out


# ---- FSDD (release archive) -----------------------------------------------------------------------
FSDD_URL = "https://github.com/Jakobovski/free-spoken-digit-dataset/archive/v1.0.9.tar.gz"
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "yweweler")  # those the experiments use
WAV_NAME = re.compile(r"^(\d)_([a-z]+)_(\d+)\.wav$")


def _convert_fsdd(files: dict[str, pathlib.Path], out: pathlib.Path) -> None:
    target = out / "recordings"
    target.mkdir()
    with tarfile.open(files["fsdd.tar.gz"], "r:*") as tar:
        for member in tar:
            parts = pathlib.PurePosixPath(member.name).parts
            if member.isfile() and len(parts) >= 2 and parts[-2] == "recordings" and WAV_NAME.match(parts[-1]):
                (target / parts[-1]).write_bytes(tar.extractfile(member).read())


def _validate_fsdd(folder: pathlib.Path) -> dict:
    files = sorted((folder / "recordings").glob("*.wav"))
    per = {}
    for f in files:
        digit, speaker, _ = WAV_NAME.match(f.name).groups()
        try:
            with wave.open(str(f)) as w:
                ok = (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2) and w.getnframes() > 0
        except (wave.Error, EOFError) as exc:
            raise FetchError(f"fsdd: {f.name} is not a readable WAV file ({exc})") from None
        if not ok:
            raise FetchError(f"fsdd: {f.name} is not 8 kHz mono 16-bit")
        per[(speaker, digit)] = per.get((speaker, digit), 0) + 1
    missing = [f"{s}/{d}" for s in FSDD_SPEAKERS for d in "0123456789" if per.get((s, d), 0) < 50]
    if missing:
        raise FetchError(f"fsdd: {len(files)} recordings, fewer than 50 for {', '.join(missing[:5])}"
                         + (" ..." if len(missing) > 5 else ""))
    return {"recordings": len(files), "speakers": sorted({s for s, _ in per})}


# ---- RF captures (Universal Radio Hacker test data) ----------------------------------------------
URH_URL = "https://raw.githubusercontent.com/jopohl/urh/1403d92987cc3d01d41aff64250955ce455dabd2/tests/data/"
# complex samples per capture, from the data's SOURCE.txt and equal to the shared copies' sizes
RF_SAMPLES = {"ask.complex": 13710, "cc1101.complex": 14672, "enocean.complex": 49100, "fsk.complex": 67912,
              "steckdose_anlernen.complex": 63181, "esaver.complex16s": 299046,
              "ook_overshoot.complex16s": 311736, "elektromaten.complex16s": 1236159}
RF_BYTES_PER_SAMPLE = {".complex": 8, ".complex16s": 2, ".complex32s": 4}


def _validate_rf(folder: pathlib.Path) -> dict:
    for name, n in RF_SAMPLES.items():
        size = (folder / name).stat().st_size
        expected = n * RF_BYTES_PER_SAMPLE[pathlib.Path(name).suffix]
        if size != expected:
            raise FetchError(f"rf_iq/{name}: {size} bytes, expected {expected} ({n} I/Q samples)")
    return {"captures": len(RF_SAMPLES)}


# ---- SDSS (astroquery, by plate-mjd-fiber) -------------------------------------------------------
SDSS_LIST = pathlib.Path(__file__).with_name("sdss_objects.txt")


def sdss_objects() -> list[str]:
    return [ln.strip() for ln in SDSS_LIST.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def _validate_sdss(folder: pathlib.Path, objects: list[str]) -> dict:
    from research.data.sdss_fits import read_spectrum

    ids = set()
    for f in sorted(folder.glob("*.fits")):
        try:
            ids.add(read_spectrum(f).id)
        except Exception as exc:  # noqa: BLE001 - any unreadable file fails the dataset
            raise FetchError(f"sdss: {f.name} is not a readable SDSS spectrum ({str(exc).splitlines()[0]})") from None
    missing = sorted(set(objects) - ids)
    if missing:
        raise FetchError(f"sdss: {len(missing)} of {len(objects)} spectra missing or with other identifiers, "
                         f"e.g. {missing[0]}")
    return {"spectra": len(ids)}


def _sdss_name(obj: str) -> str:
    return f"spec-{obj}.fits"


SPECS = {
    "ecg5000": Spec("ecg5000", "ecg5000", (Source("ECG5000.zip", ECG_URL),), _convert_ecg, _validate_ecg,
                    "content: 500 TRAIN and 4500 TEST rows of 140 values, classes 1-5 (no checksum is published)",
                    "unzip ECG5000.zip and put ECG5000_TRAIN.txt and ECG5000_TEST.txt into {dest}"),
    "fashion_mnist": Spec(
        "fashion_mnist", "fashion_mnist",
        tuple(Source(f, FASHION_URL + f, md5) for f, md5 in FASHION_MD5.items()), _copy_all, _validate_fashion,
        "md5 as published in the Fashion-MNIST README, and content: 60000 + 10000 images of 28x28, 10 classes",
        "put the four *-ubyte.gz files into {dest}"),
    "fsdd": Spec("fsdd", "fsdd", (Source("fsdd.tar.gz", FSDD_URL),), _convert_fsdd, _validate_fsdd,
                 "content: 8 kHz mono 16-bit WAVs, 50 per digit for each speaker the experiments use "
                 "(no checksum is published)",
                 "unpack the archive and put its recordings/ folder into {dest}"),
    "rf": Spec("rf", "rf_iq", tuple(Source(f, URH_URL + f) for f in RF_SAMPLES), _copy_all, _validate_rf,
               "content: each capture's I/Q sample count (no checksum is published)",
               "put the captures from jopohl/urh tests/data/ into {dest}"),
}
FETCHABLE = (*SPECS, "sdss")


# ---- downloading ----------------------------------------------------------------------------------
def source_url(dataset: str, source: Source) -> str:
    mirror = os.environ.get(MIRROR_ENV, "").rstrip("/")
    return f"{mirror}/{dataset}/{source.filename}" if mirror else source.url


def download(url: str, path: pathlib.Path, what: str, manual: str, timeout: float = TIMEOUT) -> dict:
    """``url`` into ``path``; returns its size, sha256 and md5. Network failures are one-line FetchErrors."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(path, "wb") as f:
            while chunk := response.read(1 << 20):
                f.write(chunk)
                sha.update(chunk)
                md5.update(chunk)
                size += len(chunk)
            if getattr(response, "length", None):  # bytes announced but never sent
                raise http.client.IncompleteRead(b"", response.length)
    except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", None) or exc
        raise FetchError(f"{what}: cannot download {url} ({reason}); {manual}") from None
    return {"url": url, "bytes": size, "sha256": sha.hexdigest(), "md5": md5.hexdigest()}


def _manifest_path(root: pathlib.Path) -> pathlib.Path:
    return root / "manifest.json"


def read_manifest(root: pathlib.Path | None = None) -> dict:
    path = _manifest_path(root or fetch_root())
    return json.loads(path.read_text()) if path.is_file() else {}


def _record(root: pathlib.Path, name: str, entry: dict) -> None:
    manifest = read_manifest(root)
    manifest[name] = entry
    tmp = root / f".manifest.{os.getpid()}.json"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    os.replace(tmp, _manifest_path(root))


def _manual(spec_manual: str, dest: pathlib.Path) -> str:
    return f"download it by hand and {spec_manual.format(dest=dest)}, or set {MIRROR_ENV}"


def fetch(name: str, root: str | os.PathLike | None = None, log: Callable[[str], None] | None = print,
          objects: list[str] | None = None) -> pathlib.Path:
    """The dataset's folder under ``root`` (default :func:`fetch_root`), fetched if absent."""
    if name not in FETCHABLE:
        raise FetchError(f"unknown dataset {name!r}; choose one of {', '.join(FETCHABLE)}")
    root = pathlib.Path(root) if root else fetch_root()
    folder = SPECS[name].folder if name in SPECS else "sdss"
    dest = root / folder
    if dest.is_dir():
        return dest
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=root, prefix=f".fetch-{name}-") as tmp:
        tmp = pathlib.Path(tmp)
        out = tmp / folder
        out.mkdir()
        if name == "sdss":
            files, summary, how = _fetch_sdss(out, dest, objects or sdss_objects(), log)
        else:
            files, summary, how = _fetch_spec(SPECS[name], tmp, out, dest, log)
        try:
            os.rename(out, dest)
        except OSError:
            if not dest.is_dir():  # not another process that got there first
                raise
            return dest
    _record(root, folder, {"dataset": name, "fetched": datetime.datetime.now().isoformat(timespec="seconds"),
                           "verified": how, "content": summary, "files": files})
    if log:
        log(f"{name}: fetched and verified into {dest}")
    return dest


def _fetch_spec(spec: Spec, tmp: pathlib.Path, out: pathlib.Path, dest: pathlib.Path, log) -> tuple:
    downloads = tmp / "downloads"
    downloads.mkdir()
    manual = _manual(spec.manual, dest)
    files, paths = {}, {}
    for src in spec.sources:
        url = source_url(spec.name, src)
        if log:
            log(f"{spec.name}: downloading {url}")
        paths[src.filename] = downloads / src.filename
        files[src.filename] = info = download(url, paths[src.filename], spec.name, manual)
        if src.md5 and info["md5"] != src.md5:
            raise FetchError(f"{spec.name}: checksum mismatch for {url} (md5 {info['md5']}, published "
                             f"{src.md5}); {manual}")
    try:
        spec.convert(paths, out)
        summary = spec.validate(out)
    except FetchError as exc:
        raise FetchError(f"{spec.name}: {exc} (from {spec.sources[0].url if len(spec.sources) == 1 else 'the downloads'}); "
                         f"{manual}") from None
    except (zipfile.BadZipFile, tarfile.TarError, EOFError, gzip.BadGzipFile, ValueError, OSError, InputError) as exc:
        url = source_url(spec.name, spec.sources[0])
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FetchError(f"{spec.name}: the download from {url} is corrupt ({reason}); {manual}") from None
    return files, summary, spec.verified


def _fetch_sdss(out: pathlib.Path, dest: pathlib.Path, objects: list[str], log) -> tuple:
    """Every listed spectrum: from the mirror (``<mirror>/sdss/spec-PLATE-MJD-FIBER.fits``) or with astroquery."""
    manual = (f"download the spec-PLATE-MJD-FIBER.fits files listed in {SDSS_LIST} from "
              f"https://dr17.sdss.org/optical/spectrum/search into {dest}, or set {MIRROR_ENV}")
    files = {}
    mirror = os.environ.get(MIRROR_ENV, "").rstrip("/")
    for i, obj in enumerate(objects, 1):
        name = _sdss_name(obj)
        if mirror:
            files[name] = download(f"{mirror}/sdss/{name}", out / name, "sdss", manual)
        else:
            sdss_fetch = importlib.import_module("research.data.sdss_fetch")

            plate, mjd, fiber = (int(p) for p in obj.split("-"))
            try:
                fetched = sdss_fetch.fetch_spectrum(plate, mjd, fiber, cache_dir=out.parent / "astroquery")
            except InputError as exc:
                raise FetchError(f"sdss: {exc}; {manual}") from None
            shutil.move(fetched, out / name)
            data = (out / name).read_bytes()
            files[name] = {"url": f"astroquery SDSS DR17 {obj}", "bytes": len(data),
                           "sha256": hashlib.sha256(data).hexdigest()}
        if log and (i % 10 == 0 or i == len(objects)):
            log(f"sdss: {i}/{len(objects)} spectra")
    try:
        summary = _validate_sdss(out, objects)
    except FetchError as exc:
        raise FetchError(f"{exc}; {manual}") from None
    return files, summary, "content: every listed plate-mjd-fiber reads as an SDSS spectrum (no checksum is published)"


def dataset_of_folder(folder: str) -> str | None:
    """The fetchable dataset whose files live in ``folder`` (e.g. ``rf_iq`` -> ``rf``), or None."""
    return next((s.name for s in SPECS.values() if s.folder == folder), "sdss" if folder == "sdss" else None)
