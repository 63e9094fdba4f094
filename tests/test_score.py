"""research.score / research.load_run: a finished run applied to data, nothing retrained, the run only read."""

import csv
import hashlib
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

import research
from conftest import REPO
from research import experiment
from research.cli import load_config
from research.data import sdss_fits
from research.errors import InputError


def _hashes(run):
    """Every file of the run directory except the scoring directories, with its sha256."""
    return {str(p.relative_to(run)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run.rglob("*")) if p.is_file() and "scores" not in p.relative_to(run).parts[:1]}


def _score_cli(*args):
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, "-m", "research.score", *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=600)


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _train(config, root, name="r"):
    config.run.root = str(root)
    config.run.name = name
    config.plots.enabled = False
    summary = experiment.run(config, log=lambda *a: None)
    return root / config.experiment / name, summary


@pytest.fixture(scope="module")
def ecg_run(tmp_path_factory, data_dir):
    c = load_config(str(REPO / "experiments" / "ecg5000.py:dense"))
    c.train.epochs = 3
    return _train(c, tmp_path_factory.mktemp("runs"))[0]


@pytest.fixture(scope="module")
def arrays_run(tmp_path_factory, data_dir):
    c = load_config(str(REPO / "experiments" / "own_data.py:arrays"))
    c.train.epochs = 3
    return _train(c, tmp_path_factory.mktemp("runs"))[0]


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_cli_rescoring_the_test_file_reproduces_the_runs_scores_and_leaves_the_run_alone(ecg_run):
    before = _hashes(ecg_run)
    proc = _score_cli(f"--run={ecg_run}", "--name=again")
    assert proc.returncode == 0, proc.stderr
    out = ecg_run / "scores" / "again"
    assert (out / "scores.csv").read_bytes() == (ecg_run / "scores.csv").read_bytes()
    run_metrics = json.loads((ecg_run / "metrics.json").read_text())
    assert json.loads((out / "metrics.json").read_text())["test"] == run_metrics["test"]
    scoring = json.loads((out / "scoring.json").read_text())
    assert scoring["split"] == "test" and scoring["threshold"]["value"] == run_metrics["threshold"]["value"]
    assert f"scored 4500 samples, {run_metrics['n_flagged']} above the threshold" in proc.stdout
    assert _hashes(ecg_run) == before


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_cli_new_ucr_file_as_an_argument_scores_as_the_run_did(ecg_run, data_dir):
    proc = _score_cli("--run", str(ecg_run), str(data_dir / "ecg5000" / "ECG5000_TEST.txt"), "--name=file")
    assert proc.returncode == 0, proc.stderr
    new, old = _rows(ecg_run / "scores" / "file" / "scores.csv"), _rows(ecg_run / "scores.csv")
    assert [r["id"] for r in new] == [f"ECG5000_TEST_{i}" for i in range(4500)]
    assert [(r["score"], r["flag"], r["label"]) for r in new] == [(r["score"], r["flag"], r["label"]) for r in old]


@pytest.mark.slow
@pytest.mark.data("rf_iq", "rf_formats")
def test_cli_rf_run_scores_a_coco_capture_and_a_known_device_as_in_the_run(tmp_path, data_dir):
    c = load_config(str(REPO / "experiments" / "rf.py:dense"))
    c.train.epochs = 1
    c.analyses = ()
    del c.baselines
    c.data.max_frames_per_device = 200
    run, _ = _train(c, tmp_path)
    proc = _score_cli(f"--run={run}", str(data_dir / "rf_formats" / "ask.coco"),
                      str(data_dir / "rf_iq" / "esaver.complex16s"), "--name=new")
    assert proc.returncode == 0, proc.stderr
    old = {r["id"]: r for r in _rows(run / "scores.csv")}
    new = _rows(run / "scores" / "new" / "scores.csv")
    assert {r["id"].rsplit("_", 1)[0] for r in new} == {"ask", "esaver"}
    assert all(r["label"] == ("1" if r["id"].startswith("ask") else "0") for r in new)
    shared = [r for r in new if r["id"] in old]
    assert shared and all(r["score"] == old[r["id"]]["score"] for r in shared)  # the same frames, the same scores


@pytest.fixture(scope="module")
def arrays_loaded(arrays_run):
    return research.load_run(arrays_run)


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_new_file_through_the_arrays_loader_equals_the_runs_scores(arrays_run, arrays_loaded, data_dir):
    before = _hashes(arrays_run)
    run = arrays_loaded
    summary = run.score_data({"data.path": str(data_dir / "ecg5000" / "ECG5000_TEST.txt")}, name="new", split="all",
                             log=None)
    assert summary["n_scored"] == 4500
    assert (arrays_run / "scores" / "new" / "scores.csv").read_bytes() == (arrays_run / "scores.csv").read_bytes()
    assert _hashes(arrays_run) == before


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_notebook_api_score_reconstruct_and_a_shape_mismatch(arrays_run, arrays_loaded, data_dir):
    from research.data.ecg5000 import read_ucr

    run = arrays_loaded
    _, x = read_ucr(data_dir / "ecg5000" / "ECG5000_TEST.txt")
    expected = np.array([float(r["score"]) for r in _rows(arrays_run / "scores.csv")])
    assert np.array_equal(run.score(x), expected)
    recon = run.reconstruct(x[:5])
    assert recon.shape == (5, 140) and np.abs(recon - x[:5]).mean() < np.abs(x[:5] - x[:5].mean()).mean()
    with pytest.raises(InputError) as exc:
        run.score(x[:, :130])
    assert str(exc.value) == (f"input: samples of shape (130,), but run {arrays_run} was trained on samples of shape "
                              "(140,); prepare the data as for training (same loader settings: lengths, bins, "
                              "frames, data.shape)")


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_threshold_is_refitted_only_when_asked(arrays_run, arrays_loaded, data_dir):
    run = arrays_loaded
    test = str(data_dir / "ecg5000" / "ECG5000_TEST.txt")
    kept = run.score_data({"data.path": test}, name="kept", log=None, split="all")
    refit = run.score_data({"data.path": test}, name="refit", log=None, split="all", refit_threshold=True)
    assert kept["threshold"]["value"] == run.threshold and not kept["threshold"]["refitted"]
    rows = _rows(arrays_run / "scores" / "refit" / "scores.csv")
    normal = np.array([float(r["score"]) for r in rows if r["label"] == "0"])
    assert refit["threshold"]["value"] == pytest.approx(np.percentile(normal, 95.0))
    assert refit["n_flagged"] == sum(float(r["score"]) > refit["threshold"]["value"] for r in rows)


@pytest.mark.parametrize("args, message", [
    (["--run=/nonexistent/run"], "error: /nonexistent/run: no such run directory"),
    (["--name=x"], "error: --run=RUN_DIR is required (python -m research.score --help)"),
    (["--run=r", "--threshold=3"], "error: --threshold: unknown option (python -m research.score --help)"),
    (["--run=r", "a.csv", "--data.path=b.csv"], "error: new data given twice: as arguments and as --data.path"),
])
def test_cli_bad_input_is_one_line(args, message):
    proc = _score_cli(*args)
    assert proc.returncode == 2 and proc.stderr == message + "\n"


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_cli_missing_new_data_is_one_line(arrays_run, tmp_path):
    proc = _score_cli(f"--run={arrays_run}", f"--data.path={tmp_path / 'none.csv'}")
    assert proc.returncode == 2 and proc.stderr.strip() == f"error: {tmp_path / 'none.csv'}: no such file or folder"


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_cli_unknown_data_key_is_one_line_with_did_you_mean(arrays_run, data_dir):
    proc = _score_cli(f"--run={arrays_run}", str(data_dir / "ecg5000" / "ECG5000_TEST.txt"), "--data.lable_column=0")
    assert proc.returncode == 2
    assert proc.stderr == "error: config key data.lable_column: unknown key (did you mean 'data.label_column'?)\n"


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_broken_run_directories_are_one_line_not_an_orbax_traceback(arrays_run, tmp_path):
    shapes = tmp_path / "shapes"
    shutil.copytree(arrays_run, shapes, ignore=shutil.ignore_patterns("scores"))
    pre = dict(np.load(shapes / "preprocessing.npz"))
    np.savez(shapes / "preprocessing.npz", **{**pre, "sample_shape": np.array([130])})
    proc = _score_cli(f"--run={shapes}")
    assert proc.returncode == 2 and proc.stderr == (
        f"error: {shapes}/checkpoints/best: parameter ['params']['Dense_0']['kernel'] is stored with shape "
        "(1, 140, 64), the model rebuilt from the run's config and preprocessing.npz needs (1, 130, 64); the run "
        "directory's files do not belong together\n")
    cut = tmp_path / "cut"
    shutil.copytree(arrays_run, cut, ignore=shutil.ignore_patterns("scores"))
    for f in (cut / "checkpoints" / "best").rglob("*"):
        if f.is_file() and f.parent.name == "d":
            f.write_bytes(f.read_bytes()[:20])
    proc = _score_cli(f"--run={cut}")
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(f"error: {cut}/checkpoints/best: cannot restore the parameters (")


# ---- SDSS: held-out split, regions, and spectra ingested on their own grid ----------------------------

@pytest.fixture(scope="module")
def sdss_run(tmp_path_factory, data_dir):
    c = load_config(str(REPO / "experiments" / "sdss_cnn_skip.py"))
    c.data.cache_dir = str(tmp_path_factory.mktemp("cache"))
    c.model.features = (8, 16)
    c.train.epochs = 2
    c.regions.sample_n = 3
    return _train(c, tmp_path_factory.mktemp("runs"))[0]


@pytest.mark.slow
@pytest.mark.data("sdss")
def test_sdss_held_out_split_scores_and_regions_reproduced(sdss_run):
    before = _hashes(sdss_run)
    proc = _score_cli(f"--run={sdss_run}", "--name=again")
    assert proc.returncode == 0, proc.stderr
    out = sdss_run / "scores" / "again"
    assert (out / "scores.csv").read_bytes() == (sdss_run / "scores.csv").read_bytes()
    ours, theirs = (json.loads((d / "regions_metadata.json").read_text()) for d in (out, sdss_run))
    assert len(ours.pop("figures")) == len(theirs.pop("figures")) == 3
    assert ours == theirs
    assert len(list((out / "plots" / "spectra").glob("spectrum_*.png"))) == 3
    assert _hashes(sdss_run) == before
    run = research.load_run(sdss_run)  # the notebook API finds the same regions
    held_out, _ = run.read(split="test")
    regions = run.regions(held_out.test)
    assert [held_out.test_ids[i] for i in np.flatnonzero(regions.flags)] == [f["id"] for f in theirs["flagged"]]
    assert [regions.regions_of(i) for i in np.flatnonzero(regions.flags)] == [
        [{k: r[k] for k in ("start", "end", "start_wavelength", "end_wavelength")} for r in f["regions"]]
        for f in theirs["flagged"]]  # the metadata adds the line each region lies on
    assert (sdss_run / "model_error.npy").is_file()  # the default detector's calibrated model error


@pytest.mark.slow
@pytest.mark.data("sdss")
def test_sdss_spectra_ingested_on_their_own_grid_score_as_in_the_run(sdss_run, data_dir, tmp_path):
    rows = {r["id"]: r for r in _rows(sdss_run / "scores.csv")}
    new = tmp_path / "new"
    new.mkdir()
    for path in sorted((data_dir / "sdss").iterdir()):
        try:
            sid = sdss_fits.read_spectrum(path).id
        except InputError:
            continue
        if sid in rows and len(list(new.iterdir())) < 5:
            shutil.copy(path, new / f"target {sid[-4:]}{path.suffix}")
    own_grid = sdss_fits.ingest(new, tmp_path / "own.npz")["grid"]["n_pixels"]
    run = research.load_run(sdss_run)
    assert own_grid != run.sample_shape[0]  # these five alone span a narrower grid than the training set
    summary = run.score_data({"data.path": str(new), "data.cache_dir": str(tmp_path / "cache")}, name="new", log=None)
    scored = _rows(sdss_run / "scores" / "new" / "scores.csv")
    assert summary["split"] == "all" and len(scored) == 5
    for r in scored:
        assert float(r["score"]) == pytest.approx(float(rows[r["id"]]["score"]), rel=1e-5)
        assert r["label"] == rows[r["id"]]["label"]
    flux, _ = sdss_fits.load_ingested(tmp_path / "own.npz")
    with pytest.raises(InputError, match=rf"^input: samples of shape \({own_grid},\), but run .* was trained on "
                                         rf"samples of shape \({run.sample_shape[0]},\); for SDSS spectra score "
                                         "through the run"):
        run.score(flux["flux"])


# ---- Fashion-MNIST: IDX image files through the run's loader ----------------------------------------

@pytest.fixture(scope="module")
def fashion_run(tmp_path_factory, data_dir):
    """The seed experiment (dense AE) with a normal class, so the test images are labelled: one epoch on
    the 6,000 T-shirts, every one of the 10,000 test images scored (no data.limit)."""
    c = load_config(str(REPO / "experiments" / "fashion_mnist.py:dense"))
    c.data.normal_classes = (0,)
    c.train.epochs = 1
    return _train(c, tmp_path_factory.mktemp("runs"))[0]


def _idx(path, images):
    """``images`` (uint8, N x H x W) as a gzipped IDX3 file."""
    import gzip

    header = bytes([0, 0, 0x08, 3]) + b"".join(int(n).to_bytes(4, "big") for n in images.shape)
    path.write_bytes(gzip.compress(header + images.astype(np.uint8).tobytes()))
    return path


@pytest.mark.slow
@pytest.mark.data("fashion_mnist")
def test_fashion_test_file_scores_exactly_as_the_run_did(fashion_run, data_dir):
    before = _hashes(fashion_run)
    proc = _score_cli(f"--run={fashion_run}", str(data_dir / "fashion_mnist" / "t10k-images-idx3-ubyte.gz"),
                      "--name=t10k")
    assert proc.returncode == 0, proc.stderr
    out = fashion_run / "scores" / "t10k"
    assert (out / "scores.csv").read_bytes() == (fashion_run / "scores.csv").read_bytes()  # ids, scores, labels
    rows = _rows(out / "scores.csv")
    assert len(rows) == 10000 and rows[0]["id"] == "test00000_boot" and rows[0]["label"] == "1"
    assert sum(r["label"] == "0" for r in rows) == 1000  # the T-shirts: the run's normal class
    run_metrics = json.loads((fashion_run / "metrics.json").read_text())
    assert json.loads((out / "metrics.json").read_text())["test"] == run_metrics["test"]
    assert json.loads((out / "scoring.json").read_text())["split"] == "all"
    assert _hashes(fashion_run) == before


@pytest.mark.data("fashion_mnist")
def test_fashion_score_mode_reads_uncompressed_files_and_folders_in_order(data_dir, tmp_path):
    import gzip

    from research.data.fashion_mnist import load, read_split

    fm = data_dir / "fashion_mnist"
    (tmp_path / "t10k-images-idx3-ubyte").write_bytes(gzip.decompress((fm / "t10k-images-idx3-ubyte.gz").read_bytes()))
    os.symlink(fm / "t10k-labels-idx1-ubyte.gz", tmp_path / "t10k-labels-idx1-ubyte.gz")
    x, y = read_split(fm, "test")
    _idx(tmp_path / "mine-images-idx3-ubyte.gz", (x[:3] * 255).round())  # no labels file beside it
    cfg = load_config(str(REPO / "experiments" / "fashion_mnist.py:dense")).data
    cfg.score_only, cfg.path, cfg.normal_classes = True, str(tmp_path), (0, 9)
    ds = load(cfg)
    assert ds.meta["score_only"] and len(ds.train["x"]) == 0
    assert np.array_equal(ds.test["x"], np.concatenate([x[:3], x]))  # sorted file names: mine, then t10k
    assert ds.test_ids[:4] == ["mine_00000", "mine_00001", "mine_00002", "test00000_boot"]
    assert ds.test_labels is None  # one file has no labels
    cfg.path = str(tmp_path / "t10k-images-idx3-ubyte")
    assert np.array_equal(load(cfg).test_labels, (~np.isin(y, (0, 9))).astype(np.int32))


@pytest.mark.data("fashion_mnist", "ecg5000")
def test_fashion_run_refuses_other_shapes_and_other_files_in_one_line(fashion_run, data_dir, tmp_path):
    from research.data.fashion_mnist import read_idx

    images = read_idx(data_dir / "fashion_mnist" / "t10k-images-idx3-ubyte.gz", ndim=3)[:4]
    big = _idx(tmp_path / "big-images-idx3-ubyte.gz", np.pad(images, ((0, 0), (2, 2), (2, 2))))
    proc = _score_cli(f"--run={fashion_run}", str(big))
    assert proc.returncode == 2 and proc.stderr == (
        f"error: {big}: samples of shape (32, 32), but run {fashion_run} was trained on samples of shape (28, 28); "
        "resize the images to the run's size first\n")
    ecg = data_dir / "ecg5000" / "ECG5000_TEST.txt"
    with pytest.raises(InputError) as exc:
        research.load_run(fashion_run).score_data({"data.path": str(ecg)}, name="ecg", log=None)
    assert str(exc.value).startswith(f"{ecg}: bad IDX magic number 0x") and "\n" not in str(exc.value)


@pytest.mark.data("fashion_mnist")
def test_one_class_benchmark_run_is_refused_in_one_line(tmp_path, data_dir):
    from research.one_class import run as one_class_run

    c = load_config(str(REPO / "experiments" / "fashion_mnist.py:one_class"))
    c.data.classes, c.data.limit, c.data.val_rows = (1, 7), 128, 32
    c.train.epochs, c.train.batch_size = 1, 64
    c.run.root, c.run.name, c.plots.enabled = str(tmp_path), "oc", False
    one_class_run(c, log=lambda *a: None)
    run = tmp_path / c.experiment / "oc"
    proc = _score_cli(f"--run={run}", str(data_dir / "fashion_mnist" / "t10k-images-idx3-ubyte.gz"))
    assert proc.returncode == 2 and proc.stderr == (
        f"error: {run}: a one_class benchmark run (a model per class, ROC-AUC per class, no threshold) cannot be "
        "scored; research.score applies a run of one model (or ensemble) with a threshold, e.g. "
        "experiments/fashion_mnist.py:dense with data.normal_classes set\n")
    assert not (run / "scores").exists()
