"""ECG5000 end to end through the CLI, and every bad input it must reject in one line."""

import json
import shutil

import numpy as np
import pytest

from conftest import run_cli

DENSE = "experiments/ecg5000.py:dense"


def _copy_ecg(ecg_dir, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(ecg_dir, root / "ecg5000")
    return root


def _assert_one_line_error(proc, *fragments):
    assert proc.returncode == 2, proc.stderr
    lines = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for frag in fragments:
        assert frag in lines[0], lines[0]


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_real_run_with_overrides_writes_everything(tmp_path):
    proc = run_cli(["--config=" + DENSE, "--config.train.epochs=30", f"--config.run.root={tmp_path}",
                    "--config.run.name=e2e", "--config.threshold.percentile=97.5", "--config.score.normalize=tv"])
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "ecg5000_dense" / "e2e"
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["epochs"] == 30 and config["threshold"]["percentile"] == 97.5
    assert config["score"]["normalize"] == "tv"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["roc_auc"] > 0.95  # chance is 0.5
    assert metrics["n_test"] == 4500 and sum(map(sum, metrics["test"]["confusion"])) == 4500
    log = [json.loads(x) for x in (run / "log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == list(range(1, 31))
    scores = np.genfromtxt(run / "scores.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert len(scores) == 4500 and set(scores["label"]) == {0, 1}
    assert np.array_equal(scores["flag"], (scores["score"] > metrics["threshold"]["value"]).astype(int))
    run_info = json.loads((run / "run.json").read_text())
    assert run_info["seeds"] == [0] and "commit" in run_info["git"]
    for name in ("loss", "error_hist", "error_scatter", "examples", "roc"):
        assert (run / "plots" / f"{name}.png").stat().st_size > 10_000
    assert (run / "checkpoints" / "latest").is_dir() and (run / "checkpoints" / "best").is_dir()
    assert "roc_auc=" in proc.stdout


def test_unknown_config_key(tmp_path):
    _assert_one_line_error(run_cli(["--config=" + DENSE, "--config.train.epoch=3"]),
                           "--config.train.epoch", "unknown config key 'epoch'", "epochs")


@pytest.mark.parametrize("override, fragments", [
    ("--config.score.normalize=l2", ("config key score.normalize", "unknown method 'l2'")),
    ("--config.train.max_shift=-3", ("config key train.max_shift", "must be >= 0")),
    ("--config.train.mixup=-0.5", ("config key train.mixup", "must be >= 0, got -0.5")),
    ("--config.threshold.method=otsu", ("config key threshold.method", "unknown method 'otsu'")),
    ("--config.threshold.fit_on=dev", ("config key threshold.fit_on", "'dev' is not one of")),
    ("--config.threshold.percentile=120", ("config key threshold.percentile", "must be >= 0, <= 100, got 120.0")),
])
def test_bad_config_values_are_one_line_errors(tmp_path, override, fragments):
    proc = run_cli(["--config=" + DENSE, override, f"--config.run.root={tmp_path}"])
    _assert_one_line_error(proc, *fragments)
    assert "roc_auc" not in proc.stdout  # stopped before training and scoring


def test_missing_config_file():
    _assert_one_line_error(run_cli(["--config=experiments/nope.py"]), "experiments/nope.py", "not found")


def test_missing_data_file(ecg_dir, tmp_path):
    root = _copy_ecg(ecg_dir, tmp_path)
    (root / "ecg5000" / "ECG5000_TEST.txt").unlink()
    _assert_one_line_error(run_cli(["--config=" + DENSE, f"--config.data.root={root}"]),
                           "ECG5000_TEST.txt", "file not found")


@pytest.mark.parametrize("corruption, message", [
    (lambda rows: [r.rsplit(None, 1)[0] for r in rows], "expected 141 columns"),
    (lambda rows: rows[:5] + [rows[5].replace(rows[5].split()[3], "abc", 1)] + rows[6:], "not a numeric table"),
    (lambda rows: rows[:5] + [rows[5].replace(rows[5].split()[3], "nan", 1)] + rows[6:], "non-finite"),
    (lambda rows: [r for r in rows if float(r.split()[0]) != 1.0], "no normal (class 1) rows"),
    (lambda rows: [], "file is empty"),
])
def test_bad_train_file(ecg_dir, tmp_path, corruption, message):
    root = _copy_ecg(ecg_dir, tmp_path)
    path = root / "ecg5000" / "ECG5000_TRAIN.txt"
    path.write_text("\n".join(corruption(path.read_text().splitlines())) + "\n")
    _assert_one_line_error(run_cli(["--config=" + DENSE, f"--config.data.root={root}",
                                    f"--config.run.root={tmp_path / 'runs'}"]), "ECG5000_TRAIN.txt", message)
    assert not (tmp_path / "runs").exists()  # nothing half-written
