"""Fetching public datasets, against a local HTTP server (``$RESEARCH_DATA_MIRROR``) that serves
archives built from the real data: download, checksum, unpack, convert into the layout of
``../shared/data``, the cached second call, a corrupt archive and a server that is gone. No test
touches the internet."""

import dataclasses
import functools
import hashlib
import http.server
import io
import json
import os
import socket
import subprocess
import sys
import tarfile
import threading
import zipfile

import numpy as np
import pytest

from conftest import REPO
from research.data import fetch
from research.data.fetch import FetchError
from research.paths import data_root

SHARED = data_root()  # resolved before any test points $RESEARCH_DATA at its own folder


def real_folder(name):
    return SHARED / name


@pytest.fixture
def mirror(tmp_path, monkeypatch):
    """A local server for ``tmp_path/served``; yields (served folder, list of requested paths)."""
    served = tmp_path / "served"
    served.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(served)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv(fetch.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("RESEARCH_DATA", str(tmp_path / "data"))
    yield served, requests
    server.shutdown()
    server.server_close()


def _ecg_zip(served, corrupt=False):
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w", zipfile.ZIP_DEFLATED) as z:
        for split in ("TRAIN", "TEST"):
            z.write(real_folder("ecg5000") / f"ECG5000_{split}.txt", f"ECG5000_{split}.txt")
    blob = data.getvalue()
    (served / "ecg5000").mkdir(exist_ok=True)
    (served / "ecg5000" / "ECG5000.zip").write_bytes(blob[: len(blob) // 2] if corrupt else blob)
    return blob


def _nothing_half_written(root):
    assert not [p.name for p in root.iterdir() if p.name.startswith(".fetch-")] if root.exists() else True


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.data("ecg5000")
def test_ecg5000_downloads_converts_records_and_second_call_is_cached(mirror, tmp_path):
    served, requests = mirror
    blob = _ecg_zip(served)
    folder = fetch.fetch("ecg5000", log=None)
    assert folder == tmp_path / "data" / "ecg5000"
    for split in ("TRAIN", "TEST"):
        name = f"ECG5000_{split}.txt"
        assert (folder / name).read_bytes() == (real_folder("ecg5000") / name).read_bytes()
    manifest = json.loads((tmp_path / "data" / "manifest.json").read_text())["ecg5000"]
    assert manifest["files"]["ECG5000.zip"]["sha256"] == hashlib.sha256(blob).hexdigest()
    assert manifest["content"] == {"TRAIN": {"rows": 500, "normal": 292}, "TEST": {"rows": 4500, "normal": 2627}}
    assert requests == ["/ecg5000/ECG5000.zip"]
    assert fetch.fetch("ecg5000", log=None) == folder and len(requests) == 1
    _nothing_half_written(tmp_path / "data")


@pytest.mark.data("ecg5000")
def test_ucr_ts_files_are_converted_to_the_text_layout(tmp_path):
    train = real_folder("ecg5000") / "ECG5000_TRAIN.txt"
    table = np.loadtxt(train)
    ts = "@problemName ECG5000\n@univariate true\n@data\n" + "\n".join(
        ",".join(repr(float(v)) for v in row[1:]) + f":{int(row[0])}" for row in table)
    out = tmp_path / "train.txt"
    out.write_text(fetch._ts_to_ucr(ts))
    np.testing.assert_array_equal(np.loadtxt(out), table)


@pytest.mark.data("ecg5000")
def test_corrupt_archive_is_one_error_and_leaves_nothing(mirror, tmp_path):
    served, _ = mirror
    _ecg_zip(served, corrupt=True)
    with pytest.raises(FetchError, match=r"^ecg5000: the download from http://127\.0\.0\.1:\d+/ecg5000/ECG5000\.zip "
                                         r"is corrupt \(.*\); download it by hand and unzip ECG5000\.zip"):
        fetch.fetch("ecg5000", log=None)
    assert not (tmp_path / "data" / "ecg5000").exists() and not (tmp_path / "data" / "manifest.json").exists()
    _nothing_half_written(tmp_path / "data")


@pytest.mark.data("fashion_mnist")
def test_fashion_mnist_published_md5_and_mismatch(mirror, tmp_path, monkeypatch):
    served, _ = mirror
    local = real_folder("fashion_mnist")
    (served / "fashion_mnist").mkdir()
    sums = {}
    for name in fetch.FASHION_MD5:
        data = (local / name).read_bytes()
        (served / "fashion_mnist" / name).write_bytes(data)
        sums[name] = hashlib.md5(data).hexdigest()
    # The label files here are the official ones, byte for byte: their published md5 must match.
    # The image files were rebuilt with another gzip (same decompressed bytes), so they carry their own sums.
    for name in ("train-labels-idx1-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        assert sums[name] == fetch.FASHION_MD5[name]
    spec = fetch.SPECS["fashion_mnist"]
    wrong = dataclasses.replace(spec, sources=tuple(dataclasses.replace(s, md5="0" * 32) if "images" in s.filename
                                                    else s for s in spec.sources))
    monkeypatch.setitem(fetch.SPECS, "fashion_mnist", wrong)
    with pytest.raises(FetchError, match=r"^fashion_mnist: checksum mismatch for http://127\.0\.0\.1:\d+/fashion_mnist/"
                                         r"train-images-idx3-ubyte\.gz \(md5 [0-9a-f]{32}, published 0{32}\)"):
        fetch.fetch("fashion_mnist", log=None)
    assert not (tmp_path / "data" / "fashion_mnist").exists()
    _nothing_half_written(tmp_path / "data")

    right = dataclasses.replace(spec, sources=tuple(dataclasses.replace(s, md5=sums[s.filename]) for s in spec.sources))
    monkeypatch.setitem(fetch.SPECS, "fashion_mnist", right)
    folder = fetch.fetch("fashion_mnist", log=None)
    from research.data.fashion_mnist import read_split

    images, labels = read_split(folder, "test")
    ref_images, ref_labels = read_split(local, "test")
    np.testing.assert_array_equal(images, ref_images)
    np.testing.assert_array_equal(labels, ref_labels)


@pytest.mark.data("rf_iq")
def test_rf_captures_verified_by_sample_count(mirror, tmp_path):
    served, _ = mirror
    (served / "rf").mkdir()
    for name in fetch.RF_SAMPLES:
        (served / "rf" / name).write_bytes((real_folder("rf_iq") / name).read_bytes())
    folder = fetch.fetch("rf", log=None)
    assert folder.name == "rf_iq"
    assert sorted(p.name for p in folder.iterdir()) == sorted(fetch.RF_SAMPLES)
    (served / "rf" / "ask.complex").write_bytes((real_folder("rf_iq") / "ask.complex").read_bytes()[:-8])
    folder.rename(tmp_path / "rf_old")
    with pytest.raises(FetchError, match=r"^rf: rf_iq/ask\.complex: 109672 bytes, expected 109680 \(13710 I/Q samples\)"):
        fetch.fetch("rf", log=None)
    _nothing_half_written(tmp_path / "data")


@pytest.mark.data("fsdd")
def test_fsdd_release_archive_unpacks_into_recordings(mirror, tmp_path):
    served, _ = mirror
    local = real_folder("fsdd") / "recordings"
    (served / "fsdd").mkdir()
    with tarfile.open(served / "fsdd" / "fsdd.tar.gz", "w:gz", compresslevel=1) as tar:
        tar.add(local, arcname="free-spoken-digit-dataset-1.0.9/recordings")
    folder = fetch.fetch("fsdd", log=None)
    got = sorted(p.name for p in (folder / "recordings").iterdir())
    assert got == sorted(p.name for p in local.iterdir() if p.suffix == ".wav")
    assert (folder / "recordings" / got[0]).read_bytes() == (local / got[0]).read_bytes()


@pytest.mark.data("sdss")
def test_sdss_spectra_from_the_mirror_are_checked_by_their_headers(mirror, tmp_path):
    from research.data.sdss_fits import read_spectrum

    served, _ = mirror
    (served / "sdss").mkdir()
    objects = []
    for f in sorted(real_folder("sdss").glob("*.fit*"))[:3]:
        obj = read_spectrum(f).id
        objects.append(obj)
        (served / "sdss" / f"spec-{obj}.fits").write_bytes(f.read_bytes())
    folder = fetch.fetch("sdss", objects=objects, log=None)
    assert sorted(read_spectrum(p).id for p in folder.iterdir()) == sorted(objects)
    folder.rename(tmp_path / "sdss_old")
    with pytest.raises(FetchError, match=r"^sdss: cannot download http://127\.0\.0\.1:\d+/sdss/spec-0000-00000-0000\.fits"):
        fetch.fetch("sdss", objects=[*objects, "0000-00000-0000"], log=None)
    _nothing_half_written(tmp_path / "data")


def test_server_gone_is_one_line_with_url_and_manual_path_exit_2(tmp_path):
    port = _closed_port()
    env = dict(os.environ, RESEARCH_DATA=str(tmp_path / "data"), RESEARCH_DATA_MIRROR=f"http://127.0.0.1:{port}")
    proc = subprocess.run([sys.executable, "-m", "data_prep.fetch", "ecg5000"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.splitlines() == [
        f"error: ecg5000: cannot download http://127.0.0.1:{port}/ecg5000/ECG5000.zip ([Errno 111] Connection refused); "
        f"download it by hand and unzip ECG5000.zip and put ECG5000_TRAIN.txt and ECG5000_TEST.txt into "
        f"{tmp_path / 'data' / 'ecg5000'}, or set RESEARCH_DATA_MIRROR"]
    assert not (tmp_path / "data" / "ecg5000").exists()
    _nothing_half_written(tmp_path / "data")


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_main_command_on_a_fresh_machine_fetches_on_first_use(mirror, tmp_path):
    served, requests = mirror
    _ecg_zip(served)
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-m", "research.train", "--config=experiments/ecg5000.py:dense",
                           "--config.smoke=True", f"--config.run.root={tmp_path / 'runs'}", "--config.run.name=fresh"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "ecg5000: fetched and verified into" in proc.stdout and requests == ["/ecg5000/ECG5000.zip"]
    run = json.loads((tmp_path / "runs" / "ecg5000_dense" / "fresh" / "run.json").read_text())
    assert run["data"]["train_file"] == str(tmp_path / "data" / "ecg5000" / "ECG5000_TRAIN.txt")


def test_unknown_dataset_is_one_line_exit_2():
    proc = subprocess.run([sys.executable, "-m", "data_prep.fetch", "ecg5000", "mnist"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == ["error: unknown dataset 'mnist'; choose from ecg5000, fashion_mnist, fsdd, rf, "
                                        "sdss or all"]


@pytest.mark.data("ecg5000")
def test_a_loader_fetches_on_first_use_when_the_folder_is_nowhere(mirror, tmp_path, monkeypatch):
    import ml_collections

    from research import paths
    from research.data import ecg5000

    served, requests = mirror
    _ecg_zip(served)
    monkeypatch.delenv("RESEARCH_DATA")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(paths, "DEFAULT_DATA_ROOT", tmp_path / "no_shared_data")
    cache = tmp_path / "xdg" / "research" / "data"
    assert paths.data_root() == cache
    ds = ecg5000.load(ml_collections.ConfigDict({"root": None, "path": None}))
    assert ds.meta["train_file"] == str(cache / "ecg5000" / "ECG5000_TRAIN.txt")
    assert len(ds.train["x"]) == 292 and len(ds.test["x"]) == 4500
    assert requests == ["/ecg5000/ECG5000.zip"]
    ecg5000.load(ml_collections.ConfigDict({"root": None, "path": None}))
    assert len(requests) == 1


def test_a_transfer_cut_short_is_one_error_and_leaves_nothing(tmp_path, monkeypatch):
    class CutShort(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"PK\x03\x04 only the start")
            self.close_connection = True

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CutShort)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        monkeypatch.setenv(fetch.MIRROR_ENV, f"http://127.0.0.1:{server.server_address[1]}")
        with pytest.raises(FetchError, match=r"^ecg5000: cannot download http://127\.0\.0\.1:\d+/ecg5000/ECG5000\.zip "
                                             r"\(IncompleteRead"):
            fetch.fetch("ecg5000", root=tmp_path / "data", log=None)
    finally:
        server.shutdown()
        server.server_close()
    assert not (tmp_path / "data" / "ecg5000").exists()
    _nothing_half_written(tmp_path / "data")
