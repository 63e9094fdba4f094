import csv
import gzip
import json
import os
import subprocess
import sys

import jax
import ml_collections
import numpy as np
import optax
import pytest

from conftest import REPO, real_folder, run_cli
from research.data.fashion_mnist import CLASS_NAMES, load, read_idx, read_split
from research.errors import InputError
from research.models import build_model
from research.training import Trainer, fit


@pytest.fixture(scope="session")
def fm_dir(data_dir):
    return real_folder("fashion_mnist")


@pytest.fixture(scope="module")
def test_split(fm_dir):
    return read_split(fm_dir, "test")


def _cfg(**kw):
    return ml_collections.ConfigDict({"name": "fashion_mnist", "root": None, "path": None, "limit": 0, **kw})


# ---- IDX reader -------------------------------------------------------------------------------

def test_idx_reader_on_real_files(fm_dir, test_split):
    labels = read_idx(fm_dir / "train-labels-idx1-ubyte.gz", ndim=1)
    assert labels.shape == (60000,) and labels.dtype == np.uint8
    assert np.bincount(labels).tolist() == [6000] * 10
    x, y = test_split
    assert x.shape == (10000, 28, 28) and x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert abs(float(x.mean()) - 0.2868) < 1e-3  # published test-set pixel mean
    assert np.bincount(y).tolist() == [1000] * 10


def _labels_payload(fm_dir) -> bytes:
    return gzip.decompress((fm_dir / "t10k-labels-idx1-ubyte.gz").read_bytes())


@pytest.mark.parametrize("case, message", [
    ("truncated_gzip", "not a readable gzip"),
    ("not_gzip", "not a readable gzip"),
    ("bad_magic", "bad IDX magic"),
    ("short_data", "needs 10000 data bytes, found 9990"),
    ("wrong_ndim", "expected a 3-dimensional"),
    ("missing", "file not found"),
])
def test_idx_reader_rejects_corrupt_copies(fm_dir, tmp_path, case, message):
    raw = _labels_payload(fm_dir)
    path = tmp_path / f"{case}-idx1-ubyte.gz"
    if case == "truncated_gzip":
        packed = (fm_dir / "t10k-labels-idx1-ubyte.gz").read_bytes()
        path.write_bytes(packed[: len(packed) // 2])
    elif case == "not_gzip":
        path.write_bytes(raw[:100])
    elif case == "bad_magic":
        path.write_bytes(gzip.compress(b"\x01\x02" + raw[2:]))
    elif case == "short_data":
        path.write_bytes(gzip.compress(raw[:-10]))
    elif case == "wrong_ndim":
        path.write_bytes(gzip.compress(raw))
    with pytest.raises(InputError) as err:
        read_idx(path, ndim=3 if case == "wrong_ndim" else 1)
    assert str(path) in str(err.value) and message in str(err.value)
    assert "\n" not in str(err.value)


def test_label_count_must_match_images(fm_dir, tmp_path):
    raw = _labels_payload(fm_dir)
    header = bytearray(raw[:8])
    header[4:8] = (9999).to_bytes(4, "big")
    (tmp_path / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(bytes(header) + raw[8:-1]))
    os.symlink(fm_dir / "t10k-images-idx3-ubyte.gz", tmp_path / "t10k-images-idx3-ubyte.gz")
    with pytest.raises(InputError, match="9999 labels for 10000 images"):
        read_split(tmp_path, "test")


# ---- loader -----------------------------------------------------------------------------------

def test_seed_mode_loader(fm_dir):
    ds = load(_cfg(limit=300, val_on_test=True))
    assert ds.kind == "image" and ds.test_labels is None
    assert ds.train["x"].shape == (300, 28, 28) and ds.test["x"].shape == (300, 28, 28)
    assert ds.train["x"].dtype == np.float32 and 0.0 <= ds.train["x"].min() and ds.train["x"].max() <= 1.0
    assert ds.val["x"] is ds.test["x"]
    assert ds.meta["class_names"] == list(CLASS_NAMES)
    assert len(ds.test_ids) == 300 and len(set(ds.test_ids)) == 300


def test_one_class_mode_loader(fm_dir, test_split):
    train_x, train_y = read_split(fm_dir, "train")
    ds = load(_cfg(normal_classes=3))
    assert np.array_equal(ds.train["x"], train_x[train_y == 3])
    assert np.array_equal(ds.test_labels, (test_split[1] != 3).astype(np.int32))
    assert ds.val is None and ds.meta["normal_classes"] == [3]
    assert len(load(_cfg(normal_classes=(0, 1), limit=100)).train["x"]) == 100
    with pytest.raises(InputError, match="data.normal_classes"):
        load(_cfg(normal_classes=(2, 10)))


# ---- Conv2DAE ---------------------------------------------------------------------------------

@pytest.mark.parametrize("shape, latent", [((2, 28, 28), 8), ((2, 27, 31), 8), ((3, 27, 31, 3), None),
                                           ((1, 5, 7), 4)])
@pytest.mark.slow
def test_conv2d_shapes(shape, latent):
    model = build_model({"name": "conv2d", "features": (4, 8), "latent_dim": latent, "output_activation": "sigmoid"})
    x = jax.random.uniform(jax.random.key(0), shape)
    params = model.init(jax.random.key(1), x)
    y = model.apply(params, x)
    assert y.shape == shape
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0


# ---- one-class training -------------------------------------------------------------------------

def _max_diff(a, b):
    return max(jax.tree.leaves(jax.tree.map(
        lambda u, v: float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64)))), a, b)))


@pytest.mark.slow
def test_member_data_training_equals_separate_runs(test_split):
    x, y = test_split
    per_class = np.stack([x[y == 1][:128], x[y == 5][:128]])
    model = build_model({"name": "dense", "hidden": (32,), "latent_dim": 8, "output_activation": "sigmoid"})

    def trainer(member_data):
        return Trainer(model, optax.adam(1e-3), batch_size=32, member_data=member_data)

    joint = trainer(True)
    both = fit(joint, joint.init([0, 1], (28, 28)), joint.put({"x": per_class}), joint.put({"x": per_class[:, :32]}), 2)
    alone = trainer(False)
    for m, seed in enumerate([0, 1]):
        data = alone.put({"x": per_class[m]})
        single = fit(alone, alone.init([seed], (28, 28)), data, alone.put({"x": per_class[m, :32]}), 2)
        assert _max_diff(jax.tree.map(lambda a: a[m:m + 1], both.params), single.params) < 1e-5
    assert _max_diff(jax.tree.map(lambda a: a[0], both.params), jax.tree.map(lambda a: a[1], both.params)) > 1e-2


def _one_class_config(tmp_path, **train):
    from experiments.fashion_mnist import get_config

    c = get_config("one_class")
    c.data.classes = (1, 7)  # trousers and sneakers: far apart, learnable from a small subset
    c.data.limit = 512
    c.train.epochs = 3
    c.train.batch_size = 64
    c.run.root = str(tmp_path)
    c.run.name = "t"
    c.update_from_flattened_dict({f"train.{k}": v for k, v in train.items()})
    return c


@pytest.mark.slow
@pytest.mark.data("fashion_mnist")
@pytest.mark.parametrize("normalize, floor", [("none", 0.75), ("tv", 0.65)])
def test_one_class_benchmark_small_subset(tmp_path, normalize, floor):
    # 3 epochs on 512 images: well above chance either way; the complexity correction pays off
    # only once the model reconstructs well (full run: 0.928 raw, 0.933 normalised)
    from research.one_class import run

    config = _one_class_config(tmp_path, ensemble_size=2)
    config.score.normalize = normalize
    summary = run(config, log=lambda *_: None)
    aucs = summary["roc_auc"]
    assert list(aucs) == ["Trouser", "Sneaker"]
    assert all(auc > floor for auc in aucs.values()), aucs
    assert summary["mean_roc_auc"] == pytest.approx(np.mean(list(aucs.values())))
    run_dir = tmp_path / "fashion_mnist_one_class_dense" / "t"
    assert json.loads((run_dir / "auc.json").read_text())["mean"] == pytest.approx(summary["mean_roc_auc"])
    assert "| **mean** |" in (run_dir / "auc.md").read_text()
    with open(run_dir / "scores.csv") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 512 and set(rows[0]) == {"index", "class", "score_trouser", "score_sneaker"}
    assert {p.name for p in (run_dir / "plots").iterdir()} >= {"loss.png", "roc_by_class.png", "class_extremes.png"}
    assert len(json.loads((run_dir / "run.json").read_text())["seeds"]) == 4  # 2 classes x 2 members


def test_one_class_cli_rejects_bad_class(tmp_path):
    out = subprocess.run([sys.executable, "-m", "research.train",
                          "--config=experiments/fashion_mnist.py:one_class_conv2d", "--config.data.classes=(3, 12)",
                          f"--config.run.root={tmp_path}"],
                         cwd=REPO, capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, JAX_PLATFORMS="cpu"))
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["error: config key data.classes: (3, 12) must name classes in 0..9"]


# ---- the seed experiment, end to end ------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.data("fashion_mnist")
def test_seed_experiment_smoke_run(tmp_path):
    out = run_cli(["--config=experiments/fashion_mnist.py:dense", "--config.smoke=True",
                   f"--config.run.root={tmp_path}", "--config.run.name=smoke"])
    assert out.returncode == 0, out.stderr[-2000:]
    run_dir = tmp_path / "fashion_mnist_dense" / "smoke"
    metrics = json.loads((run_dir / "metrics.json").read_text())
    with open(run_dir / "scores.csv") as f:
        scores = np.array([float(r["score"]) for r in csv.DictReader(f)])
    assert len(scores) == 512
    assert metrics["threshold"]["value"] == pytest.approx(scores.mean() + 2 * scores.std(), rel=1e-6)
    assert metrics["n_flagged"] == int((scores > metrics["threshold"]["value"]).sum())
    assert metrics["mean_error"]["val"] == pytest.approx(metrics["mean_error"]["test"])  # validated on test
    top = metrics["analyses"]["image_examples"]["highest_errors"]
    assert top[0]["error"] == pytest.approx(scores.max(), rel=1e-6)
    assert {p.name for p in (run_dir / "plots").iterdir()} >= {
        "originals_over_recon.png", "highest_errors.png", "error_hist.png", "examples.png", "loss.png"}


@pytest.mark.slow
@pytest.mark.data("fashion_mnist")
def test_one_class_run_stops_and_resumes_to_the_uninterrupted_result(tmp_path):
    # the one-class runner trains through research.pipeline: preemption and resume come with it
    from research.one_class import run

    before_first = iter([False])  # the trainer also asks before the first epoch: stop after one
    stopped = run(_one_class_config(tmp_path), should_stop=lambda: next(before_first, True), log=lambda *_: None)
    assert stopped["stopped_at_epoch"] == 1
    config = _one_class_config(tmp_path)
    config.run.resume = True
    resumed = run(config, log=lambda *_: None)
    config = _one_class_config(tmp_path)
    config.run.name = "reference"
    reference = run(config, log=lambda *_: None)
    assert resumed["epochs"] == reference["epochs"] == 3
    assert resumed["roc_auc"] == reference["roc_auc"]
    log = (tmp_path / "fashion_mnist_one_class_dense" / "t" / "log.jsonl").read_text().splitlines()
    assert [json.loads(r)["epoch"] for r in log] == [1, 2, 3]
