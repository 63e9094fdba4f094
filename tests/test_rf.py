"""RF spectra on the real URH captures in ../shared/data/rf_iq: I/Q readers, framing, the zip path, loader."""

import io
import zipfile

import ml_collections
import numpy as np
import pytest

from research.data import rf_iq as rf
from research.data import rf as rf_data
from research.errors import InputError
from research.paths import data_root

IQ_DIR = data_root() / "rf_iq"  # never a download at import
pytestmark = pytest.mark.skipif(not IQ_DIR.is_dir(), reason=f"real data not found at {IQ_DIR} (set RESEARCH_DATA)")
SMALL = ("ask", "cc1101")  # the two smallest captures (~14k samples each)


def _raw(name: str, dtype) -> np.ndarray:
    return np.fromfile(IQ_DIR / name, dtype=dtype).astype(np.float64)


@pytest.mark.parametrize("name,dtype", [("ask.complex", np.float32), ("esaver.complex16s", np.int8)])
def test_read_iq_deinterleaves_real_captures(name, dtype):
    raw = _raw(name, dtype)
    iq = rf.read_iq(IQ_DIR / name)
    assert iq.dtype == np.complex64 and len(iq) == len(raw) // 2
    np.testing.assert_array_equal(iq.real, raw[0::2].astype(np.float32))
    np.testing.assert_array_equal(iq.imag, raw[1::2].astype(np.float32))


def test_read_iq_int16_format(tmp_path):
    # No .complex32s capture is in the shared data; re-encode a real int8 capture as int16 I/Q.
    raw = np.fromfile(IQ_DIR / "esaver.complex16s", dtype=np.int8)[:20000]
    path = tmp_path / "esaver16.complex32s"
    (raw.astype(np.int16) * 200).tofile(path)
    iq = rf.read_iq(path)
    np.testing.assert_array_equal(iq.real, raw[0::2] * 200.0)
    np.testing.assert_array_equal(iq.imag, raw[1::2] * 200.0)


def test_read_iq_bad_files(tmp_path):
    data = (IQ_DIR / "ask.complex").read_bytes()
    cases = {
        "empty.complex": b"",
        "odd.complex": data[:4 * 1001],  # 1001 float32 values: an unpaired I
        "ragged.complex": data[:4 * 1000 + 3],  # not a whole number of float32 values
        "odd.complex16s": (IQ_DIR / "esaver.complex16s").read_bytes()[:999],
    }
    for name, payload in cases.items():
        (tmp_path / name).write_bytes(payload)
        with pytest.raises(InputError, match=name):
            rf.read_iq(tmp_path / name)
    with pytest.raises(InputError, match="file not found"):
        rf.read_iq(tmp_path / "missing.complex")
    with pytest.raises(InputError, match="unknown I/Q extension"):
        rf.read_iq(IQ_DIR / "SOURCE.txt")


@pytest.mark.parametrize("name,length,hop", [("ask.complex", 256, 128), ("esaver.complex16s", 128, 100)])
def test_frames_match_numpy_fft(name, length, hop):
    iq = rf.read_iq(IQ_DIR / name)
    frames = rf.frame_spectra(iq, length, hop, "hann")
    assert frames.shape == (1 + (len(iq) - length) // hop, length) and frames.dtype == np.complex128
    window = np.hanning(length + 1)[:-1]  # periodic Hann
    for i in (0, len(frames) // 2, len(frames) - 1):
        seg = iq[i * hop:i * hop + length].astype(np.complex128)
        np.testing.assert_allclose(frames[i], np.fft.fftshift(np.fft.fft(seg * window)), rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(frames[i, length // 2], np.sum(seg * window), rtol=1e-9)  # DC in the centre
    live = frames[np.abs(frames).min(1) > 0][:3]
    np.testing.assert_allclose(rf.magnitudes(live, db=True), 20 * np.log10(np.abs(live)))
    np.testing.assert_array_equal(rf.magnitudes(live), np.abs(live))
    silent = frames[np.abs(frames).max(1) == 0]  # esaver starts with digital silence: dB stays finite
    assert (rf.magnitudes(silent, db=True, floor_db=-150) == -150).all()


def test_framing_errors():
    iq = rf.read_iq(IQ_DIR / "ask.complex")
    with pytest.raises(InputError, match="shorter than one frame"):
        rf.frame_spectra(iq[:100], 256, 128)
    with pytest.raises(InputError, match="hop"):
        rf.frame_spectra(iq, 256, 0)
    with pytest.raises(InputError, match="window"):
        rf.frame_spectra(iq, 256, 128, window="no-such-window")


def test_frames_tool_round_trip(tmp_path, capsys):
    out = tmp_path / "frames.zip"
    assert rf.main(["frames", "--input", str(IQ_DIR), "--output", str(out), "--frame-length", "128",
                    "--hop", "64", "--sources", ",".join(SMALL)]) == 0
    direct, skipped = rf.frames_from_folder(IQ_DIR, 128, 64, sources=SMALL)
    assert not skipped
    z = rf.read_frames_zip(out)
    assert not z.skipped and z.spectra.dtype == np.complex128
    back = z.by_source()
    assert sorted(back) == sorted(SMALL)
    for source in SMALL:
        np.testing.assert_array_equal(back[source], direct[source])
    assert all(rf.parse_member(n)[0] in SMALL for n in z.names)
    assert "ask" in capsys.readouterr().out
    # never overwrites, and bad input is a one-line error with exit status 2
    assert rf.main(["frames", "--input", str(IQ_DIR), "--output", str(out), "--sources", "ask"]) == 2
    assert rf.main(["frames", "--input", str(tmp_path / "nope"), "--output", str(tmp_path / "x.zip")]) == 2
    assert "error:" in capsys.readouterr().err


def _npy(array) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=True)
    return buf.getvalue()


def test_zip_skips_and_reports_bad_members(tmp_path):
    frames = rf.frame_spectra(rf.read_iq(IQ_DIR / "ask.complex"), 256, 128)[:5]
    path = tmp_path / "mixed.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for i, row in enumerate(frames):
            zf.writestr(f"ask_{i:06d}.npy", _npy(row))
        zf.writestr("two_d_000000.npy", _npy(frames[:2]))
        zf.writestr("real_000000.npy", _npy(np.abs(frames[0])))
        zf.writestr("short_000000.npy", _npy(frames[0][:200]))
        zf.writestr("corrupt_000000.npy", _npy(frames[0])[:60])
        zf.writestr("pickled_000000.npy", _npy(np.array([{"a": 1}], dtype=object)))
        zf.writestr("notes.txt", "not a spectrum")
    z = rf.read_frames_zip(path)
    assert z.names == [f"ask_{i:06d}.npy" for i in range(5)]
    np.testing.assert_array_equal(z.spectra, frames)
    reasons = dict(z.skipped)
    assert set(reasons) == {"two_d_000000.npy", "real_000000.npy", "short_000000.npy", "corrupt_000000.npy",
                            "pickled_000000.npy", "notes.txt"}
    assert "not 1-D" in reasons["two_d_000000.npy"]
    assert "not complex" in reasons["real_000000.npy"]
    assert "wrong length 200" in reasons["short_000000.npy"]
    assert "unreadable" in reasons["corrupt_000000.npy"] and "unreadable" in reasons["pickled_000000.npy"]
    assert "6 members skipped" in z.report()
    with pytest.raises(InputError):  # an explicit length that no member has
        rf.read_frames_zip(path, length=64)


def test_zip_empty_or_all_bad(tmp_path):
    empty = tmp_path / "empty.zip"
    zipfile.ZipFile(empty, "w").close()
    with pytest.raises(InputError, match="archive is empty"):
        rf.read_frames_zip(empty)
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as zf:
        zf.writestr("x_000000.npy", _npy(np.zeros((4, 4), complex)))
    with pytest.raises(InputError, match="no valid member"):
        rf.read_frames_zip(bad)
    not_zip = tmp_path / "not.zip"
    not_zip.write_bytes(b"PK not really")
    with pytest.raises(InputError, match="not a readable zip"):
        rf.read_frames_zip(not_zip)


def _cfg(**kw):
    base = dict(name="rf", frame_length=128, hop=64, db=True, normal_devices=("ook_overshoot", "steckdose_anlernen"),
                anomaly_devices=SMALL, max_frames_per_device=400)
    base.update(kw)
    return ml_collections.ConfigDict(base)


@pytest.mark.slow
def test_loader_split_folder_and_zip(tmp_path):
    ds = rf_data.load(_cfg())
    ids = ds.test_ids
    sources = {i.rsplit("_", 1)[0] for i in ids}
    assert sources == {"ook_overshoot", "steckdose_anlernen", *SMALL}
    is_unseen = np.array([i.rsplit("_", 1)[0] in SMALL for i in ids])
    np.testing.assert_array_equal(ds.test_labels, is_unseen.astype(int))
    stats = ds.meta["sources"]
    assert len(ds.train["x"]) == sum(stats[s]["train_active"] + stats[s]["train_idle"]
                                     for s in ("ook_overshoot", "steckdose_anlernen"))
    assert ds.train["x"].shape[1] == 128 and np.isfinite(ds.train["x"]).all()
    assert ds.train["x"].min() >= -30.0  # the configured dB floor
    # held-out blocks of normal devices: no test frame shares samples with a training frame
    for s in ("ook_overshoot", "steckdose_anlernen"):
        test_idx = {int(i.rsplit("_", 1)[1]) for i in ids if i.startswith(s + "_")}
        assert all(i % 16 != 15 for i in test_idx)  # the frame that overlaps the next block is dropped
    # the zip path gives the same dataset as framing the folder in memory
    out = tmp_path / "f.zip"
    rf.main(["frames", "--input", str(IQ_DIR), "--output", str(out), "--frame-length", "128", "--hop", "64"])
    from_zip = rf_data.load(_cfg(zip_path=str(out)))
    np.testing.assert_array_equal(from_zip.train["x"], ds.train["x"])
    assert from_zip.test_ids == ds.test_ids
    assert len(rf_data.load(_cfg(limit=50)).train["x"]) == 50


def test_idle_frames_sit_at_the_noise_floor():
    spectra = rf.frame_spectra(rf.read_iq(IQ_DIR / "fsk.complex"), 256, 128)
    power = np.abs(spectra) ** 2
    floor = rf_data.noise_floor(power)
    act = rf_data.activity_db(power, floor)
    idle, active = act < 6, act >= 10
    assert idle.sum() > 50 and active.sum() > 50  # fsk.complex: a burst, then silence
    x = rf_data.features(spectra, floor, db=True, floor_db=-200)
    centre = np.r_[0:120, 137:256]
    assert abs(np.median(x[idle][:, centre])) < 3.0  # idle bins ~ 0 dB above the floor
    assert np.median(x[active].max(1)) > 20.0  # bursts stand far above it


def test_loader_errors():
    with pytest.raises(InputError, match="no source 'nope'"):
        rf_data.load(_cfg(anomaly_devices=("nope",)))
    with pytest.raises(InputError, match="also listed as normal"):
        rf_data.load(_cfg(anomaly_devices=("ook_overshoot",)))


@pytest.mark.slow
def test_rf_dense_smoke_run(tmp_path):
    from experiments.rf import get_config
    from research.experiment import run

    c = get_config("dense")
    c.smoke = True
    c.run.root = str(tmp_path)
    summary = run(c, log=lambda *_: None)
    base = summary["analyses"]["baselines"]
    assert set(base) >= {"autoencoder", "iforest", "pca", "per_group"}
    assert set(base["per_group"]) == {"ask", "cc1101", "enocean", "fsk"}
    run_dir = tmp_path / "rf_dense"
    (run_path,) = run_dir.iterdir()
    for name in ("error_hist.png", "error_scatter.png", "examples.png", "baselines_roc.png"):
        assert (run_path / "plots" / name).stat().st_size > 0
