"""A whole sharded run (stream-train, stream-score, regions, figures) against the in-memory run of the same spectra."""

import csv

import numpy as np
import pytest

from experiments import sdss_cnn_skip
from research import experiment, stream_score
from research.data import sdss_fits, sdss_shards, shards

pytestmark = pytest.mark.data("sdss")
WAVE = (3600.0, 10400.0)


def small_config(tmp_path, **data):
    c = sdss_cnn_skip.get_config()
    c.smoke = True
    c.model.features = (4, 8)
    c.model.latent_dim = 8
    c.train.eval_batch_size = 8
    c.run.root = str(tmp_path / "runs")
    c.regions.sample_n = 2
    c.regions.top_n = 2
    c.plots.enabled = True
    for k, v in data.items():
        c.data[k] = v
    return c


@pytest.mark.slow
def test_sharded_run_scores_and_regions_equal_the_in_memory_run(data_dir, tmp_path):
    sdss_fits.ingest(data_dir / "sdss", tmp_path / "d.npz", wave_range=WAVE)
    sdss_shards.ingest_task(data_dir / "sdss", tmp_path / "shards", wave_range=WAVE, shard_size=16)
    shards.merge(tmp_path / "shards")
    mem = experiment.run(small_config(tmp_path, path=str(tmp_path / "d.npz")), log=lambda m: None)
    streamed = experiment.run(small_config(tmp_path, path=str(tmp_path / "shards"), format="sharded"),
                              log=lambda m: None)
    with open(f"{mem['run_dir']}/scores.csv") as f:
        rows = list(csv.DictReader(f))
    table = stream_score.read_parts(f"{streamed['run_dir']}/scores")
    assert table.column("id").to_pylist() == [r["id"] for r in rows]
    np.testing.assert_allclose(table.column("score").to_numpy(), [float(r["score"]) for r in rows], rtol=1e-6)
    assert table.column("label").to_pylist() == [int(r["label"]) for r in rows]
    assert streamed["threshold"]["value"] == pytest.approx(mem["threshold"]["value"], rel=1e-6)
    assert streamed["n_flagged"] == mem["n_flagged"] and streamed["test"]["roc_auc"] == pytest.approx(
        mem["test"]["roc_auc"])
    # the model error calibrated on the training spectra (in one more streaming pass) as in memory
    np.testing.assert_allclose(np.load(f"{streamed['run_dir']}/model_error.npy"),
                               np.load(f"{mem['run_dir']}/model_error.npy"), rtol=1e-5, atol=1e-7)
    assert streamed["regions"]["n_regions"] == mem["analyses"]["sdss_regions"]["n_regions"]
    assert streamed["regions"]["n_flagged"] == mem["analyses"]["sdss_regions"]["n_flagged"]
    regions = stream_score.read_parts(f"{streamed['run_dir']}/scores", "regions")
    assert regions.num_rows == streamed["regions"]["n_regions"]
    top = table.sort_by([("score", "descending")]).column("id").to_pylist()[:2]
    assert streamed["regions"]["top"] == top
    assert len(streamed["regions"]["figures"]) == len(set(top) | set(streamed["regions"]["sampled_ids"]))
    from research.apply import load_run  # research.score applies a sharded run as it applies an in-memory one

    applied, n_pixels = load_run(streamed["run_dir"]), shards.Shards(tmp_path / "shards").n_pixels
    assert applied.sample_shape == (n_pixels,) and len(applied.axis) == n_pixels
    assert applied.threshold == streamed["threshold"]["value"]


@pytest.mark.parametrize("key,value,message", [
    ("data.scaling", "minmax", "config key data.scaling: the sharded path streams spectra as stored; use 'none'"),
    ("data.path", None, "config key data.path: the merged shard folder is required with data.format='sharded'"),
    ("train.steps_per_call", 4, "config key train.steps_per_call: the sharded path runs data.chunk steps per call; use 0"),
    ("regions.threshold_scope", "global",
     "config key regions.threshold_scope: only 'spectrum' streams (one batch at a time)"),
])
def test_keys_the_sharded_path_cannot_honour_are_one_line_errors(tmp_path, key, value, message):
    from research.errors import InputError
    from research.stream_run import check_config

    c = small_config(tmp_path, path=str(tmp_path), format="sharded")
    block, name = key.split(".")
    c[block][name] = value
    with pytest.raises(InputError) as err:
        check_config(c)
    assert str(err.value) == message


def test_sharded_splits_are_the_in_memory_splits(data_dir, tmp_path):
    from research.data import load_dataset
    from research.data import split_validation
    from research.data.sdss import fill_gaps
    from research.stream_run import splits

    sdss_fits.ingest(data_dir / "sdss", tmp_path / "d.npz", wave_range=WAVE)
    sdss_shards.ingest_task(data_dir / "sdss", tmp_path / "s", wave_range=WAVE)
    shards.merge(tmp_path / "s")
    c = small_config(tmp_path, path=str(tmp_path / "d.npz"))
    ds = load_dataset(c.data)
    ds = split_validation(ds, c.data.val_fraction, c.seed)
    sh = shards.Shards(tmp_path / "s")
    rows = splits(sh, c.data, c.seed)
    for name, split in (("train", ds.train), ("val", ds.val)):
        got = sh.read(rows[name])
        assert np.array_equal(fill_gaps(got["flux"], got["mask"]), split["x"])  # same rows, same order
        assert np.array_equal(got["mask"], split["mask"])
    ids = sh.column("id")
    assert [ids[i] for i in rows["test"]] == ds.test_ids
    assert list(rows["labels"][rows["test"]]) == list(ds.test_labels)


@pytest.mark.slow
def test_two_processes_stream_their_own_rows_and_equal_one_process(data_dir, tmp_path):
    """Two JAX processes (gloo on CPU) run the sharded path: each reads its block of every batch, and
    the run ends where the single-process run ends (to all-reduce rounding), with the same scores."""
    import json
    import os
    import socket
    import subprocess
    import sys

    from conftest import REPO
    from run_state import allreduce_tolerance, final_state, max_abs_difference

    sdss_shards.ingest_task(data_dir / "sdss", tmp_path / "s", wave_range=WAVE)
    shards.merge(tmp_path / "s")
    args = [sys.executable, "-m", "research.train", "--config=experiments/sdss_cnn_skip.py", "--config.smoke=True",
            "--config.data.format=sharded", f"--config.data.path={tmp_path / 's'}", "--config.model.features=(4, 8)",
            "--config.model.latent_dim=8", "--config.train.batch_size=8", "--config.train.eval_batch_size=8",
            "--config.plots.enabled=False", f"--config.run.root={tmp_path / 'runs'}"]
    base = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    base.pop("XLA_FLAGS", None)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        coordinator = f"127.0.0.1:{s.getsockname()[1]}"
    procs = [subprocess.Popen(args + ["--config.run.name=two"], cwd=REPO, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True,
                              env=dict(base, JAX_COORDINATOR_ADDRESS=coordinator, JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i))) for i in range(2)]
    try:
        single = subprocess.run(args + ["--config.run.name=one"], cwd=REPO, env=base, capture_output=True,
                                text=True, timeout=600)
        outs = [p.communicate(timeout=600)[0] for p in procs]
    finally:
        for p in procs:
            p.kill()
    assert single.returncode == 0, single.stderr[-3000:]
    first_errors = [next((line for line in o.splitlines() if "Error" in line or "error:" in line), o[-500:])
                    for o in outs]
    assert all(p.returncode == 0 for p in procs), first_errors
    runs = tmp_path / "runs" / "sdss_cnn_skip"
    assert json.loads((runs / "two" / "run.json").read_text())["process_count"] == 2
    one, two = final_state(runs / "one"), final_state(runs / "two")
    assert one["step"].tolist() == two["step"].tolist()
    assert max_abs_difference(one["params"], two["params"]) <= allreduce_tolerance(runs / "one")
    a, b = (stream_score.read_parts(runs / n / "scores") for n in ("one", "two"))
    assert len({f.name.split("-")[1] for f in (runs / "two" / "scores").glob("scores-*.parquet")}) == 2
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(), rtol=1e-4)


def test_unknown_data_format_is_a_one_line_error(tmp_path):
    from research.errors import InputError

    with pytest.raises(InputError) as err:
        experiment.run(small_config(tmp_path, format="shards"), log=lambda m: None)
    assert str(err.value) == "config key data.format: unknown format 'shards'; choose one of ('in_memory', 'sharded')"


@pytest.mark.slow
def test_sigusr1_mid_epoch_and_resume_equal_uninterrupted(data_dir, tmp_path):
    """``python -m research.train`` on shards: SIGUSR1 stops after the current chunk (one batch here),
    exit 75 with the train and iterator state saved; the resumed run ends bit for bit where an
    uninterrupted one ends, with the same scores."""
    import os
    import re
    import signal
    import subprocess
    import sys
    import time

    from conftest import REPO
    from research import preemption
    from run_state import assert_bitwise_equal, final_state

    sdss_shards.ingest_task(data_dir / "sdss", tmp_path / "s", wave_range=WAVE)
    shards.merge(tmp_path / "s")
    args = ["--config=experiments/sdss_cnn_skip.py", "--config.data.format=sharded", f"--config.data.path={tmp_path / 's'}",
            "--config.model.features=(4, 8)", "--config.model.latent_dim=8", "--config.train.batch_size=2",
            "--config.train.epochs=12", "--config.data.chunk=1", "--config.train.checkpoint_every=0",
            "--config.plots.enabled=False", f"--config.run.root={tmp_path / 'runs'}"]
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")

    def train(name, *extra):
        return subprocess.Popen([sys.executable, "-m", "research.train", *args, f"--config.run.name={name}", *extra],
                                cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    reference, interrupted = train("reference"), train("interrupted")
    log = tmp_path / "runs" / "sdss_cnn_skip" / "interrupted" / "log.jsonl"
    deadline = time.monotonic() + 400
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert interrupted.poll() is None, interrupted.communicate()[0]
        assert time.monotonic() < deadline, "no epoch finished in 400 s"
        time.sleep(0.02)
    interrupted.send_signal(signal.SIGUSR1)
    out, _ = interrupted.communicate(timeout=400)
    assert interrupted.returncode == preemption.REQUEUE_EXIT, out
    step = int(re.search(r"stopped at epoch \d+/12, step (\d+);", out).group(1))
    assert final_state(log.parent)["step"].tolist() == [step]
    resumed = train("interrupted", "--config.run.resume=True")
    out, _ = resumed.communicate(timeout=400)
    assert resumed.returncode == 0, out
    ref_out, _ = reference.communicate(timeout=400)
    assert reference.returncode == 0, ref_out
    ref_dir = log.parent.parent / "reference"
    assert_bitwise_equal(final_state(ref_dir), final_state(log.parent))
    assert stream_score.read_parts(ref_dir / "scores").equals(stream_score.read_parts(log.parent / "scores"))
