"""Run integrity (issue #14): one owner per run directory, a resume resumes the same run, checkpoints fall
back, and every failure is one line with exit status 2, leaving the existing run directory untouched."""

import fcntl
import hashlib
import json
import os
import pathlib
import shutil
import socket
import subprocess

import pytest

from conftest import run_cli
from run_state import assert_bitwise_equal, final_state

SMALL = ["--config=experiments/ecg5000.py:dense", "--config.data.limit=256", "--config.train.batch_size=32",
         "--config.plots.enabled=False", "--config.train.checkpoint_every=1"]
CPU = {"JAX_PLATFORMS": "cpu"}
STEPS = 256 // 32  # per epoch of SMALL; checkpoints are numbered by the optimiser step


def _tree_hash(path: pathlib.Path) -> dict:
    return {str(p.relative_to(path)): hashlib.sha1(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(path.rglob("*"))}


def _one_line(proc, message):
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.strip() == f"error: {message}"


@pytest.fixture(scope="module")
def finished(tmp_path_factory, ecg_dir):
    """A finished 3-epoch run ``runs/ecg5000_dense/done`` (checkpoints at every epoch)."""
    root = tmp_path_factory.mktemp("runs")
    proc = run_cli([*SMALL, "--config.train.epochs=3", f"--config.run.root={root}", "--config.run.name=done"], env=CPU)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return root / "ecg5000_dense" / "done"


def _copy(run: pathlib.Path, tmp_path) -> pathlib.Path:
    dest = tmp_path / "ecg5000_dense" / run.name
    shutil.copytree(run, dest)
    return dest


@pytest.mark.data("ecg5000")
def test_reusing_a_run_name_without_resume_refuses_and_changes_nothing(finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = _tree_hash(run)
    proc = run_cli([*SMALL, "--config.seed=1", f"--config.run.root={tmp_path}", "--config.run.name=done"], env=CPU)
    _one_line(proc, f"run {run} exists: resume it with run.resume=True or choose another run.name")
    assert _tree_hash(run) == before


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_a_locked_run_directory_refuses_and_changes_nothing(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "run.lock").write_text(f"{os.getpid()} {socket.gethostname()}\n")
    with open(run / "run.lock") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        before = _tree_hash(run)
        proc = run_cli([*SMALL, "--config.train.epochs=3", f"--config.run.root={tmp_path}", "--config.run.name=done",
                        "--config.run.resume=True"], env=CPU)
        _one_line(proc, f"run {run}: in use by pid {os.getpid()} on {socket.gethostname()} (one run per run directory)")
        assert _tree_hash(run) == before


def test_resume_without_a_checkpoint_refuses_and_makes_nothing(tmp_path):
    proc = run_cli([*SMALL, f"--config.run.root={tmp_path}", "--config.run.name=typo", "--config.run.resume=True"])
    _one_line(proc, f"run {tmp_path / 'ecg5000_dense' / 'typo'}: no checkpoint to resume from "
                    "(run.resume='auto' starts afresh when there is none)")
    assert not (tmp_path / "ecg5000_dense").exists()


def test_resume_mode_is_checked(tmp_path):
    proc = run_cli([*SMALL, f"--config.run.root={tmp_path}", "--config.run.resume=maybe"])
    _one_line(proc, "config key run.resume: must be False, True or 'auto', got 'maybe'")


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_resume_with_a_changed_model_refuses_naming_the_keys(finished, tmp_path):
    run = _copy(finished, tmp_path)
    before = _tree_hash(run)
    proc = run_cli([*SMALL, "--config.train.epochs=3", f"--config.run.root={tmp_path}", "--config.run.name=done",
                    "--config.run.resume=True", "--config.model.latent_dim=8", "--config.train.learning_rate=0.01"],
                   env=CPU)
    _one_line(proc, f"run {run}: cannot resume with changed model.latent_dim, train.learning_rate (they change the "
                    "model, data or optimiser; choose another run.name)")
    assert _tree_hash(run) == before


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_resume_with_more_epochs_is_recorded_and_a_stale_lock_is_taken_over(finished, tmp_path):
    run = _copy(finished, tmp_path)
    (run / "run.lock").write_text("999999999 some-host-that-died\n")  # never unlocked: its owner was killed
    proc = run_cli([*SMALL, "--config.train.epochs=5", f"--config.run.root={tmp_path}", "--config.run.name=done",
                    "--config.run.resume=True"], env=CPU)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "took over the stale lock of pid 999999999 on some-host-that-died" in proc.stdout
    info = json.loads((run / "run.json").read_text())
    (resume,) = info["resumes"]
    assert resume["from_epoch"] == 3 and resume["changed"] == {"train.epochs": [3, 5]}
    assert [json.loads(r)["epoch"] for r in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert (run / "run.lock").read_text() == ""  # released


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_auto_resume_starts_afresh_without_a_checkpoint_and_keeps_the_last_two(tmp_path):
    proc = run_cli([*SMALL, "--config.train.epochs=3", f"--config.run.root={tmp_path}", "--config.run.name=auto",
                    "--config.run.resume=auto"], env=CPU)
    assert proc.returncode == 0, proc.stderr[-3000:]
    latest = tmp_path / "ecg5000_dense" / "auto" / "checkpoints" / "latest"
    assert sorted(int(p.name) for p in latest.iterdir() if p.name.isdigit()) == [2 * STEPS, 3 * STEPS]


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_checkpoint_cadence_keeps_the_last_two_and_resuming_from_an_earlier_one_is_exact(tmp_path):
    every_two = [a for a in SMALL if not a.startswith("--config.train.checkpoint_every")] + [
        "--config.train.checkpoint_every=2", "--config.train.epochs=5", f"--config.run.root={tmp_path}",
        "--config.run.name=c"]
    proc = run_cli(every_two, env=CPU)
    assert proc.returncode == 0, proc.stderr[-3000:]
    run = tmp_path / "ecg5000_dense" / "c"
    for kind in ("latest", "best"):  # saved after epochs 2, 4 and at the end (5)
        assert sorted(int(p.name) for p in (run / "checkpoints" / kind).iterdir()) == [4 * STEPS, 5 * STEPS]
    uninterrupted = final_state(run)
    for kind in ("latest", "best"):  # killed after epoch 4's checkpoint, before the end's
        shutil.rmtree(run / "checkpoints" / kind / str(5 * STEPS))
    proc = run_cli([*every_two, "--config.run.resume=True"], env=CPU)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resumed from epoch 4, step {4 * STEPS}" in proc.stdout
    assert_bitwise_equal(uninterrupted, final_state(run))
    assert [json.loads(r)["epoch"] for r in (run / "log.jsonl").read_text().splitlines()] == [1, 2, 3, 4, 5]


@pytest.mark.slow
@pytest.mark.data("ecg5000")
def test_a_damaged_checkpoint_falls_back_to_the_one_before_with_the_same_result(finished, tmp_path):
    run = _copy(finished, tmp_path)
    reference = run_cli([*SMALL, "--config.train.epochs=5", f"--config.run.root={tmp_path}", "--config.run.name=ref"],
                        env=CPU)
    assert reference.returncode == 0, reference.stderr[-3000:]
    for f in (run / "checkpoints" / "latest" / str(3 * STEPS)).rglob("*"):
        if f.is_file() and f.stat().st_size > 100:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])  # a half-cut file
    proc = run_cli([*SMALL, "--config.train.epochs=5", f"--config.run.root={tmp_path}", "--config.run.name=done",
                    "--config.run.resume=True"], env=CPU)
    assert proc.returncode == 0, proc.stderr[-3000:]
    bad = run / "checkpoints" / "latest" / str(3 * STEPS)
    assert f"checkpoint {bad.absolute()} is unreadable" in proc.stdout
    assert "resumed from epoch 2" in proc.stdout
    assert_bitwise_equal(final_state(tmp_path / "ecg5000_dense" / "ref"), final_state(run))


def test_a_skipped_checkpoint_save_is_an_error(tmp_path):
    import jax.numpy as jnp

    from research.checkpoints import Checkpoints
    from research.errors import InputError
    from research.models import build_model
    from research.training import Trainer, make_optimizer
    import ml_collections

    trainer = Trainer(build_model(ml_collections.ConfigDict({"name": "dense", "latent_dim": 2})),
                      make_optimizer(ml_collections.ConfigDict({"epochs": 1, "learning_rate": 1e-3}), 1), batch_size=1)
    state = trainer.init([0], (4,))
    ckpt = Checkpoints(tmp_path)
    ckpt.save(state.replace(step=jnp.asarray([5])))
    with pytest.raises(InputError, match=r"the checkpoint of step 3 was not saved \(saved steps: \[5\]\)$"):
        ckpt.save(state.replace(step=jnp.asarray([3])))
    ckpt.close()


def _half_cut(step_dir: pathlib.Path) -> None:
    for f in step_dir.rglob("*"):
        if f.is_file() and f.stat().st_size > 100:
            f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flipped(step_dir: pathlib.Path) -> None:
    for f in (step_dir / "default").rglob("d/*"):
        data = bytearray(f.read_bytes())
        for i in range(len(data) // 3, len(data), 7):
            data[i] ^= 0xFF
        f.write_bytes(bytes(data))


def _cut_metadata(step_dir: pathlib.Path) -> None:
    meta = step_dir / "default" / "_METADATA"
    meta.write_bytes(meta.read_bytes()[:40])


@pytest.fixture(scope="module")
def two_states():
    """Two small train states of steps 5 and 9 with different parameters."""
    import jax
    import ml_collections

    from research.models import build_model
    from research.training import Trainer, make_optimizer

    trainer = Trainer(build_model(ml_collections.ConfigDict({"name": "dense", "hidden": (16,), "latent_dim": 2})),
                      make_optimizer(ml_collections.ConfigDict({"epochs": 1, "learning_rate": 1e-3}), 1), batch_size=1)
    older = trainer.init([0], (140,)).replace(step=jax.numpy.asarray([5]))
    return older, older.replace(params=jax.tree.map(lambda a: a + 1, older.params), step=jax.numpy.asarray([9]))


@pytest.mark.parametrize("damage", [_half_cut, _flipped, _cut_metadata], ids=["half-cut", "flipped", "cut-metadata"])
def test_each_kind_of_damaged_checkpoint_is_named_and_the_one_before_restored(tmp_path, two_states, damage):
    import jax
    import numpy as np

    from research.checkpoints import Checkpoints
    from research.errors import InputError

    older, newer = two_states
    ckpt = Checkpoints(tmp_path)
    ckpt.save(older)
    ckpt.save(newer)
    ckpt.close()
    damage(tmp_path / "latest" / "9")
    said = []
    restored, step = Checkpoints(tmp_path).restore(newer, log=said.append)
    assert step == 5
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(older)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    (line,) = said
    assert line.startswith(f"checkpoint {tmp_path / 'latest' / '9'} is unreadable (")
    assert line.endswith("); falling back to the one before") and "\n" not in line
    assert sorted(p.name.split("-")[0] for p in (tmp_path / "latest").iterdir()) == ["5", "9.unreadable"]

    damage(tmp_path / "latest" / "5")
    with pytest.raises(InputError, match=r"/latest: no readable checkpoint \(tried steps \[5\]\)$"):
        Checkpoints(tmp_path).restore(newer, log=said.append)


def test_writes_outliving_a_failed_save_are_kept_not_printed(tmp_path):
    """What orbax's leftover writes report once their event loop is closed is kept for error.log, not
    printed; any other unraisable exception still reaches the hook before."""
    import asyncio
    import gc
    import sys
    import warnings

    from research import checkpoints

    loop = asyncio.new_event_loop()
    loop.close()

    class LateWrite:  # a write whose completion callback reaches the closed loop, as tensorstore's do
        def __del__(self):
            loop.call_soon_threadsafe(print)

    class Other:
        def __del__(self):
            raise ValueError("something else")

    previous, passed_on = sys.unraisablehook, []
    sys.unraisablehook = lambda report: passed_on.append(report.exc_type)
    try:
        checkpoints.Checkpoints(tmp_path).close()
        before = len(checkpoints.late_write_reports())
        LateWrite(), Other()
        gc.collect()
    finally:
        sys.unraisablehook = previous
    late = checkpoints.late_write_reports()[before:]
    assert len(late) == 1 and late[0].rstrip().endswith("RuntimeError: Event loop is closed"), late
    assert passed_on == [ValueError]

    async def write():
        pass

    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        checkpoints.Checkpoints(tmp_path).close()
        write()  # a coroutine of the failed save, dropped unawaited
        gc.collect()
        warnings.warn("something else", RuntimeWarning)
    assert checkpoints.late_write_reports()[-1].rstrip().endswith("coroutine 'test_writes_outliving_a_failed_save_are_"
                                                                 "kept_not_printed.<locals>.write' was never awaited")
    assert [str(w.message) for w in shown] == ["something else"]


@pytest.mark.data("ecg5000")  # the data is read before the run root is made
def test_a_run_root_that_cannot_be_made_is_one_line_and_leaves_nothing(tmp_path):
    (tmp_path / "file").write_text("not a folder")
    proc = run_cli([*SMALL, "--config.train.epochs=1", f"--config.run.root={tmp_path / 'file'}",
                    "--config.run.name=x"], env=CPU)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr[-3000:]
    assert proc.stderr.startswith(f"error: {tmp_path / 'file'}") and "Traceback" not in proc.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def _tmpfs(path: pathlib.Path, size: str) -> pathlib.Path:
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    return path


@pytest.mark.slow
@pytest.mark.data("ecg5000")
@pytest.mark.parametrize("size, left", [
    ("4k", False), ("200k", True)], ids=["at-start", "at-a-checkpoint"])
def test_disk_full_is_one_line_and_leaves_no_empty_run_directory(tmp_path, size, left):
    mount = _tmpfs(tmp_path / "full", size)
    try:
        proc = run_cli([*SMALL, "--config.train.epochs=50", f"--config.run.root={mount}", "--config.run.name=x"],
                       env=CPU)
        run = mount / "ecg5000_dense" / "x"
        assert proc.returncode == 2, proc.stderr[-3000:]
        assert "Traceback" not in proc.stderr and proc.stderr.count("error: ") == 1, proc.stderr[-3000:]
        last = proc.stderr.strip().splitlines()[-1]
        assert last.startswith(f"error: {run}") and ": No space left on device" in last, last
        assert run.is_dir() == left  # a run that failed before training leaves nothing behind
        if left:  # the epoch it finished is kept, and the traceback
            assert (run / "log.jsonl").read_text().count("\n") == 1
            assert last.endswith(f": No space left on device (traceback in {run / 'error.log'})"), last
            assert "No space left on device" in (run / "error.log").read_text()
            assert not list(run.glob("checkpoints/*/*.orbax-checkpoint-tmp*"))  # the failed save's folders
    finally:
        subprocess.run(["umount", str(mount)], capture_output=True)


@pytest.mark.parametrize("exc, line", [
    (PermissionError(13, "Permission denied", "/runs/x/run.json"), "/runs/x/run.json: Permission denied"),
    (ValueError('PERMISSION_DENIED: Error writing "a/0" in OCDBT database at local file "/runs/x/checkpoints/'
                'latest/8/": Failed to open [os_error_code=\'13\'] [tensorstore_spec=...]'),
     "/runs/x/checkpoints/latest/8/: Permission denied"),
    (ValueError('RESOURCE_EXHAUSTED: Error writing "a/0" in OCDBT database at local file "/runs/x/d/": Failed '
                "to write 34733 bytes to file 17: No space left on device [os_error_code='28']"),
     "/runs/x/d/: No space left on device"),
    (RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 81.00GiB."),
     "device: out of memory (RESOURCE_EXHAUSTED: Out of memory while trying to allocate 81.00GiB.)"),
], ids=["permission-denied", "permission-denied-in-a-checkpoint", "disk-full-in-a-checkpoint", "device-memory"])
def test_failures_that_are_not_input_errors_are_described_in_one_line(exc, line):
    """Permission denied cannot be met as root (these tests run as root), so the wording is checked here."""
    from research.cli import describe

    assert describe(exc, "/runs/x") == line


def test_config_file_without_get_config(tmp_path):
    path = tmp_path / "empty.py"
    path.write_text("x = 1\n")
    _one_line(run_cli([f"--config={path}"]),
              f"{path}: no get_config() function (a config file defines get_config(arg=None) returning a ConfigDict)")


def test_config_file_with_a_syntax_error_names_the_line(tmp_path):
    path = tmp_path / "broken.py"
    path.write_text("def get_config():\n    return (\n\nx = ]\n")
    proc = run_cli([f"--config={path}"])
    assert proc.returncode == 2
    assert proc.stderr.strip().startswith(f"error: {path}:4: syntax error: ")


@pytest.mark.data("fsdd")
def test_truncated_and_unreadable_wavs_are_skipped_and_reported(data_dir, tmp_path, capsys):
    from research.data import fsdd
    from research.data import report_skipped

    src = data_dir / "fsdd" / "recordings"
    for f in sorted(src.glob("6_george_*.wav"))[:8] + sorted(src.glob("*_lucas_*.wav"))[:20]:
        shutil.copy(f, tmp_path / f.name)
    cut = sorted(tmp_path.glob("6_george_*.wav"))[0]
    cut.write_bytes(cut.read_bytes()[:100])
    junk = tmp_path / "6_george_99.wav"
    junk.write_bytes(b"not a wav file at all")
    import ml_collections

    ds = fsdd.load(ml_collections.ConfigDict(dict(path=str(tmp_path), train_speakers=("george",),
                                                  test_speakers=("lucas",))))
    assert len(ds.train["x"]) == 7  # of 8 copied sixes the cut one is not scored, nor is the junk file
    reasons = ds.meta["skipped"]
    assert any(r.startswith(f"{cut}: truncated WAV file") for r in reasons), reasons
    assert any(r.startswith(f"{junk}: not a readable WAV file") for r in reasons), reasons
    report_skipped(ds, print)
    out = capsys.readouterr().out
    assert f"skipped {cut}: truncated WAV file" in out and f"skipped {junk}: not a readable WAV file" in out


@pytest.mark.data("rf_iq")
def test_a_needed_capture_that_was_skipped_names_the_real_cause(data_dir, tmp_path):
    import ml_collections

    from research.data import rf
    from research.errors import InputError

    folder = tmp_path / "rf_iq"
    shutil.copytree(data_dir / "rf_iq", folder)
    ask = folder / "ask.complex"
    ask.write_bytes(ask.read_bytes() + b"\0")  # odd length: not a whole number of float32 values
    cfg = ml_collections.ConfigDict(dict(path=str(folder), normal_devices=("ook_overshoot",), anomaly_devices=("ask",)))
    with pytest.raises(InputError) as exc:
        rf.load(cfg)
    size = ask.stat().st_size
    assert str(exc.value) == (f"{ask}: {size} bytes is not a whole number of float32 values "
                              "(a capture that config key data.normal_devices/anomaly_devices needs)")


def test_a_key_newer_than_the_run_is_no_change_at_its_default_and_refused_otherwise():
    from research.config import base_config
    from research.pipeline import resume_changes

    new = base_config("ecg5000", "dense").to_dict()
    old = json.loads(json.dumps(new))
    del old["train"]["line_scale"], old["train"]["line_width"]  # a run made before the keys existed
    assert resume_changes(old, new) == ({}, [])
    new["train"]["line_scale"] = 4.0
    assert resume_changes(old, new)[1] == ["train.line_scale"]
