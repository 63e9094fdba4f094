"""Start-up and the persistent compilation cache: the main job's wall time without the cache, on its
first run (empty cache) and on its second, side by side; and every experiment config's time to
first epoch, cold (empty cache) and warm (second run).

    python -m bench.startup                       # everything: about 10 minutes on 2 shared cores
    python -m bench.startup --rounds 5 --no-configs
    python -m bench.startup --configs experiments/rf.py:dense experiments/sdss_cnn_skip.py

Every run is its own process with its own cache directory under a temporary folder, so "cold"
really compiles and nothing of the user's cache is read or changed. The three kinds of main-job run
alternate round after round, so load from other users of the machine falls on all of them alike;
figures are medians over rounds. The per-config runs are stopped as soon as ``run.json`` holds the
start-up record (after the first epoch). Results go to ``bench/results/startup.json`` and the
*Start-up* section of ``BENCHMARKS.md`` (replaced in place; the rest of the file is kept).
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parent.parent
MAIN = "experiments/ecg5000.py:ensemble"
BEGIN, END = "<!-- startup:begin -->", "<!-- startup:end -->"
TARGET_SECONDS = 10.0


def _command(config: str, root: pathlib.Path, name: str, cache: str) -> list[str]:
    return [sys.executable, "-m", "research.train", f"--config={config}", f"--config.run.root={root}",
            f"--config.run.name={name}", f"--config.run.compile_cache={cache}"]


def _run_json(root: pathlib.Path, name: str) -> dict | None:
    for path in root.glob(f"*/{name}/run.json"):
        try:
            return json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):  # being written
            return None
    return None


def timed_run(config: str, root: pathlib.Path, name: str, cache: str, until_first_epoch: bool = False,
              timeout: float = 1800) -> dict:
    """One run in its own process: wall seconds and its ``run.json`` (start-up and cache record)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
               PYTHONUNBUFFERED="1")
    env.pop("RESEARCH_COMPILE_CACHE", None)
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(_command(config, root, name, cache), cwd=REPO, env=env, stdout=out,
                                stderr=subprocess.STDOUT)
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() - start > timeout:
                proc.kill()
                raise TimeoutError(f"{config}: no result in {timeout:.0f} s")
            if until_first_epoch and "startup" in (_run_json(root, name) or {}):
                proc.send_signal(signal.SIGKILL)
                _, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.05)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    record = _run_json(root, name) or {}
    if "startup" not in record:
        raise RuntimeError(f"{config} failed (exit {proc.returncode}):\n{text[-2000:]}")
    return {"wall_seconds": round(wall, 2), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 2),
            "startup": record["startup"],
            "cache": {k: v for k, v in record.get("compile_cache", {}).items() if k != "programs"} or None}


def main_job(config: str, rounds: int, tmp: pathlib.Path) -> dict:
    """Rounds of (no cache, first run on an empty cache, second run): walls and time to first epoch."""
    runs: dict[str, list[dict]] = {"no_cache": [], "first": [], "second": []}
    for r in range(rounds):
        cache = tmp / f"main_cache_{r}"
        runs["no_cache"].append(timed_run(config, tmp / "runs", f"main_off_{r}", "off"))
        runs["first"].append(timed_run(config, tmp / "runs", f"main_first_{r}", str(cache)))
        runs["second"].append(timed_run(config, tmp / "runs", f"main_second_{r}", str(cache)))
        print(f"[main job] round {r + 1}/{rounds}: " + ", ".join(
            f"{k} {v[-1]['wall_seconds']:.1f} s" for k, v in runs.items()), file=sys.stderr, flush=True)
    summary = {}
    for kind, rs in runs.items():
        summary[kind] = {
            "wall_seconds": statistics.median(r["wall_seconds"] for r in rs),
            "cpu_seconds": statistics.median(r["cpu_seconds"] for r in rs),
            "to_first_epoch_seconds": statistics.median(r["startup"]["to_first_epoch_seconds"] for r in rs),
            "compile_seconds": statistics.median(r["startup"]["compile_seconds"] for r in rs),
            "imports_seconds": statistics.median(r["startup"]["imports_seconds"] for r in rs),
            "programs_from_cache": rs[-1]["cache"]["hits"] if rs[-1]["cache"] else 0,
            "programs": (rs[-1]["cache"]["hits"] + rs[-1]["cache"]["misses"]) if rs[-1]["cache"] else 0,
            "walls": [r["wall_seconds"] for r in rs]}
    return {"config": config, "rounds": rounds, "runs": summary, "load_end": _load()}


def per_config(configs: list[str], tmp: pathlib.Path) -> list[dict]:
    rows = []
    for i, config in enumerate(configs):
        cache = str(tmp / f"cache_{i}")
        cold = timed_run(config, tmp / "runs", f"cold_{i}", cache, until_first_epoch=True)
        warm = timed_run(config, tmp / "runs", f"warm_{i}", cache, until_first_epoch=True)
        rows.append({"config": config, "cold": cold["startup"], "warm": warm["startup"]})
        print(f"[first epoch] {config}: cold {cold['startup']['to_first_epoch_seconds']:.1f} s, "
              f"warm {warm['startup']['to_first_epoch_seconds']:.1f} s", file=sys.stderr, flush=True)
    return rows


def all_configs() -> list[str]:
    """Every experiment config, each variant of a file with ``VARIANTS`` on its own."""
    sys.path.insert(0, str(REPO))
    out = []
    for f in sorted((REPO / "experiments").glob("*.py")):
        if f.name.startswith("_"):
            continue
        spec = importlib.util.spec_from_file_location(f"experiments.{f.stem}", f)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        variants = getattr(module, "VARIANTS", None)
        out += [f"experiments/{f.name}:{v}" for v in variants] if variants else [f"experiments/{f.name}"]
    return out


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def markdown(result: dict) -> str:
    m = result.get("main")
    lines = [BEGIN, "## Start-up and the compilation cache", "",
             f"Generated by `python -m bench.startup` on {result['date']} (commit {result['commit']}); raw numbers: "
             f"`bench/results/startup.json`. Load average (1/5/15 min) at start {result['load_start']}, at end "
             f"{result['load_end']} on {os.cpu_count()} cores: absolute times are those of a shared machine, the "
             "comparisons come from runs alternating in one session.", ""]
    if m:
        r = m["runs"]
        second = r["second"]["wall_seconds"]
        lines += [
            f"**Main job** (`python -m research.train --config={m['config']}`), median of {m['rounds']} rounds "
            f"(load average {m['load_start']} before, {m['load_end']} after), "
            "each round: without the cache, first run on an empty cache, second run. Wall = the whole process "
            "(imports, data, compiling, 100 epochs, scoring, plots, checkpoints, event files); CPU = its user + system "
            "time.", "",
            "| run | wall (s) | CPU (s) | time to first epoch (s) | of which imports (s) | compiling (s) | programs from the cache |",
            "|---|---|---|---|---|---|---|"]
        for kind, label in (("no_cache", "without the cache (`run.compile_cache=off`)"),
                            ("first", "first run (empty cache)"), ("second", "second run")):
            x = r[kind]
            lines.append(f"| {label} | {x['wall_seconds']:.1f} | {x['cpu_seconds']:.1f} | {x['to_first_epoch_seconds']:.1f} | "
                         f"{x['imports_seconds']:.1f} | {x['compile_seconds']:.2f} | "
                         f"{x['programs_from_cache']} of {x['programs']} |")
        lines += ["", f"Second run / first run: {second / r['first']['wall_seconds']:.2f}× wall, "
                  f"{r['second']['cpu_seconds'] / r['first']['cpu_seconds']:.2f}× CPU time (user + system, less "
                  "sensitive to other users' load than wall time), "
                  f"{r['second']['to_first_epoch_seconds'] / r['first']['to_first_epoch_seconds']:.2f}× time to "
                  f"first epoch. Target: second run ≤ {TARGET_SECONDS:.0f} s on 2 cores: "
                  f"**{'met' if second <= TARGET_SECONDS else 'not met'}** ({second:.1f} s at the load above). "
                  "Compiling here is tracing and lowering (not cached: JAX traces every run) plus XLA's compile or "
                  "the cache read.", ""]
    if result.get("configs"):
        lines += ["**Time to first epoch, every experiment config** (cold: empty cache; warm: the second run; "
                  f"load average {result['configs_load_start']} before, {result['configs_load_end']} after). "
                  "Each run is stopped once its first epoch is recorded.", "",
                  "| config | cold: to first epoch (s) | imports | data | setup | first epoch | compiling | warm: to first epoch (s) | compiling | warm / cold |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for row in result["configs"]:
            c, w = row["cold"], row["warm"]
            lines.append(
                f"| `{row['config']}` | {c['to_first_epoch_seconds']:.1f} | {c['imports_seconds']:.1f} | "
                f"{c['data_seconds']:.1f} | {c['setup_seconds']:.1f} | {c['first_epoch_seconds']:.1f} | "
                f"{c['compile_seconds']:.1f} | {w['to_first_epoch_seconds']:.1f} | {w['compile_seconds']:.1f} | "
                f"{w['to_first_epoch_seconds'] / c['to_first_epoch_seconds']:.2f}× |")
        lines.append("")
    lines.append(END)
    return "\n".join(lines) + "\n"


def write_section(section: str, path: pathlib.Path) -> None:
    """Replaces the marked section of BENCHMARKS.md (or appends it) and keeps everything else."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + section.rstrip("\n") + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n" + section
    path.write_text(text)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--main", default=MAIN, help="the main job's config")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--no-main", action="store_true")
    p.add_argument("--no-configs", action="store_true")
    p.add_argument("--configs", nargs="*", help="configs for time to first epoch (default: every experiments/*.py)")
    p.add_argument("--output", default=str(REPO / "bench" / "results" / "startup.json"))
    p.add_argument("--benchmarks", default=str(REPO / "BENCHMARKS.md"))
    p.add_argument("--keep", metavar="JSON", help="take the parts not measured now from this earlier result")
    args = p.parse_args()
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    configs = args.configs or all_configs()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO, capture_output=True,
                            text=True).stdout.strip()
    result = {"date": datetime.datetime.now().strftime("%Y-%m-%d %H:%M"), "commit": commit, "load_start": _load()}
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="bench_startup_"))
    try:
        if not args.no_main:
            result["main"] = {"load_start": _load(), **main_job(args.main, args.rounds, tmp)}
        if not args.no_configs:
            result["configs_load_start"] = _load()
            result["configs"] = per_config(configs, tmp)
            result["configs_load_end"] = _load()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    result["load_end"] = _load()
    if args.keep:
        earlier = json.loads(pathlib.Path(args.keep).read_text())
        for part in ("main", "configs", "configs_load_start", "configs_load_end"):
            if part not in result and part in earlier:
                result[part] = earlier[part]
    out = pathlib.Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    section = markdown(result)
    write_section(section, pathlib.Path(args.benchmarks))
    print(section)


if __name__ == "__main__":
    main()
