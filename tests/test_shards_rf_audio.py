"""RF frames and audio spectra in shards, on the real captures and recordings: round trip against the
in-memory loaders, tasks + merge, bad files skipped and reported, the command lines."""

import json
import shutil
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from research.data import audio_shards, rf, rf_iq, rf_shards, shards, wav
from research.errors import InputError
from conftest import REPO

SMALL = ("ask", "cc1101", "enocean", "fsk")  # the four float32 captures, 1,130 frames
SIX = "*_yweweler_*.wav"  # one speaker: 500 recordings


@pytest.fixture(scope="module")
def iq_dir(data_dir):
    folder = data_dir / "rf_iq"
    if not folder.is_dir():
        pytest.skip(f"real data not found: {folder}")
    return folder


@pytest.fixture(scope="module")
def recordings(data_dir):
    folder = data_dir / "fsdd" / "recordings"
    if not folder.is_dir():
        pytest.skip(f"real data not found: {folder}")
    return folder


@pytest.fixture(scope="module")
def rf_one(iq_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("rf1")
    report = rf_shards.ingest_task(iq_dir, out, shard_size=4096)
    shards.merge(out)
    return report, shards.Shards(out)


def _small_iq(iq_dir, folder):
    folder.mkdir()
    for name in SMALL:
        shutil.copy(iq_dir / f"{name}.complex", folder)
    return folder


def _rf_cfg(**kw):
    return ml_collections.ConfigDict(dict(name="rf", root=None, score_only=False, limit=None, **kw))


def test_rf_shards_hold_every_frame_of_the_in_memory_loader_bit_for_bit(iq_dir, rf_one):
    report, ds = rf_one
    frames, skipped = rf_iq.frames_from_folder(iq_dir)  # the in-memory loader's frames, same settings
    assert skipped == [] and report["n_skipped"] == 0 and ds.dataset == "rf" and ds.layout == "x"
    assert len(ds) == sum(map(len, frames.values())) == 16047 and len(report["shards"]) == 4
    back = ds.read()
    assert set(back) == {"x", "index"} and back["x"].dtype == np.float32
    source, frame, ids = ds.column("source"), ds.column("frame"), ds.column("id")
    assert list(dict.fromkeys(source)) == sorted(frames)  # captures in file order, frames in time order
    for name, spectra in frames.items():
        power = np.abs(spectra) ** 2
        floor = rf.noise_floor(power)
        rows = np.flatnonzero(source == name)
        assert np.array_equal(frame[rows], np.arange(len(spectra)))
        assert list(ids[rows]) == [f"{name}_{i}" for i in range(len(spectra))]
        assert np.array_equal(back["x"][rows], rf.features(spectra, floor, True, -30.0))
        assert np.array_equal(ds.column("activity_db")[rows], rf.activity_db(power, floor))
        assert np.array_equal(ds.column("silent")[rows], (power.sum(1) == 0).astype(int))
        assert np.all(ds.column("noise_floor")[rows] == floor)
    # the loader's own test arrays, found by id
    loaded = rf.load(_rf_cfg(path=str(iq_dir)))
    row_of = {s: i for i, s in enumerate(ids)}
    rows = [row_of[i] for i in loaded.test_ids]
    assert np.array_equal(back["x"][rows], loaded.test["x"])
    assert np.allclose(ds.axis, loaded.axis) and ds.manifest["grid"]["axis_label"] == loaded.axis_label
    # random access in any order
    order = np.random.default_rng(0).permutation(len(ds))[:50]
    src = ds.source(order)
    for i in (0, 21, 49):
        assert np.array_equal(src[i]["x"], back["x"][order[i]]) and src[i]["index"] == order[i]


def test_rf_tasks_plus_merge_equal_one_task_and_workers_do_not_change_the_shards(iq_dir, tmp_path):
    folder = _small_iq(iq_dir, tmp_path / "iq")
    rf_shards.ingest_task(folder, tmp_path / "one", shard_size=100)
    shards.merge(tmp_path / "one")
    for t in range(3):
        rf_shards.ingest_task(folder, tmp_path / "three", task=t, num_tasks=3, shard_size=100,
                              workers=2 if t == 1 else 1)
    manifest = shards.merge(tmp_path / "three")
    one, three = shards.Shards(tmp_path / "one"), shards.Shards(tmp_path / "three")
    assert manifest["n_spectra"] == len(one) == 1130 and manifest["num_tasks"] == 3
    assert len(manifest["shards"]) > len(one.manifest["shards"])  # each task ends its last shard early
    assert np.array_equal(three.read()["x"], one.read()["x"])
    drop = ["shard", "row"]
    assert three.catalogue.drop_columns(drop).equals(one.catalogue.drop_columns(drop))


def test_rf_bad_captures_are_skipped_and_reported_not_fatal(iq_dir, tmp_path):
    folder = _small_iq(iq_dir, tmp_path / "iq")
    data = (iq_dir / "ask.complex").read_bytes()
    (folder / "short.complex").write_bytes(data[: 8 * 100])  # 100 samples: shorter than one frame
    (folder / "ragged.complex").write_bytes(data[: 4 * 1000 + 3])  # not whole float32 values
    (folder / "zeros.complex").write_bytes(bytes(8 * 4096))  # every frame zero: no noise floor
    other = tmp_path / "other"
    other.mkdir()
    shutil.copy(iq_dir / "fsk.complex", other / "ask.complex")  # a second capture named ask
    run = subprocess.run([sys.executable, "-m", "data_prep.rf", "frames", "--format", "shards", "--input",
                          str(folder), str(other), "--output", str(tmp_path / "s"), "--num-shards", "2",
                          "--shard", "1", "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, "-m", "data_prep.rf", "--format", "shards", "--input", str(folder),
                          str(other), "--output", str(tmp_path / "s"), "--num-shards", "2", "--shard", "0",
                          "--quiet"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    run = subprocess.run([sys.executable, "-m", "data_prep.rf", "--format", "shards", "--merge", "--output",
                          str(tmp_path / "s")], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0 and "merged 2 task(s): 1130 spectra" in run.stdout, run.stdout + run.stderr
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"short.complex", "ragged.complex", "zeros.complex", "ask.complex"}
    assert "shorter than one frame" in reasons["short.complex"]
    assert "whole number of float32" in reasons["ragged.complex"]
    assert "no noise floor" in reasons["zeros.complex"]
    assert reasons["ask.complex"].startswith(str(other / "ask.complex")) and "duplicate" in reasons["ask.complex"]
    ds = shards.Shards(tmp_path / "s")
    assert sorted(set(ds.column("source"))) == sorted(SMALL) and manifest["n_files"] == 8
    task1 = json.loads((tmp_path / "s" / "task-00001-of-00002.json").read_text())
    assert {s["file"] for s in task1["skipped"]} <= set(reasons) and task1["n_skipped"] == len(task1["skipped"])
    run = subprocess.run([sys.executable, "-m", "data_prep.rf", "--format", "shards", "--input", str(folder),
                          "--output", str(tmp_path / "t"), "--hop", "0"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and run.stderr.strip() == "error: hop: must be >= 1, got 0"


def test_rf_device_pattern_names_devices_and_skips_unmatched_captures(iq_dir, tmp_path):
    folder = _small_iq(iq_dir, tmp_path / "iq")
    rf_shards.ingest_task(folder, tmp_path / "s", device_pattern=r"(?P<device>[a-z]+)")
    report = json.loads((tmp_path / "s" / "task-00000-of-00001.json").read_text())
    assert [s["file"] for s in report["skipped"]] == ["cc1101.complex"]
    assert "does not match data.device_pattern" in report["skipped"][0]["reason"]
    shards.merge(tmp_path / "s")
    ds = shards.Shards(tmp_path / "s")
    assert sorted(set(ds.column("device"))) == ["ask", "enocean", "fsk"]


def _wav_cfg(path, **kw):
    return ml_collections.ConfigDict(dict(name="wav", root=None, path=path, score_only=False, limit=None,
                                          test_path=None, n_bins=512, **kw))


def test_audio_shards_hold_every_spectrum_of_the_in_memory_loader_bit_for_bit(recordings, tmp_path):
    path = str(recordings / SIX)
    report = audio_shards.ingest_task(path, tmp_path, shard_size=128)
    shards.merge(tmp_path)
    ds = shards.Shards(tmp_path)
    assert len(ds) == report["n_ingested"] == 500 and len(report["shards"]) == 4 and ds.dataset == "audio"
    loaded = wav.load(_wav_cfg(path))  # every recording is in its train or test split, with its id
    x = np.concatenate([loaded.train["x"], loaded.test["x"]])
    ids = list(loaded.train_ids) + list(loaded.test_ids)
    row_of = {s: i for i, s in enumerate(ds.column("id"))}
    assert sorted(ids) == sorted(row_of)
    back = ds.read()
    assert back["x"].dtype == np.float32 and np.array_equal(back["x"][[row_of[i] for i in ids]], x)
    assert np.allclose(ds.axis, loaded.axis)
    for i, stem, file in zip(range(len(ds)), ds.column("id"), ds.column("file")):
        digit, speaker, take = stem.split("_")
        assert (ds.column("digit")[i], ds.column("speaker")[i], ds.column("take")[i]) == (digit, speaker, take)
        assert file == str(recordings / f"{stem}.wav")
    assert list(ds.column("file")) == sorted(ds.column("file"))


def test_audio_tasks_plus_merge_equal_one_task(recordings, tmp_path):
    path = str(recordings / SIX)
    audio_shards.ingest_task(path, tmp_path / "one", shard_size=64)
    shards.merge(tmp_path / "one")
    for t in range(3):
        audio_shards.ingest_task(path, tmp_path / "three", task=t, num_tasks=3, shard_size=64,
                                 workers=2 if t == 2 else 1)
    shards.merge(tmp_path / "three")
    one, three = shards.Shards(tmp_path / "one"), shards.Shards(tmp_path / "three")
    assert len(one) == len(three) == 500
    assert np.array_equal(three.read()["x"], one.read()["x"])
    drop = ["shard", "row"]
    assert three.catalogue.drop_columns(drop).equals(one.catalogue.drop_columns(drop))
    audio_shards.ingest_task(path, tmp_path / "mixed", task=0, num_tasks=2)
    audio_shards.ingest_task(path, tmp_path / "mixed", task=1, num_tasks=2, n_bins=256)
    with pytest.raises(InputError, match="another grid or options than task 0"):
        shards.merge(tmp_path / "mixed")


def test_audio_bad_files_are_skipped_and_reported_not_fatal(recordings, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    good = sorted(recordings.glob(SIX))[:3]
    for p in good:
        shutil.copy(p, folder)
    data = good[0].read_bytes()
    (folder / "6_zz_0.wav").write_bytes(data[: len(data) // 2])  # truncated: fewer bytes than its header says
    (folder / "7_zz_1.wav").write_bytes(b"RIFF....not a wav")
    (folder / "not_a_digit.wav").write_bytes(data)
    silent = bytearray(data)
    silent[44:] = bytes(len(data) - 44)
    (folder / "8_zz_2.wav").write_bytes(bytes(silent))
    run = subprocess.run([sys.executable, "-m", "data_prep.audio", "--format", "shards", "--input", str(folder),
                          "--output", str(tmp_path / "s"), "--workers", "2"], cwd=REPO, capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "ingested 3/7 recordings (4 skipped)" in run.stdout and "skipped: " in run.stdout
    manifest = json.loads((tmp_path / "s" / "manifest.json").read_text())
    reasons = {s["file"]: s["reason"] for s in manifest["skipped"]}
    assert set(reasons) == {"6_zz_0.wav", "7_zz_1.wav", "not_a_digit.wav", "8_zz_2.wav"}
    assert "truncated" in reasons["6_zz_0.wav"] and "not a readable WAV" in reasons["7_zz_1.wav"]
    assert "does not match --pattern" in reasons["not_a_digit.wav"] and "silent" in reasons["8_zz_2.wav"]
    assert all(r.startswith(str(folder / f)) for f, r in reasons.items())
    assert list(shards.Shards(tmp_path / "s").column("id")) == [p.stem for p in good]
    run = subprocess.run([sys.executable, "-m", "data_prep.audio", "--input", str(folder), "--output",
                          str(tmp_path / "t"), "--n-bins", "100"], cwd=REPO, capture_output=True, text=True,
                         timeout=120)
    assert run.returncode == 2 and run.stderr.startswith("error: config keys data.n_fft/n_bins")


def _streamed_vs_in_memory(config, shard_dir, tmp_path):
    """Smoke runs of ``config`` in memory and on the shards: the same test ids, labels and scores."""
    import csv

    from research import experiment, stream_score

    config.smoke, config.analyses, config.run.root = True, (), str(tmp_path / "runs")
    mem = experiment.run(config, log=lambda m: None)
    config.data.format, config.data.path = "sharded", str(shard_dir)
    streamed = experiment.run(config, log=lambda m: None)
    with open(f"{mem['run_dir']}/scores.csv") as f:
        rows = {r["id"]: (float(r["score"]), int(r["label"])) for r in csv.DictReader(f)}
    table = stream_score.read_parts(f"{streamed['run_dir']}/scores")
    ids = table.column("id").to_pylist()
    assert sorted(ids) == sorted(rows) and len(ids) == streamed["n_test"] == 512  # smoke_limit
    np.testing.assert_allclose(table.column("score").to_numpy(), [rows[i][0] for i in ids], rtol=1e-6)
    assert table.column("label").to_pylist() == [rows[i][1] for i in ids]
    assert streamed["threshold"]["value"] == pytest.approx(mem["threshold"]["value"], rel=1e-6)
    assert streamed["test"]["roc_auc"] == pytest.approx(mem["test"]["roc_auc"])
    return mem, streamed


def test_fsdd_streamed_run_trains_and_scores_as_the_in_memory_run(recordings, tmp_path):
    from experiments import fsdd_six

    audio_shards.ingest_task(recordings, tmp_path / "s", n_bins=128)  # the experiment's bins
    shards.merge(tmp_path / "s")
    config = fsdd_six.get_config("dense")
    config.data.root = str(recordings.parent.parent)
    _streamed_vs_in_memory(config, tmp_path / "s", tmp_path)


@pytest.mark.slow
def test_rf_streamed_run_trains_and_scores_as_the_in_memory_run(iq_dir, tmp_path):
    from experiments import rf as rf_experiment

    rf_shards.ingest_task(iq_dir, tmp_path / "s", floor_db=-10.0)  # the experiment's floor
    shards.merge(tmp_path / "s")
    config = rf_experiment.get_config("dense")
    config.data.root, config.data.scaling = str(iq_dir.parent), "none"
    _streamed_vs_in_memory(config, tmp_path / "s", tmp_path)


def test_streamed_runs_refuse_shards_of_other_settings_or_datasets(rf_one, tmp_path):
    from experiments import fsdd_six, rf as rf_experiment
    from research import experiment

    _, ds = rf_one
    config = rf_experiment.get_config("dense")
    config.data.update(format="sharded", path=str(ds.folder), scaling="none")
    config.run.root = str(tmp_path / "runs")
    with pytest.raises(InputError, match=r"^config key data.floor_db: -10.0, but the shards in .* were ingested "
                                         r"with -30.0; set it to that or ingest again$"):
        experiment.run(config, log=lambda m: None)
    config = fsdd_six.get_config("dense")
    config.data.update(format="sharded", path=str(ds.folder))
    config.run.root = str(tmp_path / "runs")
    with pytest.raises(InputError, match="holds rf shards, not audio ones"):
        experiment.run(config, log=lambda m: None)
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").rglob("*.json"))
