"""Runs every benchmark side by side on this machine: the raw JSON, then BENCHMARKS.md from it (bench/report.py).

    pip install -r bench/requirements.txt
    python -m bench.run                      # everything, on the GPU when one is visible
    python -m bench.run --items pyod --ecg-config experiments/ecg5000.py:ensemble
    python -m bench.run --items regions --merge   # re-measure one item, keep the others from the JSON

Each measurement is its own worker process (``python -m bench.<worker>``), so every figure carries its
own peak RSS and no framework's idle thread pool competes with the one being timed. Throughput
workers of the compared frameworks, and ensemble workers of each K, alternate round after round, so
that load from other users of the machine falls on all of them alike; the figures are medians over
all timed epochs of all rounds.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import RESULT_PREFIX
from bench.report import write_report
from bench.specs import split_spec
from research.paths import REPO_ROOT

ITEMS = ("peak", "throughput", "ensembles", "pyod", "regions")
PACKAGES = ("jax", "jaxlib", "flax", "optax", "numpy", "scikit-learn", "torch", "pyod")


# ---- running workers ---------------------------------------------------------------------------
def worker(module: str, *args, timeout: float = 1800, env: dict | None = None) -> dict:
    """Runs ``python -m module args``; returns its result line plus wall seconds and peak RSS."""
    cmd = [sys.executable, "-m", module, *map(str, args)]
    env = dict(os.environ, PYTHONUNBUFFERED="1", **(env or {}))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=out, stderr=err)
        try:
            _, status, usage = _wait4(proc.pid, timeout)
        except TimeoutError:
            proc.kill()
            os.waitpid(proc.pid, 0)
            proc.returncode = -9
            return {"error": f"timed out after {timeout:.0f} s", "cmd": " ".join(cmd[2:])}
        proc.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - start
        out.seek(0)
        err.seek(0)
        lines = [line for line in out.read().splitlines() if line.startswith(RESULT_PREFIX)]
        if proc.returncode != 0 or not lines:
            tail = err.read().strip().splitlines()[-3:]
            return {"error": f"exit {proc.returncode}: {' | '.join(tail)}", "cmd": " ".join(cmd[2:])}
    result = json.loads(lines[-1][len(RESULT_PREFIX):])
    result.update(wall_seconds=wall, peak_rss_mib=usage.ru_maxrss / 1024, cmd=" ".join(cmd[2:]))
    print(f"  {result['cmd']}: {wall:.1f} s, {result['peak_rss_mib']:.0f} MiB", flush=True)
    return result


def _wait4(pid: int, timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return done, status, usage
        if time.monotonic() > deadline:
            raise TimeoutError
        time.sleep(0.05)


def script(module: str, timeout: float = 1800) -> dict:
    """A benchmark that writes its own table (``python -m module``): wall seconds, peak RSS, exit status."""
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", module], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _, status, usage = _wait4(proc.pid, timeout)
    except TimeoutError:
        proc.kill()
        return {"error": f"timed out after {timeout:.0f} s"}
    code = os.waitstatus_to_exitcode(status)
    proc.returncode = code
    result = {"wall_seconds": time.perf_counter() - start, "peak_rss_mib": usage.ru_maxrss / 1024, "exit": code}
    if code:
        result["error"] = (proc.stderr.read().decode(errors="replace").strip().splitlines() or ["?"])[-1]
    return result


# ---- the items ---------------------------------------------------------------------------------
def _pooled(results: list[dict], row: dict) -> tuple[dict, dict | None]:
    """``row`` completed from the alternating rounds of one worker: the error of the first round when
    none succeeded, else the median over all timed epochs of the rounds that did (and of their product
    timings), the peak RSS and the command; with the first successful result for the fixed fields."""
    ok = [r for r in results if "error" not in r]
    if not ok:
        return {**row, "error": results[0]["error"]}, None
    times = [t for r in ok for t in r["times"]]
    products = [r["matmul_seconds_per_step"] for r in ok if r.get("matmul_seconds_per_step")]
    return {**row, "epochs_timed": len(times), "median_epoch_s": statistics.median(times),
            "warmup_s": statistics.median(r["warmup_seconds"] for r in ok), "rounds": len(ok),
            "flops_per_step": ok[0].get("flops_per_step"),
            "matmul_seconds_per_step": statistics.median(products) if products else None,
            "peak_rss_mib": max(r["peak_rss_mib"] for r in ok), "cmd": ok[0]["cmd"]}, ok[0]


def run_throughput(configs: list[str], device: str, rounds: int, quick: bool) -> list[dict]:
    timing = ["--min-epochs", 3 if quick else 5, "--min-seconds", 0.5 if quick else 2.0]
    variants = [("jax", []), ("torch", ["--threads", 2])]
    if device == "cpu":
        variants.append(("torch", ["--threads", 1]))
    rows = []
    for config in configs:
        runs = {i: [] for i in range(len(variants))}
        path, overrides = split_spec(config)
        for _ in range(rounds):
            for i, (fw, extra) in enumerate(variants):
                runs[i].append(worker("bench.throughput", "--config", path, *overrides, "--framework", fw,
                                      "--device", device, *extra, *timing))
        for i, (fw, extra) in enumerate(variants):
            row, first = _pooled(runs[i], {"config": config, "framework": fw})
            if first is not None:
                row.update(threads=first.get("threads"), version=first["version"], batch_size=first["batch_size"],
                           samples_per_epoch=first["samples_per_epoch"],
                           samples_per_s=first["samples_per_epoch"] / row["median_epoch_s"])
            rows.append(row)
    return rows


def run_ensembles(configs: list[str], device: str, rounds: int, quick: bool) -> list[dict]:
    """K = 1, 4, 16 workers alternating for ``rounds`` rounds (so load on shared cores hits every K alike)."""
    timing = ["--min-epochs", 3 if quick else 5, "--min-seconds", 0.5 if quick else 2.0]
    rows = []
    for config in configs:
        runs = {k: [] for k in (1, 4, 16)}
        path, overrides = split_spec(config)
        for _ in range(rounds):
            for k in runs:
                runs[k].append(worker("bench.ensembles", "--config", path, *overrides, "--members", k,
                                      "--device", device, *timing))
        for k, results in runs.items():
            row, first = _pooled(results, {"config": config, "members": k})
            if first is not None:
                row["steps_per_epoch"] = first["steps_per_epoch"]
            rows.append(row)
    return rows


def run_pyod(config: str, device: str, quick: bool) -> list[dict]:
    from bench.common import load_config

    epochs = int(load_config(str(REPO_ROOT / config)).train.epochs)
    jobs = [("project", []), ("AutoEncoder", []), ("IForest", []), ("PCA", [])]
    if not quick:
        jobs.insert(2, ("AutoEncoder", ["--epochs", epochs]))
    rows = []
    for detector, extra in jobs:
        r = worker("bench.pyod_compare", "--config", config, "--detector", detector, "--device", device, *extra)
        rows.append(dict(r, detector=detector))
    # the same project run twice more with JAX's persistent compilation cache: a first and a repeated run
    with tempfile.TemporaryDirectory() as cache:
        env = {"JAX_COMPILATION_CACHE_DIR": cache, "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
        for label in ("compilation cache, first run", "compilation cache, repeated run"):
            r = worker("bench.pyod_compare", "--config", config, "--detector", "project", "--device", device, env=env)
            rows.append(dict(r, detector="project", note=label))
    return rows


def run_regions() -> dict:
    result = script("bench.regions")
    md = REPO_ROOT / "bench" / "results" / "regions.md"
    if md.exists():
        result["markdown"] = md.read_text().strip()
    return result


# ---- the machine -------------------------------------------------------------------------------
def machine_info(device: str) -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if pathlib.Path("/proc/cpuinfo").exists() else platform.processor()
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            versions[name] = "not installed"
    info = {"cpu": cpu, "cores": os.cpu_count(), "python": platform.python_version(), "os": platform.platform(),
            "memory_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2 ** 30, 1),
            "versions": versions, "device": device, "gpu": gpu_name()}
    try:
        info["git"] = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                                     text=True).stdout.strip()
    except OSError:
        info["git"] = "?"
    return info


def gpu_name() -> str | None:
    if not shutil.which("nvidia-smi"):
        return None
    out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True)
    return out.stdout.strip().splitlines()[0] if out.returncode == 0 and out.stdout.strip() else None


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", default=",".join(ITEMS), help=f"comma-separated subset of {ITEMS}")
    p.add_argument("--ecg-config", default="experiments/ecg5000.py:dense", help="the project's best ECG5000 config")
    p.add_argument("--throughput-configs", help="comma-separated config files, each optionally followed by "
                   ":key=value overrides", default="experiments/fashion_mnist.py:dense,"
                   "experiments/fashion_mnist.py:dense:train.batch_size=32,experiments/ecg5000.py:conv1d")
    p.add_argument("--ensemble-configs", help="comma-separated config specs for item 2 (as --throughput-configs); "
                   "default: the --ecg-config, ecg5000_conv1d, and ecg5000_conv1d with train.member_chunk=1")
    p.add_argument("--device", choices=("auto", "cpu", "gpu"), default="auto")
    p.add_argument("--rounds", type=int, default=2, help="alternating rounds per throughput and ensemble comparison")
    p.add_argument("--quick", action="store_true", help="fewer epochs and rows: a smoke run of the script")
    p.add_argument("--merge", action="store_true",
                   help="keep the items not re-run from the existing JSON (each keeps its own date)")
    p.add_argument("--out", default="BENCHMARKS.md")
    p.add_argument("--json", default="bench/results/benchmarks.json")
    args = p.parse_args()
    items = [i.strip() for i in args.items.split(",") if i.strip()]
    unknown = sorted(set(items) - set(ITEMS))
    if unknown:
        p.error(f"unknown items {unknown}; choose from {ITEMS}")
    device = args.device if args.device != "auto" else ("gpu" if gpu_name() else "cpu")
    start = time.perf_counter()
    results = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "args": vars(args), "argv": sys.argv[1:],
               "machine": machine_info(device), "load": {"start": [round(x, 2) for x in os.getloadavg()]},
               "json": args.json}
    throughput_configs = [c for c in args.throughput_configs.split(",") if c]
    if args.ecg_config not in throughput_configs:
        throughput_configs.append(args.ecg_config)
    conv1d = "experiments/ecg5000.py:conv1d"
    ensemble_configs = ([c for c in args.ensemble_configs.split(",") if c] if args.ensemble_configs else
                        list(dict.fromkeys([args.ecg_config, conv1d, f"{conv1d}:train.member_chunk=1"])))
    steps = {
        "peak": lambda: worker("bench.peak", "--device", device),
        "throughput": lambda: run_throughput(throughput_configs, device, args.rounds, args.quick),
        "ensembles": lambda: run_ensembles(ensemble_configs, device, args.rounds, args.quick),
        "pyod": lambda: run_pyod(args.ecg_config, device, args.quick),
        "regions": run_regions,
    }
    results["item_dates"] = {}
    previous = {}
    if args.merge and (REPO_ROOT / args.json).is_file():
        previous = json.loads((REPO_ROOT / args.json).read_text())
    for item in ITEMS:
        if item in items:
            print(f"{item}...", flush=True)
            results[item] = steps[item]()
            results["item_dates"][item] = results["date"]
        elif item in previous:
            results[item] = previous[item]
            results["item_dates"][item] = previous.get("item_dates", {}).get(item, previous["date"])
    results["load"]["end"] = [round(x, 2) for x in os.getloadavg()]
    results["seconds"] = time.perf_counter() - start
    json_path = REPO_ROOT / args.json
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(results, indent=1))
    write_report(REPO_ROOT / args.out, results, sys.argv[1:])
    print(f"wrote {args.out} and {args.json} ({results['seconds']:.0f} s)")


if __name__ == "__main__":
    main()
