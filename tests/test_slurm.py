"""The batch scripts in slurm/ on a real (one-node, local) SLURM cluster, and the job naming they rely on.

The cluster comes from slurm/setup_local_cluster.sh (Debian's slurmctld/slurmd/munge). The tests skip
only when that cannot run here: not root, or apt unreachable. Every job is bounded in time and
cancelled if a test ends early; daemons started by this module are stopped at the end.
"""

import json
import os
import pathlib
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from research import slurm
from run_state import assert_bitwise_equal, final_state, max_abs_difference

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
        self.env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHON=sys.executable, PYTHONUNBUFFERED="1")
        self.env.pop("XLA_FLAGS", None)

    def sbatch(self, script: str, *args: str, opts: tuple = ()) -> str:
        """``sbatch [opts] script args``; returns the job id."""
        out = subprocess.run(["sbatch", "--parsable", *LOCAL, f"--output={self.tmp}/%j.out", *opts, script, *args],
                             cwd=REPO, env=self.env, capture_output=True, text=True, timeout=30)
        assert out.returncode == 0, out.stderr
        self.ids.append(out.stdout.strip().split(";")[0])
        return self.ids[-1]

    def state(self, job: str) -> str:
        out = subprocess.run(["scontrol", "show", "job", job], capture_output=True, text=True, timeout=30).stdout
        states = re.findall(r"JobState=(\w+)", out)
        return states[0] if len(set(states)) == 1 else ",".join(sorted(set(states)))

    def wait(self, job: str, timeout: float = JOB_TIMEOUT, until=FINAL) -> str:
        deadline = time.monotonic() + timeout
        while (state := self.state(job)) not in until:
            assert time.monotonic() < deadline, f"job {job} still {state} after {timeout} s:\n{self.output(job)}"
            time.sleep(1)
        return state

    def output(self, job: str) -> str:
        path = self.tmp / f"{job}.out"
        return path.read_text() if path.exists() else "(no output file)"

    def cancel_all(self):
        if self.ids:
            subprocess.run(["scancel", *self.ids], capture_output=True, timeout=30)


@pytest.fixture
def jobs(cluster, tmp_path):
    j = Jobs(tmp_path)
    yield j
    j.cancel_all()


def _run_dir(job_output: str) -> pathlib.Path:
    found = re.findall(r"run directory: (\S+)", job_output)
    assert found, job_output
    return REPO / found[0]


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
    job, state, out = single_run
    assert state == "COMPLETED", out
    run = _run_dir(out)
    assert run.name == job
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["train"]["epochs"] == 2 and 0.5 < metrics["test"]["roc_auc"] <= 1.0
    assert {"loss.png", "error_hist.png", "roc.png"} <= {p.name for p in (run / "plots").iterdir()}
    log = (run / "slurm.log").read_text()
    assert f"=== job {job}" in log and "exit status 0" in log and "roc_auc=" in log


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_two_task_srun_job_trains_data_parallel_like_one_process(jobs, single_run):
    job = jobs.sbatch("slurm/multinode.sbatch", "experiments/ecg5000.py:dense", *SMOKE,
                      f"--config.run.root={jobs.tmp / 'runs'}", opts=("--nodes=1", "--ntasks-per-node=2"))
    assert jobs.wait(job) == "COMPLETED", jobs.output(job)
    run = _run_dir(jobs.output(job))
    info = json.loads((run / "run.json").read_text())
    assert info["process_count"] == 2 and len(info["devices"]) == 2
    single = _run_dir(single_run[2])
    assert max_abs_difference(final_state(single)["params"], final_state(run)["params"]) <= 1e-5
    a, b = (json.loads((r / "metrics.json").read_text())["test"]["roc_auc"] for r in (single, run))
    assert np.isclose(a, b, atol=1e-3)


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_array_sweep_makes_one_run_per_line_and_a_summary(jobs):
    sweep = jobs.tmp / "sweep.txt"
    sweep.write_text("# latent size\n--config.model.latent_dim=8\n--config.model.latent_dim=4 --config.seed=1\n")
    root = jobs.tmp / "runs"
    out = subprocess.run(["bash", "slurm/submit_sweep.sh", *LOCAL, str(sweep), "experiments/ecg5000.py:dense",
                          *SMOKE, "--config.plots.enabled=False", f"--config.run.root={root}"],
                         cwd=REPO, env=jobs.env, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    array, summary = re.search(r"array job (\d+) .*summary job (\d+)", out.stdout).groups()
    jobs.ids += [array, summary]
    assert jobs.wait(summary, timeout=2 * JOB_TIMEOUT) == "COMPLETED", (root / "sweeps" / f"{array}_summary.out").read_text()
    assert jobs.state(array) == "COMPLETED"
    for task, (latent, seed) in enumerate([(8, 0), (4, 1)]):
        run = root / "ecg5000_dense" / f"{array}_{task}"
        config = json.loads((run / "config.json").read_text())
        assert (config["model"]["latent_dim"], config["seed"]) == (latent, seed)
        assert (run / "metrics.json").is_file() and (run / "slurm.log").is_file()
    rows = (root / "sweeps" / f"{array}.csv").read_text().splitlines()
    assert len(rows) == 3 and all(",done," in r for r in rows[1:])
    assert "latent_dim=4" in (root / "sweeps" / f"{array}.md").read_text()


@pytest.mark.slow
@pytest.mark.slurm
@pytest.mark.data("ecg5000")
def test_usr1_checkpoints_requeues_and_resumes_to_the_uninterrupted_result(jobs):
    epochs = 300
    args = ["experiments/ecg5000.py:dense", "--config.data.limit=256", "--config.train.batch_size=8",
            f"--config.train.epochs={epochs}", "--config.train.checkpoint_every=0", "--config.plots.enabled=False",
            f"--config.run.root={jobs.tmp / 'runs'}"]
    interrupted = jobs.sbatch("slurm/train_gpu.sbatch", *args)
    reference = jobs.sbatch("slurm/train_gpu.sbatch", *args)
    run = jobs.tmp / "runs" / "ecg5000_dense" / interrupted
    deadline = time.monotonic() + JOB_TIMEOUT
    while not ((run / "log.jsonl").exists() and (run / "log.jsonl").read_text().count("\n") >= 1):
        assert jobs.state(interrupted) in ("PENDING", "RUNNING"), jobs.output(interrupted)
        assert time.monotonic() < deadline, "no epoch finished"
        time.sleep(0.1)
    subprocess.run(["scancel", "--signal=USR1", "--batch", interrupted], check=True, timeout=30)
    jobs.wait(interrupted, until={"PENDING", "REQUEUED", *FINAL})
    assert jobs.state(interrupted) != "COMPLETED", "finished before the signal took effect:\n" + jobs.output(interrupted)
    # A requeued job waits cred_expire (20 s on the local cluster) before it may start again.
    assert jobs.wait(interrupted) == "COMPLETED", jobs.output(interrupted)
    assert jobs.wait(reference) == "COMPLETED", jobs.output(reference)

    log = (run / "slurm.log").read_text()
    stopped = int(re.search(r"stopped at epoch (\d+):", log).group(1))
    assert 1 <= stopped < epochs and "requeueing job" in log, log
    assert f"=== job {interrupted} (restart 1)" in log and f"resumed from epoch {stopped}" in log, log
    ref = jobs.tmp / "runs" / "ecg5000_dense" / reference
    a, b = final_state(ref), final_state(run)
    assert a["epoch"].tolist() == [epochs]
    assert_bitwise_equal(a, b)
    assert (ref / "scores.csv").read_text() == (run / "scores.csv").read_text()
