"""The batch scripts in slurm/ on a real (one-node, local) SLURM cluster, and the job naming they rely on.

The cluster comes from slurm/setup_local_cluster.sh (Debian's slurmctld/slurmd/munge). The tests skip
only when that cannot run here: not root, or apt unreachable (CI has neither SLURM nor root). Every
job is bounded in time and cancelled if a test ends early; daemons started by this module are stopped
at the end. The jobs of the signal tests are submitted together (the cluster runs two at a time) by
one fixture, which sends each its signal at the moment its test is about; each test says which SLURM
feature it relies on.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from conftest import REPO
from research import slurm
from run_state import allreduce_tolerance, assert_bitwise_equal, final_state, max_abs_difference

sys.path.insert(0, str(REPO / "slurm"))
import summarize  # noqa: E402

LOCAL = ["--gres=none", "--cpus-per-task=1", "--time=00:10:00"]  # the site lines, for this one-node cluster
SMOKE = ["--config.smoke=True"]
JOB_TIMEOUT = 240
FINAL = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "BOOT_FAIL",
         "DEADLINE"}


# ---- job naming (no cluster needed) -----------------------------------------------------------
def _config(name=None):
    from research.config import base_config

    config = base_config()
    config.run.name = name
    return config


def test_run_is_named_after_the_job_and_a_requeued_job_resumes():
    assert slurm.job_run_name({}) is None
    assert slurm.job_run_name({"SLURM_JOB_ID": "42"}) == "42"
    assert slurm.job_run_name({"SLURM_JOB_ID": "43", "SLURM_ARRAY_JOB_ID": "40", "SLURM_ARRAY_TASK_ID": "3"}) == "40_3"
    config = _config()
    slurm.apply_run_defaults(config, {"SLURM_JOB_ID": "42"})
    assert (config.run.name, config.run.resume) == ("42", False)
    slurm.apply_run_defaults(config, {"SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": "2"})
    assert (config.run.name, config.run.resume) == ("42", "auto")
    config = _config("mine")
    slurm.apply_run_defaults(config, {"SLURM_JOB_ID": "42"})
    assert (config.run.name, config.run.resume) == ("mine", False)
    slurm.apply_run_defaults(config, {"SLURM_JOB_ID": "42", "SLURM_RESTART_COUNT": "1"})
    assert (config.run.name, config.run.resume) == ("mine", "auto")


def test_summary_lists_unfinished_and_missing_tasks(tmp_path):
    sweep = tmp_path / "sweep.txt"
    sweep.write_text("# comment\n--config.model.latent_dim=8\n\n--config.model.latent_dim=4\n")
    (tmp_path / "runs" / "exp" / "7_0" / "checkpoints").mkdir(parents=True)
    assert summarize.main(["--job=7", f"--sweep-file={sweep}", f"--root={tmp_path / 'runs'}"]) == 0
    rows = (tmp_path / "runs" / "sweeps" / "7.csv").read_text().splitlines()
    assert len(rows) == 3
    assert rows[1].startswith("0,unfinished,--config.model.latent_dim=8") and rows[2].startswith("1,missing,")


# ---- the real cluster --------------------------------------------------------------------------
def _ping() -> bool:
    try:
        return "UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.fixture(scope="module")
def cluster():
    if os.geteuid() != 0:
        pytest.skip("slurm/setup_local_cluster.sh needs root (it installs slurm and starts daemons)")
    was_up = _ping()
    proc = subprocess.run(["bash", str(REPO / "slurm" / "setup_local_cluster.sh")], capture_output=True,
                          text=True, timeout=420)
    if proc.returncode in (3, 4):
        pytest.skip(f"no local SLURM cluster: {(proc.stdout + proc.stderr).strip().splitlines()[-1]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    yield
    if not was_up:
        subprocess.run(["bash", str(REPO / "slurm" / "setup_local_cluster.sh"), "--stop"], timeout=60)


class Jobs:
    """Submits from the repository root with this test's environment; cancels what is left at the end."""

    def __init__(self, tmp: pathlib.Path):
        self.tmp, self.ids = tmp, []
        # The tracked site defaults (not a developer's slurm/site.local.sh); one compilation cache for
        # all jobs of the session, so only the first job of each shape compiles.
        self.env = dict(os.environ, PYTHON=sys.executable, RESEARCH_SITE_FILE="slurm/site.example.sh",
                        JAX_COMPILATION_CACHE_DIR=str(CACHE), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
        self.env.pop("XLA_FLAGS", None)
        self.lock = threading.Lock()

    def sbatch(self, script: str, *args: str, opts: tuple = ()) -> str:
        """``sbatch [opts] script args``; returns the job id."""
        out = subprocess.run(["sbatch", "--parsable", *LOCAL, f"--output={self.tmp}/%j.out", *opts, script, *args],
                             cwd=REPO, env=self.env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        with self.lock:
            self.ids.append(out.stdout.strip().split(";")[0])
            return self.ids[-1]

    def show(self, job: str) -> str:
        return subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout

    def state(self, job: str) -> str:
        states = re.findall(r"JobState=(\w+)", self.show(job))
        return states[0] if len(set(states)) == 1 else ",".join(sorted(set(states)))

    def wait(self, job: str, timeout: float = JOB_TIMEOUT, until=FINAL) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.state(job)) not in until:
            assert time.monotonic() < deadline, f"job {job} still {state} after {timeout} s:\n{self.output(job)}"
            time.sleep(0.5)
        return state

    def output(self, job: str) -> str:
        path = self.tmp / f"{job}.out"
        return path.read_text() if path.exists() else "(no output file)"

    def exit_code(self, job: str) -> str:
        return re.search(r" ExitCode=(\S+)", self.show(job)).group(1)

    def signal(self, job: str, *how: str) -> None:
        out = subprocess.run(["scancel", *how, job], capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, f"scancel {' '.join(how)} {job}: {out.stderr}\n{self.output(job)}"

    def cancel_all(self):
        if self.ids:
            subprocess.run(["scancel", *self.ids], capture_output=True, timeout=30)


CACHE = pathlib.Path(os.environ.get("TMPDIR", "/tmp")) / f"research-slurm-tests-jax-cache-{os.getuid()}"


@pytest.fixture
def jobs(cluster, tmp_path):
    j = Jobs(tmp_path)
    yield j
    j.cancel_all()


def _run_dir(job_output: str) -> pathlib.Path:
    found = re.findall(r"run directory: (\S+)", job_output)
    assert found, job_output
    return REPO / found[0]


def _until(condition, what: str, timeout: float = 900, every: float = 0.02):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(every)
    return value


# ---- stop requests at every moment of a run ------------------------------------------------------
# Epochs of 256 steps (batch 1 of 256 rows) in 128 calls of 2 steps: a stop request is seen within 2
# steps, and one that comes at a random moment falls inside an epoch (not between two) 99% of the time.
# Enough epochs (seconds of training once compiled) that a signal sent after the first one comes in time.
EPOCHS, STEPS_PER_EPOCH, PER_CALL = 60, 256, 2
SIGNAL_ARGS = ["experiments/ecg5000.py:dense", "--config.data.limit=256", "--config.train.batch_size=1",
               f"--config.train.epochs={EPOCHS}", f"--config.train.steps_per_call={PER_CALL}",
               "--config.train.checkpoint_every=0", "--config.plots.enabled=False"]
USR1 = ("--signal=USR1", "--batch")  # what #SBATCH --signal=B:USR1@T sends before the time limit


class Scenario:
    """One train_gpu.sbatch job and the test's driver for it (run in a thread)."""

    def __init__(self, jobs: Jobs, name: str, *extra: str):
        self.jobs, self.name = jobs, name
        self.root = jobs.tmp / name
        self.job = jobs.sbatch("slurm/train_gpu.sbatch", *SIGNAL_ARGS, f"--config.run.root={self.root}", *extra)
        self.run = self.root / "ecg5000_dense" / self.job
        self.notes: list[str] = []

    def output(self) -> str:
        return self.jobs.output(self.job)

    def started(self, restart: int) -> bool:
        """The batch script of this cycle has printed its run directory (the trainer is not up yet)."""
        out = self.output()
        marker = f"=== job {self.job} (restart {restart})"
        return marker in out and "run directory:" in out.split(marker, 1)[1]

    def epochs_logged(self) -> int:
        log = self.run / "log.jsonl"
        return log.read_text().count("\n") if log.exists() else 0

    def resumed(self, restart: int) -> int | None:
        """The epoch this cycle resumed from, once its trainer has said so."""
        tail = self.output().split(f"=== job {self.job} (restart {restart})", 1)
        found = re.search(r"resumed from epoch (\d+)", tail[1]) if len(tail) == 2 else None
        return int(found.group(1)) if found else None

    def finish(self) -> str:
        return self.jobs.wait(self.job, timeout=900)


def _uninterrupted(sc: Scenario):
    return sc.finish()


def _before_first_epoch(sc: Scenario):
    _until(lambda: sc.started(0), "the job to start")
    sc.jobs.signal(sc.job, *USR1)
    return sc.finish()


def _mid_epoch(sc: Scenario):
    _until(lambda: sc.epochs_logged() >= 1, "the first epoch")
    sc.jobs.signal(sc.job, *USR1)  # arrives inside a later epoch, between two calls
    return sc.finish()


def _during_checkpoint_write(sc: Scenario):
    latest = sc.run / "checkpoints" / "latest"

    def writing():
        try:
            return any(".orbax-checkpoint-tmp" in name for name in os.listdir(latest))
        except FileNotFoundError:
            return False

    _until(lambda: sc.epochs_logged() >= 1 and writing(), "a checkpoint write after the first epoch", every=0.002)
    sc.jobs.signal(sc.job, *USR1)
    sc.notes.append(f"checkpoint write still going when scancel returned: {writing()}")
    return sc.finish()


def _after_last_epoch(sc: Scenario):
    _until(lambda: sc.epochs_logged() >= EPOCHS, "the last epoch")
    sc.jobs.signal(sc.job, *USR1)  # while the run scores, plots and exits
    return sc.finish()


def _sigterm(sc: Scenario):
    _until(lambda: sc.epochs_logged() >= 1, "the first epoch")
    sc.jobs.signal(sc.job)  # plain scancel: SIGTERM to the batch script and the trainer
    return sc.finish()


def _never_progressing_loop(sc: Scenario):
    """Each cycle is stopped before its first call (a time limit too short for start-up would do that)."""
    for restart in (0, 1):
        _until(lambda: sc.started(restart) or sc.jobs.state(sc.job) in FINAL, f"cycle {restart}")
        sc.jobs.signal(sc.job, *USR1)
    return sc.finish()


def _restart_bound(sc: Scenario):
    """Stopped after an epoch in every cycle (progress each time), with run.max_restarts=1."""
    _until(lambda: sc.epochs_logged() >= 1, "the first epoch")
    sc.jobs.signal(sc.job, *USR1)
    resumed = _until(lambda: sc.resumed(1), "the restart")
    _until(lambda: sc.epochs_logged() > resumed, "an epoch in the restarted job")
    sc.jobs.signal(sc.job, *USR1)
    return sc.finish()


SCENARIOS = {
    "uninterrupted": (_uninterrupted, ()),
    "before_first_epoch": (_before_first_epoch, ()),
    "mid_epoch": (_mid_epoch, ()),
    "during_checkpoint_write": (_during_checkpoint_write, ("--config.train.checkpoint_every=1",)),
    "after_last_epoch": (_after_last_epoch, ("--config.plots.enabled=True",)),
    "sigterm": (_sigterm, ()),
    "never_progressing_loop": (_never_progressing_loop, ()),
    "restart_bound": (_restart_bound, ("--config.run.max_restarts=1",)),
}


@pytest.fixture(scope="module")
def scenarios(cluster, tmp_path_factory):
    """All signal scenarios at once: {name: (Scenario, final job state)}."""
    j = Jobs(tmp_path_factory.mktemp("signals"))
    try:
        runs = {name: Scenario(j, name, *extra) for name, (_, extra) in SCENARIOS.items()}
        with ThreadPoolExecutor(len(runs)) as pool:
            futures = {name: pool.submit(SCENARIOS[name][0], sc) for name, sc in runs.items()}
            yield {name: (runs[name], f.exception() or f.result()) for name, f in futures.items()}
    finally:
        j.cancel_all()


def _scenario(scenarios, name) -> tuple[Scenario, str]:
    """A scenario's job and final state; a driver that failed (e.g. timed out) fails the test here."""
    sc, state = scenarios[name]
    if isinstance(state, BaseException):
        raise AssertionError(f"{name}: {state}\n{sc.output()}") from state
    return sc, state


def _finished_equal_to_uninterrupted(scenarios, name):
    sc, state = _scenario(scenarios, name)
    assert state == "COMPLETED", sc.output()
    ref, ref_state = _scenario(scenarios, "uninterrupted")
    assert ref_state == "COMPLETED", ref.output()
    a, b = final_state(ref.run), final_state(sc.run)
    assert a["epoch"].tolist() == [EPOCHS]
    assert_bitwise_equal(a, b)
    assert (ref.run / "scores.csv").read_text() == (sc.run / "scores.csv").read_text()
    losses = lambda p: [line.split('"time"')[0] for line in (p / "log.jsonl").read_text().splitlines()]  # noqa: E731
    assert losses(ref.run) == losses(sc.run)
    return sc.output()


def _requeued_once_at(log: str, job: str, pattern: str) -> int:
    """The step of the one stop in a log: stopped, checkpoint, 'requeued', restart 1 resumed there."""
    stops = re.findall(r"stopped at epoch (\d+), step (\d+):", log)
    assert len(stops) == 1, log
    epoch, step = map(int, stops[0])
    assert re.search(pattern, f"{epoch} {step}"), log
    assert f"stopped on SIGUSR1 at step {step}, checkpoint written; exit 75 (requeue me)" in log
    assert f"requeued: job {job} resumes from" in log and f"=== job {job} (restart 1)" in log, log
    assert f"resumed from epoch {epoch}, step {step} " in log and "finished: exit status 0" in log, log
    assert "restart 2" not in log
    return step


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_usr1_before_the_first_epoch_requeues_from_step_0_and_finishes_like_an_uninterrupted_run(scenarios):
    """Slurm: scancel --signal=USR1 --batch as soon as the batch script runs (the trainer is still
    starting), --requeue + scontrol requeue, SLURM_RESTART_COUNT."""
    log = _finished_equal_to_uninterrupted(scenarios, "before_first_epoch")
    assert _requeued_once_at(log, scenarios["before_first_epoch"][0].job, r"^0 0$") == 0


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_usr1_mid_epoch_checkpoints_between_calls_and_resumes_bit_for_bit(scenarios):
    """Slurm: scancel --signal=USR1 --batch during epoch 2, --requeue + scontrol requeue. The stop is seen
    between two calls; it falls inside an epoch unless the signal came during an epoch's last call or its
    end-of-epoch work (validation, log), as it did once on a loaded machine (the suite beside a benchmark): then
    the run resumed from an epoch boundary, still bit for bit, and the test warns instead of failing."""
    log = _finished_equal_to_uninterrupted(scenarios, "mid_epoch")
    step = _requeued_once_at(log, scenarios["mid_epoch"][0].job, r"^[1-9]\d* ")
    assert step % PER_CALL == 0, log  # between two calls
    if step % STEPS_PER_EPOCH == 0:
        warnings.warn(f"the USR1 stop fell on an epoch boundary (step {step}), not inside an epoch")


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_usr1_during_a_checkpoint_write_requeues_and_resumes_bit_for_bit(scenarios):
    """Slurm: scancel --signal=USR1 --batch the moment an (asynchronous) checkpoint write starts."""
    log = _finished_equal_to_uninterrupted(scenarios, "during_checkpoint_write")
    _requeued_once_at(log, scenarios["during_checkpoint_write"][0].job, r"^[1-9]\d* ")
    print(scenarios["during_checkpoint_write"][0].notes)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_usr1_after_the_last_epoch_is_ignored_and_the_job_completes(scenarios):
    """Slurm: scancel --signal=USR1 --batch after training (scoring and plots still running); the job
    must end COMPLETED (exit 0, so --dependency=afterok chains go on), not FAILED with 138."""
    sc = scenarios["after_last_epoch"][0]
    log = _finished_equal_to_uninterrupted(scenarios, "after_last_epoch")
    assert "SIGUSR1: checkpoint, then requeue" in log  # the signal did arrive
    assert "finished: exit status 0" in log and "requeued" not in log and "stopped at" not in log, log
    assert sc.jobs.exit_code(sc.job) == "0:0"
    assert (sc.run / "plots" / "roc.png").is_file()


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_sigterm_checkpoints_and_the_last_lines_stay_in_the_job_log(scenarios):
    """Slurm: plain scancel (SIGTERM to the batch script and the trainer, SIGKILL after KillWait); the
    job's --output file gets the last lines, with nothing (like tee) in between to die first."""
    sc, state = _scenario(scenarios, "sigterm")
    assert state == "CANCELLED", sc.output()
    log = sc.output()
    step = int(re.search(r"stopped at epoch \d+, step (\d+):", log).group(1))
    assert "SIGTERM: checkpoint, then stop" in log
    assert f"stopped on SIGTERM at step {step}, checkpoint written; not requeued" in log
    assert "ended: exit status 143" in log.split("stopped on SIGTERM")[1], log
    assert final_state(sc.run)["step"].tolist() == [step]
    assert (sc.run / "slurm.log").read_text() == log  # the run directory's link to the job log


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_a_requeue_loop_without_progress_stops_with_a_reason(scenarios):
    """Slurm: a job whose every cycle gets USR1 before it trains (as from --signal=B:USR1@T with T too
    close to --time) is requeued once, then refused: FAILED with exit 3 and a one-line reason."""
    sc, state = _scenario(scenarios, "never_progressing_loop")
    log = sc.output()
    assert state == "FAILED" and sc.jobs.exit_code(sc.job) == "3:0", log
    assert f"=== job {sc.job} (restart 1)" in log and "restart 2" not in log
    assert "not requeued: no step gained since the restart (still at step 0): the stop request came " \
           "before the first call ended; give the job more --time, a smaller T in --signal=B:USR1@T, " \
           "or a lower train.steps_per_call" in log
    assert "ended: exit status 3" in log


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_requeues_stop_at_run_max_restarts(scenarios):
    """Slurm: SLURM_RESTART_COUNT against --config.run.max_restarts=1; every cycle made progress."""
    sc, state = _scenario(scenarios, "restart_bound")
    log = sc.output()
    assert state == "FAILED" and sc.jobs.exit_code(sc.job) == "3:0", log
    assert log.count("requeued: job") == 1 and "restart 2" not in log
    assert re.search(r"not requeued: the job was requeued 1 times already \(run.max_restarts=1\); "
                     r"checkpoint at step \d+", log), log


# ---- one job, several processes, sweeps ------------------------------------------------------------
@pytest.fixture(scope="module")
def single_run(cluster, tmp_path_factory):
    """One smoke run through slurm/train_gpu.sbatch (shared by the tests that compare with it)."""
    j = Jobs(tmp_path_factory.mktemp("single"))
    try:
        job = j.sbatch("slurm/train_gpu.sbatch", "experiments/ecg5000.py:dense", *SMOKE,
                       f"--config.run.root={j.tmp / 'runs'}")
        state = j.wait(job)
        yield job, state, j.output(job)
    finally:
        j.cancel_all()


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_single_gpu_job_writes_a_complete_run(single_run):
    """Slurm: sbatch with the site defaults (slurm/site.example.sh: JAX_PLATFORMS=cpu without GPUs)."""
    job, state, out = single_run
    assert state == "COMPLETED", out
    run = _run_dir(out)
    assert run.name == job
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["epochs"] == 2 and 0.5 < metrics["test"]["roc_auc"] <= 1.0
    assert {"loss.png", "error_hist.png", "roc.png"} <= {p.name for p in (run / "plots").iterdir()}
    log = (run / "slurm.log").read_text()
    assert f"=== job {job}" in log and "finished: exit status 0" in log and "roc_auc=" in log
    assert "site: slurm/site.example.sh" in log and "JAX_PLATFORMS=cpu" in log


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_one_node_two_task_job_trains_data_parallel_like_one_process(jobs, single_run):
    """Slurm: sbatch --nodes=1 --ntasks-per-node=2 (the node count from the command line), srun."""
    job = jobs.sbatch("slurm/multinode.sbatch", "experiments/ecg5000.py:dense", *SMOKE,
                      f"--config.run.root={jobs.tmp / 'runs'}", opts=("--nodes=1", "--ntasks-per-node=2"))
    assert jobs.wait(job) == "COMPLETED", jobs.output(job)
    assert "processes: 2 on 1 node(s)" in jobs.output(job)
    run = _run_dir(jobs.output(job))
    info = json.loads((run / "run.json").read_text())
    assert info["process_count"] == 2 and len(info["devices"]) == 2
    single = _run_dir(single_run[2])
    assert max_abs_difference(final_state(single)["params"], final_state(run)["params"]) <= allreduce_tolerance(single)
    a, b = (json.loads((r / "metrics.json").read_text())["test"]["roc_auc"] for r in (single, run))
    assert np.isclose(a, b, atol=1e-3)


def _pid_of_rank(job: str, rank: int) -> int | None:
    """The trainer process of SLURM task ``rank`` of ``job`` on this node (read from /proc)."""
    want = {f"SLURM_JOB_ID={job}".encode(), f"SLURM_PROCID={rank}".encode(), b"SLURM_STEP_ID=0"}
    for entry in pathlib.Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and want <= set((entry / "environ").read_bytes().split(b"\0")) \
                    and b"research.train" in (entry / "cmdline").read_bytes():
                return int(entry.name)
        except OSError:
            continue
    return None


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_a_dead_rank_ends_the_job_within_seconds(jobs):
    """Slurm: srun --kill-on-bad-exit=1 (task 1 killed with SIGKILL; task 0 would otherwise wait for
    the distributed heartbeat timeout, ~80 s); KillWait=5 on the local cluster."""
    job = jobs.sbatch("slurm/multinode.sbatch", *SIGNAL_ARGS, "--config.train.batch_size=2",
                      f"--config.run.root={jobs.tmp / 'runs'}", opts=("--nodes=1", "--ntasks-per-node=2"))
    log = lambda: jobs.tmp / "runs" / "ecg5000_dense" / job / "log.jsonl"  # noqa: E731
    _until(lambda: log().exists() and log().read_text().count("\n") >= 1, "the first epoch")
    os.kill(_until(lambda: _pid_of_rank(job, 1), "task 1"), 9)
    killed = time.monotonic()
    state = jobs.wait(job, timeout=120)
    seconds = time.monotonic() - killed
    assert state == "FAILED", jobs.output(job)
    print(f"job ended {seconds:.1f} s after task 1 died")
    assert seconds < 20, f"job ended {seconds:.0f} s after task 1 died"
    assert "requeued" not in jobs.output(job)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_throttled_sweep_runs_at_most_n_tasks_at_once_and_one_summary_job(jobs):
    """Slurm: job array --array=0-2%1 (submit_sweep.sh --max-running 1), --dependency=afterany."""
    sweep = jobs.tmp / "sweep.txt"
    sweep.write_text("# latent size\n--config.model.latent_dim=8\n--config.model.latent_dim=4 --config.seed=1\n")
    root = jobs.tmp / "runs"
    out = subprocess.run(["bash", "slurm/submit_sweep.sh", "--max-running", "1", *LOCAL, str(sweep),
                          "experiments/ecg5000.py:dense", *SMOKE, "--config.train.epochs=1",
                          "--config.plots.enabled=False", f"--config.run.root={root}"],
                         cwd=REPO, env=jobs.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    array, summary = re.search(r"array job (\d+) \(2 tasks, at most 1 at once\), summary job (\d+)", out.stdout).groups()
    jobs.ids += [array, summary]
    assert "ArrayTaskThrottle=1" in jobs.show(array)
    most = 0
    while jobs.state(summary) not in FINAL:
        running = subprocess.run(["squeue", "-h", "-r", "-j", array, "-t", "RUNNING", "-o", "%i"],
                                 capture_output=True, text=True, timeout=30).stdout.split()
        most = max(most, len(running))
        time.sleep(0.5)
    assert jobs.state(summary) == "COMPLETED", (root / "sweeps" / f"{array}_summary.out").read_text()
    assert most == 1  # two CPUs free, one task at a time
    shown = jobs.show(summary)
    assert len(re.findall(r"JobId=", shown)) == 1 and "ArrayJobId" not in shown  # one plain job
    assert "JobName=sweep-summary" in shown and "NumCPUs=1" in shown
    assert "slurm/summary.sbatch" in shown
    for task, (latent, seed) in enumerate([(8, 0), (4, 1)]):
        run = root / "ecg5000_dense" / f"{array}_{task}"
        config = json.loads((run / "config.json").read_text())
        assert (config["model"]["latent_dim"], config["seed"]) == (latent, seed)
        assert (run / "metrics.json").is_file() and (run / "slurm.log").is_file()
    rows = (root / "sweeps" / f"{array}.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",done," in r for r in rows[1:])
    assert "latent_dim=4" in (root / "sweeps" / f"{array}.md").read_text()


# ---- data at scale: ingestion as a job array, a sharded run over two processes ---------------------
SDSS_WAVE = "3600,10400"


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("sdss")
def test_ingest_array_tasks_and_merge_job_equal_one_ingestion(jobs, data_dir):
    """Slurm: job array (--array=0-1) and a merge job with --dependency=afterok (slurm/ingest_array.sbatch)."""
    from research.data import sdss_shards, shards

    out = jobs.tmp / "shards"
    sub = subprocess.run(["bash", "slurm/ingest_array.sbatch", *LOCAL, "2", str(data_dir / "sdss"), str(out),
                          "--wave-range", SDSS_WAVE, "--shard-size", "16"],
                         cwd=REPO, env=jobs.env, capture_output=True, text=True, timeout=60)
    assert sub.returncode == 0, sub.stderr
    array, merge = re.search(r"array job (\d+) \(2 tasks\), merge job (\d+)", sub.stdout).groups()
    jobs.ids += [array, merge]
    logs = lambda: "\n".join(p.read_text() for p in sorted((out / "slurm").glob("*.out")))  # noqa: E731
    assert jobs.wait(merge) == "COMPLETED", logs()
    assert jobs.state(array) == "COMPLETED"
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["num_tasks"] == 2 and manifest["n_spectra"] == 46
    ref_dir = jobs.tmp / "one"
    sdss_shards.ingest_task(data_dir / "sdss", ref_dir, wave_range=(3600.0, 10400.0), shard_size=16)
    shards.merge(ref_dir)
    got, ref = shards.Shards(out), shards.Shards(ref_dir)
    a, b = got.read(), ref.read()
    for k in ("flux", "ivar", "mask"):
        assert np.array_equal(a[k], b[k]), k
    assert got.column("id").tolist() == ref.column("id").tolist()


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("sdss")
def test_two_task_sharded_job_reads_disjoint_rows_and_equals_one_process(jobs, data_dir):
    """Slurm: sbatch --nodes=1 --ntasks-per-node=2, srun; data.format=sharded (each process its own rows)."""
    from research.data import sdss_shards, shards
    from research.stream_score import read_parts

    folder = jobs.tmp / "shards"
    sdss_shards.ingest_task(data_dir / "sdss", folder, wave_range=(3600.0, 10400.0), shard_size=16)
    shards.merge(folder)
    args = ["experiments/sdss_cnn_skip.py", *SMOKE, "--config.data.format=sharded", f"--config.data.path={folder}",
            "--config.model.features=(4, 8)", "--config.model.latent_dim=8", "--config.train.batch_size=8",
            "--config.train.eval_batch_size=8", "--config.plots.enabled=False", f"--config.run.root={jobs.tmp / 'runs'}"]
    two = jobs.sbatch("slurm/multinode.sbatch", *args, opts=("--nodes=1", "--ntasks-per-node=2"))
    one = jobs.sbatch("slurm/train_gpu.sbatch", *args)
    for job in (two, one):
        assert jobs.wait(job) == "COMPLETED", jobs.output(job)
    assert "processes: 2 on 1 node(s)" in jobs.output(two)
    runs = {job: _run_dir(jobs.output(job)) for job in (two, one)}
    assert json.loads((runs[two] / "run.json").read_text())["process_count"] == 2
    # every process scored its own rows: two sets of parts, no id in both, together the one-process table
    parts = sorted((runs[two] / "scores").glob("scores-*.parquet"))
    by_process = {}
    for p in parts:
        by_process.setdefault(p.name.split("-")[1], set()).update(pq_ids(p))
    assert len(by_process) == 2 and not set.intersection(*by_process.values())
    a, b = read_parts(runs[two] / "scores"), read_parts(runs[one] / "scores")
    assert a.column("id").to_pylist() == b.column("id").to_pylist()
    np.testing.assert_allclose(a.column("score").to_numpy(), b.column("score").to_numpy(), rtol=1e-4)
    assert max_abs_difference(final_state(runs[one])["params"], final_state(runs[two])["params"]) <= allreduce_tolerance(runs[one])


def pq_ids(path) -> list[str]:
    import pyarrow.parquet as pq

    return pq.read_table(path, columns=["id"]).column("id").to_pylist()
