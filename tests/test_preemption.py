"""Preemption: a signal stops training at an epoch boundary with a checkpoint; resuming finishes
with exactly (bit for bit, on CPU) the parameters of a run that was never interrupted."""

import os
import re
import signal
import subprocess
import sys
import time

import pytest

from conftest import REPO
from research import preemption
from run_state import assert_bitwise_equal, final_state

EPOCHS = 300
ARGS = ["--config=experiments/ecg5000.py:dense", "--config.data.limit=256", "--config.train.batch_size=8", f"--config.train.epochs={EPOCHS}",
        "--config.train.checkpoint_every=0", "--config.plots.enabled=False"]


def _train(root, name, *extra):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    return subprocess.Popen([sys.executable, "-m", "research.train", *ARGS, f"--config.run.root={root}",
                             f"--config.run.name={name}", *extra], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def test_stop_flag_maps_signals_to_exit_codes():
    previous = {s: signal.getsignal(s) for s in (signal.SIGUSR1, signal.SIGTERM)}
    try:
        flag = preemption.StopFlag().install()
        assert not flag()
        os.kill(os.getpid(), signal.SIGUSR1)
        assert flag() and flag.exit_code == preemption.REQUEUE_EXIT
        os.kill(os.getpid(), signal.SIGTERM)  # a later TERM wins: stop, do not requeue
        assert flag() and flag.exit_code == 128 + signal.SIGTERM
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


@pytest.mark.slow
def test_sigusr1_checkpoints_and_resume_equals_uninterrupted(ecg_dir, tmp_path):
    reference = _train(tmp_path, "reference")
    interrupted = _train(tmp_path, "interrupted")
    log = tmp_path / "ecg5000_dense" / "interrupted" / "log.jsonl"
    deadline = time.monotonic() + 240
    while not (log.exists() and log.read_text().count("\n") >= 1):
        assert interrupted.poll() is None, interrupted.communicate()[0]
        assert time.monotonic() < deadline, "no epoch finished in 240 s"
        time.sleep(0.02)
    interrupted.send_signal(signal.SIGUSR1)
    out, _ = interrupted.communicate(timeout=240)
    assert interrupted.returncode == preemption.REQUEUE_EXIT, out
    stopped = int(re.search(r"stopped at epoch (\d+):", out).group(1))
    assert 1 <= stopped < EPOCHS, out
    assert final_state(log.parent)["epoch"].tolist() == [stopped]

    resumed = _train(tmp_path, "interrupted", "--config.run.resume=True")
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out
    assert f"resumed from epoch {stopped}" in out
    ref_out, _ = reference.communicate(timeout=240)
    assert reference.returncode == 0, ref_out

    ref_dir = tmp_path / "ecg5000_dense" / "reference"
    a, b = final_state(ref_dir), final_state(log.parent)
    assert a["epoch"].tolist() == [EPOCHS]
    assert_bitwise_equal(a, b)
    assert (ref_dir / "scores.csv").read_text() == (log.parent / "scores.csv").read_text()
    losses = lambda p: [line.split('"time"')[0] for line in (p / "log.jsonl").read_text().splitlines()]
    assert losses(ref_dir) == losses(log.parent)
