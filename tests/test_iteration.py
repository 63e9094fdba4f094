"""Fast iteration and live visibility: the persistent compilation cache (a second run loads its
programs and ends bit for bit where the first did), TensorBoard event files that hold the
losses of ``log.jsonl`` (read with TensorBoard's own reader), resumed runs without duplicate
steps, and progress lines with an ETA."""

import io
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from conftest import run_cli
from research import compile_cache
from research.errors import InputError
from research.event_log import EventLog
from research.progress import Progress
from run_state import assert_bitwise_equal, final_state

SMALL = ["--config=experiments/ecg5000.py:dense", "--config.data.limit=256", "--config.train.epochs=3",
         "--config.plots.enabled=False"]


def _scalars(run_dir) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def _log(run_dir) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def test_cache_directory_follows_config_then_environment(monkeypatch, tmp_path):
    for var in ("RESEARCH_COMPILE_CACHE", "JAX_COMPILATION_CACHE_DIR", "SLURM_JOB_ID"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert compile_cache.choose_dir("auto") == tmp_path / "xdg" / "research" / "jax_compile"
    monkeypatch.setenv("SLURM_JOB_ID", "42")
    assert compile_cache.choose_dir("auto", run_root=tmp_path / "runs") == tmp_path / "runs" / ".compile_cache"
    monkeypatch.setenv("RESEARCH_COMPILE_CACHE", str(tmp_path / "env"))
    assert compile_cache.choose_dir("") == tmp_path / "env"
    assert compile_cache.choose_dir(str(tmp_path / "cfg")) == tmp_path / "cfg"
    assert compile_cache.choose_dir("off") is None
    monkeypatch.setenv("RESEARCH_COMPILE_CACHE", "off")
    assert compile_cache.choose_dir("auto") is None


def test_a_recompiled_program_is_recorded_as_loaded_from_the_cache(tmp_path):
    before = jax.config.jax_compilation_cache_dir
    try:
        assert compile_cache.enable(str(tmp_path)) == {"enabled": True, "dir": str(tmp_path)}
        stats = compile_cache.listen()
        start = len(stats.programs)
        square_sum = jax.jit(lambda x: (x * x).sum() + 1.25)
        x = jnp.arange(7.0)
        first = float(square_sum(x))
        jax.clear_caches()  # what a fresh process starts with
        assert float(square_sum(x)) == first
        runs = [p for p in stats.programs[start:] if p["name"] == "jit(<lambda>)"]
        assert [p["cached"] for p in runs] == [False, True]
        assert any(f.name.startswith("jit__lambda") for f in tmp_path.iterdir())
    finally:
        compile_cache.enable(before or "off")


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_second_run_in_a_fresh_process_loads_every_program_and_is_bit_identical(tmp_path):
    env = {"RESEARCH_COMPILE_CACHE": str(tmp_path / "cache")}
    records = []
    for name in ("first", "second"):
        proc = run_cli([*SMALL, f"--config.run.root={tmp_path}", f"--config.run.name={name}"], env=env)
        assert proc.returncode == 0, proc.stderr
        records.append(json.loads((tmp_path / "ecg5000_dense" / name / "run.json").read_text()))
    first, second = (r["compile_cache"] for r in records)
    assert first["enabled"] and first["dir"] == str(tmp_path / "cache")
    assert first["hits"] == 0 and first["misses"] >= 3
    assert second["misses"] == 0 and second["hits"] == first["misses"]
    assert [p["name"] for p in second["programs"]] == [p["name"] for p in first["programs"]]
    assert "jit(train_epoch)" in [p["name"] for p in second["programs"]]
    startup = records[1]["startup"]
    assert startup["programs_from_cache"] == startup["programs_compiled"] >= 2
    phases = sum(startup[f"{p}_seconds"] for p in ("imports", "data", "setup", "first_epoch"))
    assert abs(phases - startup["to_first_epoch_seconds"]) < 0.01
    assert_bitwise_equal(final_state(tmp_path / "ecg5000_dense" / "first"),
                         final_state(tmp_path / "ecg5000_dense" / "second"))


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_cache_off_compiles_everything_and_writes_no_cache(tmp_path):
    proc = run_cli([*SMALL, "--config.train.epochs=1", f"--config.run.root={tmp_path}", "--config.run.name=off",
                    "--config.run.compile_cache=off", "--config.run.tensorboard=False"],
                   env={"RESEARCH_COMPILE_CACHE": str(tmp_path / "cache")})
    assert proc.returncode == 0, proc.stderr
    run = tmp_path / "ecg5000_dense" / "off"
    record = json.loads((run / "run.json").read_text())["compile_cache"]
    assert record["enabled"] is False and record["hits"] == 0 and record["misses"] >= 3
    assert not (tmp_path / "cache").exists()
    assert not list(run.glob("events.out.tfevents.*"))


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_event_files_hold_the_logged_losses_and_a_resumed_run_adds_no_duplicate_step(tmp_path):

    from experiments import ecg5000
    from research import experiment

    config = ecg5000.get_config("ensemble")
    config.data.limit, config.train.epochs, config.train.ensemble_size = 256, 4, 2
    config.train.checkpoint_every, config.plots.n_examples = 0, 2
    config.run.root, config.run.name, config.run.compile_cache = str(tmp_path), "r", str(tmp_path / "cache")
    run_dir = tmp_path / "ecg5000_ensemble" / "r"
    stopped = experiment.run(config, should_stop=lambda: (run_dir / "log.jsonl").exists() and len(_log(run_dir)) >= 2,
                             log=lambda *_: None)
    assert stopped["stopped_at_epoch"] == 2
    run = tmp_path / "ecg5000_ensemble" / "r"
    assert sorted(s for s, _ in _scalars(run)["train_loss/member_0"]) == [1, 2]

    config.run.resume = True
    summary = experiment.run(config, log=lambda *_: None)
    assert len(list(run.glob("events.out.tfevents.*"))) == 2
    scalars, log = _scalars(run), _log(run)
    assert [r["epoch"] for r in log] == [1, 2, 3, 4]
    for name in ("train_loss", "val_loss"):
        for k in range(2):
            steps, values = zip(*scalars[f"{name}/member_{k}"])
            assert list(steps) == [1, 2, 3, 4]
            np.testing.assert_allclose(values, [r[name][k] for r in log], rtol=1e-6)
        np.testing.assert_allclose([v for _, v in scalars[f"{name}/mean"]],
                                   [np.mean(r[name]) for r in log], rtol=1e-6)
    assert [s for s, _ in scalars["lr"]] == [1, 2, 3, 4] and len(scalars["epoch_seconds"]) == 4
    assert scalars["final/roc_auc"] == [(4, pytest.approx(summary["test"]["roc_auc"], rel=1e-6))]
    images = EventAccumulator(str(run), size_guidance={"images": 0})
    images.Reload()
    assert sorted(images.Tags()["images"]) == ["plots/examples", "plots/loss"]


def test_resumed_event_log_replaces_steps_after_the_checkpoint(tmp_path):
    first = EventLog(tmp_path)
    for epoch in range(1, 6):  # a run killed at epoch 5, its last checkpoint at epoch 3
        first.epoch(epoch, {"train_loss": np.array([float(epoch)])})
    first.close()
    resumed = EventLog(tmp_path, resumed_at=3)
    for epoch in range(4, 7):
        resumed.epoch(epoch, {"train_loss": np.array([10.0 * epoch])})
    resumed.close()
    assert _scalars(tmp_path)["train_loss/member_0"] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 40.0), (5, 50.0),
                                                         (6, 60.0)]


def test_progress_lines_every_n_epochs_with_an_eta():
    stream = io.StringIO()
    progress = Progress(total=6, initial=0, desc="ecg", every_seconds=1e9, stream=stream, every=2)
    for _ in range(6):
        progress.update("loss=1")
    lines = stream.getvalue().splitlines()
    assert [line.split()[1] for line in lines] == ["1/6", "2/6", "4/6", "6/6"]
    assert "ETA" not in lines[0] and all(", ETA " in line for line in lines[1:])
    assert lines[-1].endswith("ETA 0.0 s)")


def test_an_uncreatable_cache_folder_is_a_one_line_config_error(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    with pytest.raises(InputError) as err:
        compile_cache.enable(str(blocker / "cache"))
    assert str(err.value) == (f"config key run.compile_cache: cannot create the cache folder {blocker / 'cache'} "
                              "(Not a directory); choose another folder or 'off'")


def test_the_event_writer_is_imported_without_boto3_which_stays_importable(tmp_path):
    """tensorboardX imports boto3 for S3 when it is installed (0.4 s of start-up); run directories are local."""
    pytest.importorskip("boto3")
    import subprocess
    import sys

    from conftest import REPO

    code = ("import sys; from research.event_log import EventLog; EventLog(sys.argv[1]).close(); "
            "print('boto3' in sys.modules); import boto3; print(boto3.__name__)")
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split() == ["False", "boto3"]
    assert list(tmp_path.glob("events.out.tfevents.*"))
