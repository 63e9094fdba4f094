"""Benchmark: the sharded path's cost against N (ingest, one training epoch, score + regions).

Scale set: the 46 real spectra of ``../shared/data/sdss`` ingested into shards on 3600-10400 Å, then
N records made from them: record i is real spectrum ``i mod 46`` rolled by a random whole number of
pixels in [-20, 20] (a redshift change of up to ±0.47%: the grid is uniform in log wavelength; the
pixels rolled in at the edge are masked) with fresh Gaussian noise of its own ivar added to every good
pixel; its id is ``<real id>-s<i>``, its z moved by the shift. Written shard by shard (memory = one shard).

Ingestion runs on FITS files: N symbolic links to the 46 real files (reading and gridding every one;
the repeats are then dropped as duplicates, so the record writes are not timed beyond the first 46).
Each stage runs in its own process; wall time and peak RSS come from ``wait4`` (Linux keeps the peak
RSS of the process a child was forked from, so the driver keeps no data: the scale set is made in a child too). Stages:
``ingest`` (``--workers`` 1, and 2 up to ``--workers-n``), ``train`` (one epoch, after a compiled warm-up epoch, on the
sharded loader and on the in-memory trainer with the same model and batches), ``score`` (stream
scoring + window-rule regions of every record, Parquet out).

    nice -n 15 python bench/scale.py --n 1000 10000        # writes bench/results/scale.{json,md,png}
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
RESULTS = REPO / "bench" / "results"
WAVE = (3600.0, 10400.0)
PREFIX = "SCALE_RESULT "


def make_scale_set(base_dir: pathlib.Path, out: pathlib.Path, n: int, seed: int = 0, shard_size: int = 1024) -> None:
    from research.data import sdss_shards, shards

    base = shards.Shards(base_dir)
    real = base.read()
    cat = {c: base.column(c) for c in sdss_shards.COLUMNS}
    rng = np.random.default_rng(seed)
    writer = shards.ShardWriter(out, 0, 1, shard_size, base.n_pixels, sdss_shards.COLUMNS)
    with np.errstate(divide="ignore"):
        sigma = np.where(real["ivar"] > 0, 1 / np.sqrt(real["ivar"]), 0).astype(np.float32)
    for i in range(n):
        b, shift = i % len(real["flux"]), int(rng.integers(-20, 21))
        flux, ivar, mask = (np.roll(real[k][b], shift) for k in ("flux", "ivar", "mask"))
        edge = np.zeros(len(flux), bool)
        edge[:shift] = shift > 0
        edge[len(flux) + shift:] = shift < 0
        mask = mask & ~edge
        noise = rng.standard_normal(len(flux)).astype(np.float32) * np.roll(sigma[b], shift)
        flux = np.where(mask, flux + noise, 0).astype(np.float32)
        ivar = np.where(mask, ivar, 0).astype(np.float32)
        row = {c: cat[c][b] for c in sdss_shards.COLUMNS}
        row.update(id=f"{cat['id'][b]}-s{i}", z=(1 + float(cat["z"][b])) * 10 ** (shift * 1e-4) - 1, file_index=i)
        writer.add(flux, ivar, mask, row)
    writer.close()
    (out / "task-00000-of-00001.json").write_text(json.dumps({
        "task": 0, "num_tasks": 1, "n_files": n, "n_ingested": n, "n_skipped": 0, "skipped": [],
        "shards": writer.shards, "grid": base.manifest["grid"], "options": base.manifest["options"]}))
    shards.merge(out)


# ---- stages (each in its own process) ----------------------------------------------------------
def stage_ingest(args) -> dict:
    from research.data import sdss_shards

    files = sorted(pathlib.Path(args.data).glob("*.fit*"))
    links = pathlib.Path(tempfile.mkdtemp(prefix="scale_fits_"))
    for i in range(args.n):
        (links / f"f{i:07d}_{files[i % len(files)].name}").symlink_to(files[i % len(files)])
    t = time.perf_counter()
    report = sdss_shards.ingest_task(links, pathlib.Path(args.out), wave_range=WAVE, workers=args.workers)
    wall = time.perf_counter() - t
    return {"items": report["n_files"], "seconds": wall, "ingested": report["n_ingested"]}


def _model_trainer(n_train: int, batch: int):
    import optax

    from research.models.cnn_skip import CNNSkipAE
    from research.training import Trainer

    model = CNNSkipAE(features=(8, 16), kernel_size=7, skip_levels=(), latent_dim=32, activation="gelu",
                      output_activation="none")
    return Trainer(model, optax.adam(1e-3), batch_size=batch, input_noise=0.05, mixup=0.4, eval_batch_size=256)


def stage_train(args) -> dict:
    import jax

    from research.data import shards, stream
    from research.streaming import StreamingTrainer, fit_stream

    ds = shards.Shards(args.shards)
    n = len(ds)
    val_rows, train_rows = np.arange(256), np.arange(256, n)
    prep = stream.Prepare(fill_masked=True, weight_clip=10.0)
    trainer = _model_trainer(len(train_rows), args.batch)
    steps = len(train_rows) // args.batch
    state = trainer.init([0], (ds.n_pixels,))
    if args.mode == "memory":
        def arrays(rows):
            src = ds.source(rows)
            items = [prep.map(src[i]) for i in range(len(src))]
            return {k: np.stack([it[k] for it in items]) for k in items[0]}
        train, val = trainer.put(arrays(train_rows)), trainer.put(arrays(val_rows))
        state, m = trainer.epoch(state, train, val)  # compile + first epoch
        jax.block_until_ready(m)
        t = time.perf_counter()
        state, m = trainer.epoch(state, train, val)
        jax.block_until_ready(m)
    else:
        st = StreamingTrainer(trainer, steps)
        kw = dict(seed=0, chunk=args.chunk, workers=args.workers)
        state, _ = fit_stream(st, state, ds.source(train_rows), ds.source(val_rows), prep, epochs=1, **kw)
        jax.block_until_ready(state.params)
        t = time.perf_counter()
        state, _ = fit_stream(st, state, ds.source(train_rows), ds.source(val_rows), prep, epochs=2, **kw)
        jax.block_until_ready(state.params)
    return {"items": steps * args.batch, "seconds": time.perf_counter() - t}


def stage_score(args) -> dict:
    from research.data import shards, stream
    from research import stream_score

    ds = shards.Shards(args.shards)
    trainer = _model_trainer(len(ds), args.batch)
    params = trainer.init([0], (ds.n_pixels,)).params
    prep = stream.Prepare(fill_masked=True, weight_clip=10.0, keep=("index",))
    fit = stream_score.fit_scores(trainer, params, ds.source(np.arange(min(len(ds), 512))), prep, "none")
    thr = float(np.percentile(fit, 95))  # (also the compiled warm-up of the scoring program)
    t = time.perf_counter()
    result = stream_score.score_split(trainer, params, ds.source(), prep, pathlib.Path(args.out), threshold=thr,
                                      normalize="none", ids=ds.column("id"), labels=None, axis=10 ** ds.loglam,
                                      regions_cfg={"method": "window"})
    return {"items": result["n"], "seconds": time.perf_counter() - t, "regions": result["n_regions"]}


# ---- driver ------------------------------------------------------------------------------------
def run_stage(*argv) -> dict:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "stage", *map(str, argv)]
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=dict(os.environ, JAX_PLATFORMS="cpu"))
    _, status, usage = os.wait4(proc.pid, 0)
    out, err = proc.stdout.read(), proc.stderr.read()
    lines = [x for x in out.splitlines() if x.startswith(PREFIX)]
    if os.waitstatus_to_exitcode(status) or not lines:
        raise RuntimeError(f"{' '.join(map(str, argv))}: {err.strip().splitlines()[-3:]}")
    result = json.loads(lines[-1][len(PREFIX):])
    result.update(process_seconds=time.perf_counter() - start, peak_rss_mib=usage.ru_maxrss / 1024,
                  cpu_seconds=usage.ru_utime + usage.ru_stime, items_per_s=result["items"] / result["seconds"])
    print(f"  {' '.join(map(str, argv))}: {result}", flush=True)
    return result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd")
    s = sub.add_parser("stage")
    s.add_argument("stage", choices=("make", "ingest", "train", "score"))
    s.add_argument("--n", type=int, default=0)
    s.add_argument("--data", default=str(REPO.parent / "shared" / "data" / "sdss"))
    s.add_argument("--out")
    s.add_argument("--shards")
    s.add_argument("--workers", type=int, default=1)
    s.add_argument("--mode", choices=("memory", "stream"), default="stream")
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--chunk", type=int, default=8)
    p.add_argument("--n", type=int, nargs="+", default=[1000, 10000])
    p.add_argument("--train-n", type=int, default=10000, help="N of the streaming vs in-memory comparison")
    p.add_argument("--workers-n", type=int, default=1000, help="largest N ingested with 2 workers too")
    p.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    args = p.parse_args()
    if args.cmd == "stage" and args.stage == "make":
        make_scale_set(pathlib.Path(args.shards), pathlib.Path(args.out), args.n)
        return
    if args.cmd == "stage":
        fn = {"ingest": stage_ingest, "train": stage_train, "score": stage_score}[args.stage]
        args.workers = args.workers if args.stage == "ingest" else (0 if args.workers == 1 else args.workers)
        print(PREFIX + json.dumps(fn(args)), flush=True)
        return

    from research.data import sdss_shards, shards

    work = pathlib.Path(args.work or tempfile.mkdtemp(prefix="scale_"))
    base = work / "base"
    if not (base / "manifest.json").is_file():
        sdss_shards.ingest_task(REPO.parent / "shared" / "data" / "sdss", base, wave_range=WAVE)
        shards.merge(base)
    load = os.getloadavg()
    rows = []
    for n in args.n:
        sset = work / f"set_{n}"
        if not (sset / "manifest.json").is_file():  # in a child: a forked stage inherits this process's peak RSS
            subprocess.run([sys.executable, str(pathlib.Path(__file__).resolve()), "stage", "make", "--n", str(n),
                            "--shards", str(base), "--out", str(sset)], check=True, cwd=REPO)
        row = {"n": n}
        for w in (1, 2) if n <= args.workers_n else (1,):
            row[f"ingest_w{w}"] = run_stage("ingest", "--n", n, "--out", work / f"ing_{n}_{w}", "--workers", w)
        row["train_stream"] = run_stage("train", "--shards", sset, "--mode", "stream")
        if n == args.train_n:
            row["train_memory"] = run_stage("train", "--shards", sset, "--mode", "memory")
        row["score"] = run_stage("score", "--shards", sset, "--out", work / f"score_{n}")
        rows.append(row)
    meta = {"load_average_at_start": load, "load_average_at_end": os.getloadavg(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "scale.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=1) + "\n")
    write_markdown(rows, meta)
    plot(rows)


STAGES = (("ingest_w1", "ingest, 1 worker"), ("ingest_w2", "ingest, 2 workers"),
          ("train_stream", "train epoch, streaming"), ("train_memory", "train epoch, in memory"),
          ("score", "score + regions, streaming"))


def write_markdown(rows, meta) -> None:
    lines = [f"Measured {meta['date']} on {meta['cpus']} CPUs, load average {meta['load_average_at_start'][0]:.1f} "
             f"at the start and {meta['load_average_at_end'][0]:.1f} at the end (a shared machine: read ratios).", "",
             "| stage | N | wall (s) | items/s | process CPU-s (incl. start-up) | peak RSS (MiB) |",
             "|---|---|---|---|---|---|"]
    for key, label in STAGES:
        for row in rows:
            if key in row:
                r = row[key]
                lines.append(f"| {label} | {row['n']:,} | {r['seconds']:.1f} | {r['items_per_s']:.0f} | "
                             f"{r['cpu_seconds']:.0f} | {r['peak_rss_mib']:.0f} |")
    (RESULTS / "scale.md").write_text("\n".join(lines) + "\n")


def plot(rows) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in STAGES:
        pts = [(row["n"], row[key]) for row in rows if key in row]
        if len(pts) < 1:
            continue
        ns = [n for n, _ in pts]
        a.plot(ns, [r["seconds"] for _, r in pts], "o-", label=label)
        b.plot(ns, [r["peak_rss_mib"] for _, r in pts], "o-", label=label)
    for ax, title in ((a, "wall time (s)"), (b, "peak RSS (MiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("N spectra")
        ax.set_title(title)
    a.set_yscale("log")
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "scale.png", dpi=110)


if __name__ == "__main__":
    main()
