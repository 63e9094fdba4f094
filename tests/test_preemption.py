"""Preemption outside SLURM: a signal or the stop file stops training between compiled calls with a
checkpoint; resuming finishes with exactly (bit for bit, on CPU) the parameters of a run that was
never interrupted; a signal after training changes nothing; a requeue that cannot help is refused."""

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


def _train(root, name, *extra, env=None):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1", **(env or {}))
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


def test_stop_file_is_a_stop_request_and_the_first_decision_holds(tmp_path):
    stop_file = tmp_path / "stop"
    flag = preemption.StopFlag(stop_file=str(stop_file))
    assert not flag() and flag.stopped_by is None
    stop_file.write_text("USR1\n")
    assert flag() and flag.exit_code == preemption.REQUEUE_EXIT
    flag.signum = signal.SIGTERM  # arrives after training stopped: the decision stands
    assert flag.exit_code == preemption.REQUEUE_EXIT
    stop_file.write_text("TERM\n")
    assert preemption.StopFlag(stop_file=str(stop_file))() and flag() and flag.exit_code == 128 + signal.SIGTERM


@pytest.mark.parametrize("stopped_by, step, resumed, restarts, code, message", [
    (signal.SIGUSR1, 0, None, None, 75, "stopped on SIGUSR1 at step 0, checkpoint written; exit 75 (requeue me)"),
    (signal.SIGUSR1, 0, 0, "0", 75, "stopped on SIGUSR1 at step 0"),  # a first cycle may end where it began
    (signal.SIGUSR1, 40, 12, "3", 75, "stopped on SIGUSR1 at step 40"),
    (signal.SIGUSR1, 12, 12, "1", 3, "not requeued: no step gained since the restart (still at step 12): "
                                     "the stop request came before the first call ended; give the job more --time, "
                                     "a smaller T in --signal=B:USR1@T, or a lower train.steps_per_call"),
    (signal.SIGUSR1, 90, 12, "5", 3, "not requeued: the job was requeued 5 times already (run.max_restarts=5); "
                                     "checkpoint at step 90"),
    (signal.SIGTERM, 12, 12, "9", 143, "stopped on SIGTERM at step 12, checkpoint written; not requeued"),
])
def test_requeue_is_refused_when_it_cannot_help(stopped_by, step, resumed, restarts, code, message):
    env = {} if restarts is None else {"SLURM_RESTART_COUNT": restarts}
    got_code, line = preemption.stop_exit(stopped_by, step, resumed, max_restarts=5, env=env)
    assert got_code == code and line.startswith(message)


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
    stopped = int(re.search(r"stopped at epoch (\d+), step \d+:", out).group(1))
    assert 1 <= stopped < EPOCHS, out
    assert final_state(log.parent)["epoch"].tolist() == [stopped]

    resumed = _train(tmp_path, "interrupted", "--config.run.resume=True")
    out, _ = resumed.communicate(timeout=240)
    assert resumed.returncode == 0, out
    assert f"resumed from epoch {stopped}," in out
    ref_out, _ = reference.communicate(timeout=240)
    assert reference.returncode == 0, ref_out

    ref_dir = tmp_path / "ecg5000_dense" / "reference"
    a, b = final_state(ref_dir), final_state(log.parent)
    assert a["epoch"].tolist() == [EPOCHS]
    assert_bitwise_equal(a, b)
    assert (ref_dir / "scores.csv").read_text() == (log.parent / "scores.csv").read_text()
    losses = lambda p: [line.split('"time"')[0] for line in (p / "log.jsonl").read_text().splitlines()]
    assert losses(ref_dir) == losses(log.parent)


SMALL = ["--config.data.limit=128", "--config.train.epochs=3", "--config.train.checkpoint_every=1",
         "--config.plots.enabled=False"]


def _spam_usr1(proc, seconds):
    """SIGUSR1 every 5 ms until the process ends (or ``seconds`` pass); returns how many were sent."""
    sent, deadline = 0, time.monotonic() + seconds
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            proc.send_signal(signal.SIGUSR1)
            sent += 1
        except ProcessLookupError:
            break
        time.sleep(0.005)
    return sent


@pytest.mark.slow
def test_signals_after_the_last_epoch_change_nothing(ecg_dir, tmp_path):
    """SIGUSR1 without pause from the last epoch's log line to the end (scoring and interpreter shutdown
    included) still ends in a finished run with exit status 0."""
    proc = _train(tmp_path, "run", *SMALL)
    log = tmp_path / "ecg5000_dense" / "run" / "log.jsonl"
    deadline = time.monotonic() + 240
    while not (log.exists() and log.read_text().count("\n") >= 3):
        assert proc.poll() is None, proc.communicate()[0]
        assert time.monotonic() < deadline, "training did not finish in 240 s"
        time.sleep(0.005)
    assert _spam_usr1(proc, 120) > 0
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert (log.parent / "metrics.json").is_file() and "roc_auc=" in out


@pytest.mark.slow
def test_stop_file_before_the_first_epoch_checkpoints_and_a_restart_without_progress_is_not_requeued(ecg_dir, tmp_path):
    stop_file = tmp_path / "stop"
    stop_file.write_text("USR1\n")
    env = {preemption.STOP_FILE_ENV: str(stop_file)}
    out, _ = _train(tmp_path, "run", *SMALL, env=env).communicate(timeout=240)
    assert "stopped at epoch 0, step 0:" in out and "exit 75 (requeue me)" in out, out
    assert final_state(tmp_path / "ecg5000_dense" / "run")["step"].tolist() == [0]
    # The requeued job (as SLURM would start it) is stopped again before it trains a step.
    proc = _train(tmp_path, "run", *SMALL, env={**env, "SLURM_RESTART_COUNT": "1", "SLURM_JOB_ID": "1"})
    out, _ = proc.communicate(timeout=240)
    assert proc.returncode == preemption.NOT_REQUEUED_EXIT, out
    assert "not requeued: no step gained since the restart (still at step 0)" in out
