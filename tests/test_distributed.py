"""Data parallelism: batches split over all devices of all processes give the parameters of
single-device training (within float tolerance), with and without an ensemble (vmap) axis."""

import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from conftest import REPO
from research import distributed
from run_state import allreduce_tolerance, final_state, max_abs_difference

# Runs with 4 forced host devices (XLA_FLAGS must be set before JAX starts, hence a subprocess).
FOUR_DEVICES = r"""
import json, sys
import jax, ml_collections, numpy as np
from research.data.ecg5000 import read_ucr
from research.models import build_model
from research.training import Trainer, fit, make_mesh, make_optimizer

labels, x = read_ucr(__import__("pathlib").Path(sys.argv[1]) / "ECG5000_TRAIN.txt")
data = {"x": x[labels == 1][:256]}
cfg = ml_collections.ConfigDict({"epochs": 3, "learning_rate": 2e-3, "schedule": "cosine"})
model = build_model({"name": "dense", "hidden": (32,), "latent_dim": 8})
out = {"devices": len(jax.devices())}
for seeds in ([0, 1],):
    params, hlo = [], ""
    for mesh in (make_mesh(jax.devices()[:1]), make_mesh()):
        trainer = Trainer(model, make_optimizer(cfg, 256 // 32), batch_size=32, mesh=mesh)
        d = trainer.put(data)
        state = trainer.init(seeds, (140,))
        if mesh.devices.size > 1:
            hlo = trainer._epoch.lower(state, d, d).compile().as_text()
        state = fit(trainer, state, d, d, 3)
        params.append(jax.tree.map(np.asarray, jax.device_get(state.params)))
    diff = max(float(np.max(np.abs(a - b))) for a, b in zip(jax.tree.leaves(params[0]), jax.tree.leaves(params[1])))
    scale = max(float(np.max(np.abs(a))) for a in jax.tree.leaves(params[0]))
    out[len(seeds)] = {"max_diff": diff, "scale": scale, "all_reduce": "all-reduce" in hlo,
                       "members_differ": len(seeds) > 1 and not np.allclose(
                           params[1]["params"]["latent"]["kernel"][0], params[1]["params"]["latent"]["kernel"][1])}
print("RESULT " + json.dumps(out))
"""


def test_mode_follows_the_environment():
    assert distributed.mode({}) is None
    assert distributed.mode({"SLURM_JOB_ID": "7", "SLURM_NTASKS": "2"}) is None  # batch shell, no srun
    assert distributed.mode({"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "1"}) is None
    assert distributed.mode({"SLURM_JOB_ID": "7", "SLURM_STEP_NUM_TASKS": "4"}) == "slurm"
    assert distributed.mode({"JAX_COORDINATOR_ADDRESS": "127.0.0.1:1234"}) == "explicit"
    assert distributed.maybe_initialize({}) is False


@pytest.mark.slow
def test_four_devices_equal_one_device_for_an_ensemble(ecg_dir):
    env = dict(os.environ, JAX_PLATFORMS="cpu", XLA_FLAGS="--xla_force_host_platform_device_count=4")
    proc = subprocess.run([sys.executable, "-c", FOUR_DEVICES, str(ecg_dir)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.split("RESULT ", 1)[1])
    assert out["devices"] == 4
    ensemble = out["2"]  # two members (the vmap axis), each batch split over the 4 devices
    assert ensemble["all_reduce"], "the 4-device epoch has no all-reduce: batches were not split"
    assert ensemble["max_diff"] <= 1e-5 * max(1.0, ensemble["scale"]), out
    assert ensemble["members_differ"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_equal_one_process(ecg_dir, tmp_path):
    args = [sys.executable, "-m", "research.train", "--config=experiments/ecg5000.py:dense",
            "--config.data.limit=256", "--config.train.epochs=3", "--config.plots.enabled=False",
            f"--config.run.root={tmp_path}"]
    base = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1")
    base.pop("XLA_FLAGS", None)
    coordinator = f"127.0.0.1:{_free_port()}"
    logs = [tmp_path / f"process{i}.log" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, "-X", "faulthandler"] + args[1:] + ["--config.run.name=two"],
                              cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT,
                              env=dict(base, JAX_COORDINATOR_ADDRESS=coordinator, JAX_NUM_PROCESSES="2",
                                       JAX_PROCESS_ID=str(i)))
             for i, log in enumerate(logs)]
    try:
        single = subprocess.run(args + ["--config.run.name=one"], cwd=REPO, env=base, capture_output=True,
                                text=True, timeout=300)
        for p in procs:
            p.wait(timeout=300)
    except subprocess.TimeoutExpired:
        for p in procs:
            p.send_signal(signal.SIGABRT)  # faulthandler prints where each process is stuck
        time.sleep(2)
        pytest.fail("two-process run timed out:\n" + "\n".join(log.read_text()[-4000:] for log in logs))
    finally:
        for p in procs:
            p.kill()
    assert single.returncode == 0, single.stderr[-3000:]
    for p, log in zip(procs, logs):
        assert p.returncode == 0, log.read_text()[-3000:]
    run = json.loads((tmp_path / "ecg5000_dense" / "two" / "run.json").read_text())
    assert run["process_count"] == 2 and len(run["devices"]) == 2

    one, two = final_state(tmp_path / "ecg5000_dense" / "one"), final_state(tmp_path / "ecg5000_dense" / "two")
    assert one["epoch"].tolist() == two["epoch"].tolist() == [3]
    assert max_abs_difference(one["params"], two["params"]) <= allreduce_tolerance(tmp_path / "ecg5000_dense" / "one")
    m1, m2 = (json.loads((tmp_path / "ecg5000_dense" / n / "metrics.json").read_text()) for n in ("one", "two"))
    assert np.isclose(m1["test"]["roc_auc"], m2["test"]["roc_auc"], atol=1e-3)
