"""The generic loaders (arrays, wav, iq) and data.path as several paths/globs, on real files from
../shared/data written out in the forms researchers keep them in."""

import shutil

import ml_collections
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from research.config import with_defaults
from research.data import arrays, fsdd, iq, load_dataset, rf_iq, sdss, wav
from research.data import sdss_fits
from research.data.ecg5000 import read_ucr
from research.data.fashion_mnist import read_split
from research.errors import InputError


def _cfg(module, **keys):
    """The loader's ``config.data`` block at its defaults, with ``keys`` set."""
    c = with_defaults(ml_collections.ConfigDict(), module.DEFAULTS)
    with c.ignore_type():
        c.update(keys)
    return c


# ---- arrays ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def ecg(data_dir):
    y_train, x_train = read_ucr(data_dir / "ecg5000" / "ECG5000_TRAIN.txt")
    y_test, x_test = read_ucr(data_dir / "ecg5000" / "ECG5000_TEST.txt")
    return y_train, x_train, y_test, x_test


@pytest.mark.data("ecg5000")
def test_arrays_csv_train_and_parquet_test_equal_the_ucr_files(ecg, tmp_path):
    y_train, x_train, y_test, x_test = ecg
    np.savetxt(tmp_path / "train.csv", np.column_stack([y_train, x_train]), delimiter=",", fmt="%.9g")
    np.savetxt(tmp_path / "test.csv", np.column_stack([y_test, x_test]), delimiter=",", fmt="%.9g")
    columns = {"beat": [f"b{i}" for i in range(len(y_test))], "class": y_test}
    columns.update({f"t{j}": x_test[:, j] for j in range(x_test.shape[1])})
    pq.write_table(pa.table(columns), tmp_path / "test.parquet")

    ds = arrays.load(_cfg(arrays, path=str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.csv"),
                          label_column="0", normal_labels=("1",)))
    assert np.array_equal(ds.train["x"], x_train[y_train == 1])  # headerless CSV: column '0' is the label
    assert np.array_equal(ds.test["x"], x_test)
    assert np.array_equal(ds.test_labels, (y_test != 1).astype(np.int32))
    assert ds.test_ids[:2] == ["test_0", "test_1"] and ds.kind == "1d"

    # a test file whose label column has another name: a one-line error naming the key, the file and the columns
    with pytest.raises(InputError, match=r"^config key data.label_column: no column '0' in .*test.parquet "
                                         r"\(columns: beat, class, t0,"):
        arrays.load(_cfg(arrays, path=str(tmp_path / "train.csv"), test_path=str(tmp_path / "test.parquet"),
                         label_column="0", normal_labels=("1",)))
    ds = arrays.load(_cfg(arrays, path=str(tmp_path / "test.parquet"), label_column="class", id_column="beat",
                          normal_labels=(1,), test_fraction=0.25))
    n_normal = int((y_test == 1).sum())
    assert len(ds.train["x"]) == n_normal - round(0.25 * n_normal)
    assert ds.test_labels.sum() == (y_test != 1).sum()  # every abnormal beat is in the test split
    assert set(ds.train_ids).isdisjoint(ds.test_ids) and all(i.startswith("b") for i in ds.test_ids)


@pytest.mark.data("ecg5000")
def test_arrays_npy_npz_and_several_files(ecg, tmp_path):
    y_train, x_train, y_test, x_test = ecg
    np.save(tmp_path / "a.npy", x_train[:200])
    np.save(tmp_path / "b.npy", x_train[200:])
    np.savez(tmp_path / "test.npz", x=x_test, y=y_test)
    # no label column for training: every row of both files (a glob) is normal
    ds = arrays.load(_cfg(arrays, path=str(tmp_path / "*.npy"), test_path=str(tmp_path / "test.npz"),
                          label_column=None))
    assert np.array_equal(ds.train["x"], x_train)
    assert ds.test_labels is None  # the test file's labels are not read without a label column
    ds = arrays.load(_cfg(arrays, path=str(tmp_path / "test.npz"), label_column="y", normal_labels=("1",),
                          test_fraction=0.0))
    assert np.array_equal(ds.train["x"], x_test[y_test == 1]) and ds.test_labels.all()
    np.save(tmp_path / "short.npy", x_train[:, :100])
    with pytest.raises(InputError, match=r"short.npy: rows of shape \(100,\), the files before have \(140,\)$"):
        arrays.load(_cfg(arrays, path=f"{tmp_path / 'a.npy'},{tmp_path / 'short.npy'}"))
    with pytest.raises(InputError, match=r"nothing.csv: no such file or folder$"):
        arrays.load(_cfg(arrays, path=str(tmp_path / "nothing.csv")))


@pytest.mark.data("fashion_mnist")
def test_arrays_flattened_images_from_parquet_list_column_and_npy(data_dir, tmp_path):
    images, labels = read_split(data_dir / "fashion_mnist", "test")
    images, labels = images[:1000], labels[:1000]
    flat = images.reshape(len(images), -1)
    pq.write_table(pa.table({"label": labels, "pixels": pa.array(list(flat), pa.list_(pa.float32()))}),
                   tmp_path / "fashion.parquet")
    ds = arrays.load(_cfg(arrays, path=str(tmp_path / "fashion.parquet"), label_column="label",
                          normal_labels=(7,), shape=(28, 28), test_fraction=0.5))
    assert ds.kind == "image" and ds.train["x"].shape[1:] == (28, 28)
    rows = [int(i.rsplit("_", 1)[1]) for i in ds.train_ids]  # ids are <file stem>_<row>
    assert np.array_equal(ds.train["x"], images[rows]) and set(labels[rows]) == {7}
    assert len(rows) + int((ds.test_labels == 0).sum()) == int((labels == 7).sum())
    assert int(ds.test_labels.sum()) == int((labels != 7).sum())
    np.save(tmp_path / "flat.npy", flat)
    ds = arrays.load(_cfg(arrays, path=str(tmp_path / "flat.npy"), shape=(28, 28), test_fraction=0.1))
    assert len(ds.train["x"]) == 900 and ds.test_labels is None
    with pytest.raises(InputError, match=r"^config key data.shape: \(28, 27\) does not hold the 784 values per row"):
        arrays.load(_cfg(arrays, path=str(tmp_path / "flat.npy"), shape=(28, 27)))


# ---- wav -----------------------------------------------------------------------------------------

@pytest.mark.data("fsdd")
def test_wav_labels_from_names_groups_and_a_truncated_file(data_dir, tmp_path, capsys):
    rec = data_dir / "fsdd" / "recordings"
    good = rec / "6_george_0.wav"
    (tmp_path / "6_theo_0.wav").write_bytes(good.read_bytes()[:100])  # header says 8354 bytes
    (tmp_path / "notes.wav").write_bytes(good.read_bytes())
    cfg = _cfg(wav, path=f"{rec}/*_george_*.wav,{rec}/*_lucas_*.wav,{tmp_path}", normal_labels=("6",),
               test_groups=("lucas",))
    ds = wav.load(cfg)
    assert len(ds.train["x"]) == 50 and len(ds.test["x"]) == 500  # george's sixes; every recording of lucas
    assert ds.test_labels.sum() == 450
    i = ds.test_ids.index("6_lucas_3")
    expected, _ = fsdd.amplitude_spectrum(fsdd.read_wav(rec / "6_lucas_3.wav"), 8192, 128)
    assert np.allclose(ds.test["x"][i], expected) and ds.test_labels[i] == 0
    skipped = ds.meta["skipped"]
    assert any("6_theo_0.wav: truncated WAV file (Reached EOF prematurely" in s for s in skipped)
    assert any("notes.wav: name does not match data.pattern" in s for s in skipped)
    err = capsys.readouterr().err
    assert "wav: skipped 2 file(s)" in err and "6_theo_0.wav: truncated WAV file" in err
    with pytest.raises(InputError, match=r"^config key data.test_groups: no recordings of group 'nobody'"):
        wav.load(_cfg(wav, path=str(rec / "*_george_*.wav"), test_groups=("nobody",)))


@pytest.mark.data("fsdd")
def test_fsdd_reads_several_globs_and_rejects_a_truncated_wav(data_dir, tmp_path):
    rec = data_dir / "fsdd" / "recordings"
    cfg = ml_collections.ConfigDict(dict(name="fsdd", n_bins=128, train_speakers=("george",), test_speakers=("lucas",),
                                         path=f"{rec}/*_george_*.wav,{rec}/*_lucas_*.wav", limit=0))
    ds = load_dataset(cfg)
    assert len(ds.train["x"]) == 50 and len(ds.test["x"]) == 500
    (tmp_path / "6_george_0.wav").write_bytes((rec / "6_george_0.wav").read_bytes()[:100])
    with pytest.raises(InputError, match=r"6_george_0.wav: truncated WAV file \(Reached EOF prematurely"):
        fsdd.read_wav(tmp_path / "6_george_0.wav")


# ---- I/Q -------------------------------------------------------------------------------------------

@pytest.mark.data("rf_iq", "rf_formats")
def test_every_iq_format_and_coco(data_dir):
    raw = rf_iq.read_iq(data_dir / "rf_iq" / "ask.complex")
    assert np.array_equal(rf_iq.read_iq(data_dir / "rf_formats" / "ask.coco"), raw)
    assert rf_iq.read_iq(data_dir / "rf_iq" / "esaver.complex16s").dtype == np.complex64


@pytest.mark.data("rf_iq", "rf_formats")
def test_iq_loader_groups_captures_into_devices_across_formats(data_dir, tmp_path):
    src = data_dir / "rf_iq"
    shutil.copy(src / "esaver.complex16s", tmp_path / "esaver_a.complex16s")
    counts = np.fromfile(src / "esaver.complex16s", np.int8)
    counts.astype(np.int16).tofile(tmp_path / "esaver_b.complex32s")  # the same raw counts as int16
    shutil.copy(src / "steckdose_anlernen.complex", tmp_path / "steckdose_1.complex")
    shutil.copy(data_dir / "rf_formats" / "ask.coco", tmp_path / "ask_1.coco")
    (tmp_path / "broken_1.coco").write_bytes(b"BZh9 not really")
    cfg = _cfg(iq, path=str(tmp_path), device_pattern=r"(?P<device>[a-z]+)_\w+",
               normal_devices=("esaver", "steckdose"), max_frames_per_device=0)
    ds = iq.load(cfg)
    stats = ds.meta["sources"]
    assert {s: v["device"] for s, v in stats.items()} == {"esaver_a": "esaver", "esaver_b": "esaver",
                                                         "steckdose_1": "steckdose", "ask_1": "ask"}
    assert stats["ask_1"]["role"] == "anomaly" and stats["esaver_b"]["role"] == "normal"
    assert stats["esaver_a"]["frames"] == stats["esaver_b"]["frames"] and stats["esaver_a"]["active"] > 0
    assert any(s.startswith("broken_1.coco") and "not a readable .coco archive" in s for s in ds.meta["skipped"])
    # int8 and int16 copies of one capture give the same frames (each is split into its own seeded blocks)
    assert {k: v for k, v in stats["esaver_a"].items() if k.startswith(("active", "idle", "noise"))} == \
        {k: v for k, v in stats["esaver_b"].items() if k.startswith(("active", "idle", "noise"))}
    common = sorted({i[9:] for i in ds.test_ids if i.startswith("esaver_a_")}
                    & {i[9:] for i in ds.test_ids if i.startswith("esaver_b_")})
    assert common
    rows_a = [ds.test_ids.index(f"esaver_a_{i}") for i in common]
    rows_b = [ds.test_ids.index(f"esaver_b_{i}") for i in common]
    assert np.array_equal(ds.test["x"][rows_a], ds.test["x"][rows_b])
    ask = iq.load(_cfg(iq, path=str(src / "ask.complex"), normal_devices=("ask",), max_frames_per_device=0))
    coco = iq.load(_cfg(iq, path=str(data_dir / "rf_formats" / "ask.coco"), normal_devices=("ask",),
                        max_frames_per_device=0))
    assert np.array_equal(ask.train["x"], coco.train["x"]) and np.array_equal(ask.test["x"], coco.test["x"])
    with pytest.raises(InputError, match=r"^config key data.normal_devices: name the device\(s\) whose captures are normal$"):
        iq.load(_cfg(iq, path=str(tmp_path)))


# ---- SDSS: any file names, several folders -------------------------------------------------------

@pytest.mark.data("sdss")
def test_sdss_renamed_files_in_several_folders(data_dir, tmp_path):
    names = ["spec-0266-51602-0001.fits", "spSpec-51630-0266-637.fit", "dr12_boss_spec-7420-56753-0034.fits",
             "spec-3851-55302-0530.fits", "spec-0266-51630-0623.fits"]
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    for i, n in enumerate(names):
        shutil.copy(data_dir / "sdss" / n, tmp_path / ("a" if i < 3 else "b") / f"object {i}{n[n.index('.'):]}")
    direct = sdss_fits.ingest([data_dir / "sdss" / n for n in names], tmp_path / "direct.npz")
    cfg = ml_collections.ConfigDict(dict(name="sdss", path=f"{tmp_path / 'a'},{tmp_path / 'b' / '*.fits'}",
                                         cache_dir=str(tmp_path / "cache"), holdout_fraction=0.0, limit=0,
                                         zwarning_ok=False))
    ds = load_dataset(cfg)
    ref, _ = sdss_fits.load_ingested(tmp_path / "direct.npz")
    assert direct["n_ingested"] == 5
    assert sorted(ds.meta["train_ids"] + ds.test_ids) == sorted(ref["ids"].tolist())
    for split, ids in ((ds.train, ds.meta["train_ids"]), (ds.test, ds.test_ids)):
        for row, sid in enumerate(ids):
            j = ref["ids"].tolist().index(sid)
            assert np.array_equal(split["mask"][row], ref["mask"][j])
    assert len(sdss.fits_files(f"{tmp_path}/*/*.fit*")) == 5


# ---- score modes (data.score_only, set by research.score): every sample of the new files, labelled --------

@pytest.mark.data("ecg5000")
def test_ecg5000_score_mode_reads_every_row_of_the_given_files(ecg, data_dir):
    y_train, x_train, y_test, x_test = ecg
    folder = data_dir / "ecg5000"
    ds = load_dataset(ml_collections.ConfigDict(dict(name="ecg5000", score_only=True,
                                                     path=f"{folder / 'ECG5000_TEST.txt'},{folder / '*TRAIN.txt'}")))
    assert len(ds.train["x"]) == 0 and np.array_equal(ds.test["x"], np.concatenate([x_test, x_train]))
    assert np.array_equal(ds.test_labels, np.concatenate([y_test, y_train]) != 1)
    assert ds.test_ids[0] == "ECG5000_TEST_0" and ds.test_ids[-1] == f"ECG5000_TRAIN_{len(y_train) - 1}"


@pytest.mark.data("fsdd")
def test_fsdd_score_mode_takes_recordings_of_speakers_never_seen(data_dir, tmp_path):
    rec = data_dir / "fsdd" / "recordings"
    for src, dst in (("6_lucas_3", "6_theo_0"), ("2_lucas_3", "2_theo_1"), ("6_lucas_4", "six by theo")):
        shutil.copy(rec / f"{src}.wav", tmp_path / f"{dst}.wav")
    ds = load_dataset(ml_collections.ConfigDict(dict(name="fsdd", n_bins=128, score_only=True, path=str(tmp_path))))
    assert ds.test_ids == ["2_theo_1", "6_theo_0"] and ds.test_labels.tolist() == [1, 0] and len(ds.train["x"]) == 0
    expected, _ = fsdd.amplitude_spectrum(fsdd.read_wav(rec / "6_lucas_3.wav"), 8192, 128)
    assert np.allclose(ds.test["x"][1], expected)
    assert ds.meta["skipped"] == ["six by theo.wav: name is not digit_speaker_index.wav"]


@pytest.mark.data("rf_iq", "rf_formats")
def test_rf_score_mode_labels_the_runs_normal_devices_0_and_reads_coco(data_dir):
    path = f"{data_dir / 'rf_formats' / 'ask.coco'},{data_dir / 'rf_iq' / 'esaver.complex16s'}"
    ds = load_dataset(ml_collections.ConfigDict(dict(name="rf", path=path, score_only=True, max_frames_per_device=0)))
    stats = ds.meta["sources"]
    assert {s: v["role"] for s, v in stats.items()} == {"ask": "anomaly", "esaver": "normal"}
    assert len(ds.train["x"]) == 0 and len(ds.test["x"]) == stats["ask"]["active"] + stats["esaver"]["active"]
    assert int(ds.test_labels.sum()) == stats["ask"]["active"]
