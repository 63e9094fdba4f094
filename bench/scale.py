"""Benchmark of the sharded path (``data.format=sharded``): cost against N, streaming vs in-memory
training side by side, and ingestion against ``--workers``.

Modes (each writes one JSON under ``bench/results/``; ``python -m bench.report`` renders them into
``BENCHMARKS.md``; every mode needs only this repository and the FITS folders given with ``--fits``):

    python -m bench.scale sizes --n 1000 10000 100000      # scale.json: ingest / train / score against N
    python -m bench.scale compare --n 10000 --set model.features='(8, 16)'   # scale_train.json
    python -m bench.scale workers --fits ../shared/data/sdss ../shared/data/sdss_extra \\
        --files 4000 --workers 1 2 4 8 16                  # scale_workers.json: ingestion files/s
    python -m bench.scale structures --n 100000            # scale_structures.json: bytes per file
    python -m bench.scale readers --fits ../shared/data/sdss ../shared/data/sdss_extra   # scale_readers.json

``compare`` trains the SDSS config (``experiments/sdss_cnn_skip.py`` with ``--set`` overrides, on the
default JAX device: the GPU where there is one) on the same scale set in memory (one compiled epoch,
the data on the device) and streamed from the shards (:func:`research.streaming.fit_stream`),
alternating epoch by epoch in one process after a warm-up epoch of each, and reports steps/s of both
and their ratio. ``workers`` ingests ``--files`` symbolic links to the given FITS files (every link
read and gridded; repeated spectra are dropped as duplicates at the end) once per worker count and
reports files/s, CPU seconds and peak RSS of each ingestion process. ``structures`` measures with
``tracemalloc`` what one ingestion task keeps per input file (file list, duplicate index, skipped
files), now and as the task held it before (list of ``Path``, dict of id strings, list of dicts), on
``--n`` empty files named like the ``sizes`` links. ``readers`` times the astropy reader and the fast
reader (:mod:`research.data.sdss_fastread`) on the same files, in CPU seconds.

Scale set (``sizes``, ``compare``): the real spectra of the ``--fits`` folders ingested into shards
on 3600-10400 Å, then N records made from them: record i is real spectrum ``i mod n_real`` rolled
by a random whole number of pixels in [-20, 20] (a redshift change of up to ±0.47%: the grid is
uniform in log wavelength; the pixels rolled in at the edge are masked) with fresh Gaussian noise of
its own ivar added to every good pixel; its id is ``<real id>-s<i>``, its z moved by the shift.
Written shard by shard (memory = one shard). In ``sizes`` each stage is its own process (wall time,
CPU time from ``wait4``, peak RSS the stage's own ``VmHWM``, as Linux gives a forked child the parent's peak
RSS; the scale set is made in a child too): ``ingest`` (FITS links, up to ``--ingest-max`` files), ``train``
(``--steps`` streamed steps after a compiled warm-up chunk: a fixed amount of work at every N, so
time and memory compare across N) and ``score`` (stream scoring and window-rule regions of every
record, Parquet out).
"""

from __future__ import annotations

import argparse
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

import numpy as np

from research.paths import REPO_ROOT

RESULTS = REPO_ROOT / "bench" / "results"
WAVE = (3600.0, 10400.0)
PREFIX = "SCALE_RESULT "
DEFAULT_FITS = [str(REPO_ROOT.parent / "shared" / "data" / "sdss")]
CONFIG = "experiments/sdss_cnn_skip.py"


# ---- the scale set -----------------------------------------------------------------------------
def fits_files(folders) -> list[pathlib.Path]:
    files = sorted(f for d in folders for f in pathlib.Path(d).glob("*.fit*"))
    if not files:
        raise SystemExit(f"error: {', '.join(map(str, folders))}: no FITS files")
    return files


def link_files(folders, n: int, into: pathlib.Path) -> pathlib.Path:
    """``n`` symbolic links to the FITS files of ``folders``, cycling through them."""
    files = fits_files(folders)
    into.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (into / f"f{i:07d}_{files[i % len(files)].name}").symlink_to(files[i % len(files)].resolve())
    return into


def base_shards(folders, work: pathlib.Path) -> pathlib.Path:
    """The real spectra of ``folders`` as merged shards (ingested once per work folder)."""
    from research.data import sdss_shards, shards

    base = work / "base"
    if not (base / "manifest.json").is_file():
        sdss_shards.ingest_task(link_files(folders, len(fits_files(folders)), work / "base_fits"), base,
                                wave_range=WAVE)
        shards.merge(base)
    return base


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
        writer.add(flux, ivar, mask, row=row)
    writer.close()
    (out / "task-00000-of-00001.json").write_text(json.dumps({
        "task": 0, "num_tasks": 1, "n_files": n, "n_ingested": n, "n_skipped": 0, "skipped": [],
        "shards": writer.shards, "grid": base.manifest["grid"], "options": base.manifest["options"]}))
    shards.merge(out)


def scale_set(args, n: int) -> pathlib.Path:
    work = pathlib.Path(args.work)
    out = work / f"set_{n}"
    if not (out / "manifest.json").is_file():  # in a child: a forked stage inherits this process's peak RSS
        subprocess.run([sys.executable, "-m", "bench.scale", "stage", "make", "--n", str(n),
                        "--shards", str(base_shards(args.fits, work)), "--out", str(out)], check=True, cwd=REPO_ROOT)
    return out


# ---- the SDSS config's trainer -------------------------------------------------------------------
def sdss_config(overrides, batch_size: int):
    """``experiments/sdss_cnn_skip.py`` with ``train.batch_size`` and ``KEY=VALUE`` overrides, resolved."""
    import ast

    from experiments import sdss_cnn_skip
    from research.config import resolve

    c = sdss_cnn_skip.get_config()
    c.train.batch_size = batch_size
    for item in overrides:
        key, _, value = item.partition("=")
        *path, leaf = key.split(".")
        block = c
        for p in path:
            block = block[p]
        try:
            value = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            pass
        block[leaf] = value
    return resolve(c)


def trainer_for(config, steps: int):
    from research.models import build_model
    from research.training import Trainer

    return Trainer.from_config(build_model(config.model), config.train, steps)


def prepare_for(config, keep=()):
    from research.data import stream

    weight_clip = float(config.data.weight_clip) if config.data.ivar_weighting else None
    return stream.Prepare(fill_masked=bool(config.data.fill_masked), weight_clip=weight_clip, keep=keep)


# ---- stages (each in its own process) ----------------------------------------------------------
def stage_ingest(args) -> dict:
    """Ingests the folder of links ``--links`` (made and removed by the measuring parent, so neither making
    nor removing 10^6 links counts in this process's peak RSS)."""
    from research.data import sdss_shards

    t = time.perf_counter()
    report = sdss_shards.ingest_task(pathlib.Path(args.links), pathlib.Path(args.out), wave_range=WAVE,
                                     workers=args.workers)
    return {"items": report["n_files"], "seconds": time.perf_counter() - t, "ingested": report["n_ingested"],
            "workers": args.workers}


def ingest_links(args, n: int, out: pathlib.Path, workers: int) -> dict:
    """The ``ingest`` stage on ``n`` fresh links to the ``--fits`` files."""
    links = link_files(args.fits, n, pathlib.Path(tempfile.mkdtemp(prefix="scale_fits_", dir=args.work)))
    try:
        return run_stage("ingest", "--links", links, "--out", out, "--workers", workers)
    finally:
        shutil.rmtree(links)


def stage_train(args) -> dict:
    """``--steps`` streamed steps of the SDSS config after one compiled warm-up chunk (across epoch ends,
    validation included, when an epoch is shorter)."""
    import jax

    from research.data import shards, stream
    from research.streaming import StreamingTrainer

    config = sdss_config(args.set, args.batch)
    ds = shards.Shards(args.shards)
    val_rows, train_rows = np.arange(256), np.arange(256, len(ds))
    steps = len(train_rows) // args.batch
    trainer = trainer_for(config, steps)
    prep = prepare_for(config)
    train, val = stream.Stream(ds.source(train_rows), prep, args.workers), stream.Stream(ds.source(val_rows), prep)
    st = StreamingTrainer(trainer, steps, args.chunk)
    state = trainer.init([0], (ds.n_pixels,))

    def run(state, n_steps, epoch, done):
        it = iter(stream.train_loader(train.source, prep, seed=0, epoch=epoch, batch_size=args.batch,
                                      workers=train.workers))
        for _ in range(done):
            next(it)
        while n_steps > 0:
            if done == steps:
                state, _ = st.end_epoch(state, val)
                epoch, done = epoch + 1, 0
                it = iter(stream.train_loader(train.source, prep, seed=0, epoch=epoch, batch_size=args.batch,
                                              workers=train.workers))
            batches = [next(it) for _ in range(min(st.chunk, steps - done, n_steps))]
            state = st.train_chunk(state, batches, done)
            done, n_steps = done + len(batches), n_steps - len(batches)
        return jax.block_until_ready(state), epoch, done

    state, epoch, done = run(state, min(args.chunk, steps), 0, 0)  # compiles
    t = time.perf_counter()
    state, _, _ = run(state, args.steps, epoch, done)
    seconds = time.perf_counter() - t
    return {"items": args.steps * args.batch, "steps": args.steps, "seconds": seconds,
            "steps_per_s": args.steps / seconds, "steps_per_epoch": steps}


def stage_score(args) -> dict:
    from research import stream_score
    from research.data import shards

    config = sdss_config(args.set, args.batch)
    ds = shards.Shards(args.shards)
    trainer = trainer_for(config, 1)
    params = trainer.init([0], (ds.n_pixels,)).params
    prep = prepare_for(config, keep=("index",))
    fit = stream_score.fit_scores(trainer, params, ds.source(np.arange(min(len(ds), 512))), prep, "none")
    thr = float(np.percentile(fit, 95))  # (also the compiled warm-up of the scoring program)
    t = time.perf_counter()
    result = stream_score.score_split(trainer, params, ds.source(), prep, pathlib.Path(args.out), threshold=thr,
                                      normalize="none", ids=ds.column("id"), labels=None, axis=10 ** ds.loglam,
                                      regions_cfg={"method": "window"})
    return {"items": result["n"], "seconds": time.perf_counter() - t, "regions": result["n_regions"]}


def own_peak_rss_mib() -> float:
    """Peak RSS of this process since its exec (``VmHWM``) or of any of its children, in MiB: ``wait4``'s peak
    of a child started by ``subprocess`` also counts the parent's resident pages at the fork, and the
    ``sizes`` parent has imported JAX and matplotlib after its first stage (~200 MiB, above an ingestion)."""
    import resource

    with open("/proc/self/status") as f:
        hwm = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
    return max(hwm, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss) / 1024


def run_stage(*argv) -> dict:
    """One stage in its own process: its result line plus wall, CPU seconds and peak RSS: the stage's own
    (:func:`own_peak_rss_mib`; ``wait4``'s is kept as ``wait4_peak_rss_mib``)."""
    cmd = [sys.executable, "-m", "bench.scale", "stage", *map(str, argv)]
    start = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)
        out.seek(0)
        err.seek(0)
        lines = [x for x in out.read().splitlines() if x.startswith(PREFIX)]
        if os.waitstatus_to_exitcode(status) or not lines:
            raise RuntimeError(f"{' '.join(map(str, argv))}: {err.read().strip().splitlines()[-3:]}")
    result = json.loads(lines[-1][len(PREFIX):])
    result.update(process_seconds=time.perf_counter() - start, wait4_peak_rss_mib=usage.ru_maxrss / 1024,
                  peak_rss_mib=result.pop("own_peak_rss_mib", usage.ru_maxrss / 1024),
                  cpu_seconds=usage.ru_utime + usage.ru_stime, items_per_s=result["items"] / result["seconds"])
    print(f"  {' '.join(map(str, argv[:1]))} {result}", flush=True)
    return result


def _commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=REPO_ROOT, capture_output=True,
                              text=True).stdout.strip() or "unknown"
    except OSError:  # no git (a copied working tree)
        return "unknown"


def meta(args) -> dict:
    import jax

    return {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "cpus": os.cpu_count(),
            "python": platform.python_version(), "argv": sys.argv[1:], "load_average_at_start": args.load,
            "load_average_at_end": list(os.getloadavg()), "device": str(jax.devices()[0]),
            "commit": _commit()}


def save(name: str, result: dict, path=None) -> None:
    path = pathlib.Path(path) if path else RESULTS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {path}")


# ---- modes ---------------------------------------------------------------------------------------
def mode_sizes(args) -> None:
    rows, earlier, before = [], [], {}
    path = pathlib.Path(args.json) if args.json else RESULTS / "scale.json"
    if args.merge and path.is_file():  # keep the other N, and the other stages of these N, of an earlier run
        old = json.loads(path.read_text())
        rows = old["rows"]  # every row stays in the file until this run replaces its stages
        before = {r["n"]: r for r in rows}
        earlier = old.get("earlier_runs", []) + [old["meta"]]
    common = ["--batch", args.batch, "--chunk", args.chunk, *[a for s in args.set for a in ("--set", s)]]

    def keep():  # after every stage: a long run keeps what it measured
        save("scale.json", {"meta": meta(args), "earlier_runs": earlier, "batch": args.batch, "steps": args.steps,
                            "set": args.set, "rows": sorted(rows, key=lambda r: r["n"])}, args.json)
        plot(rows, pathlib.Path(args.json).with_suffix(".png") if args.json else RESULTS / "scale.png")

    for n in args.n:
        sset = scale_set(args, n) if {"train", "score"} & set(args.stages) else None  # ingest reads FITS links
        row = before.get(n)
        if row is None:
            row = {"n": n}
            rows.append(row)
        if n <= args.ingest_max and "ingest" in args.stages:
            row["ingest"] = ingest_links(args, n, pathlib.Path(args.work) / f"ing_{n}", 1)
            keep()
        if "train" in args.stages:
            row["train_stream"] = run_stage("train", "--shards", sset, "--steps", args.steps, *common)
            keep()
        if "score" in args.stages:
            row["score"] = run_stage("score", "--shards", sset, "--out", pathlib.Path(args.work) / f"score_{n}",
                                     *common)
            keep()


def mode_compare(args) -> None:
    """In-memory and streamed epochs of one trainer, alternating, in this process."""
    import jax

    from research.data import shards, stream
    from research.streaming import StreamingTrainer, fit_stream

    ds = shards.Shards(scale_set(args, args.n[0]))
    config = sdss_config(args.set, args.batch)
    val_rows, train_rows = np.arange(256), np.arange(256, len(ds))
    steps = len(train_rows) // args.batch
    trainer = trainer_for(config, steps)
    prep = prepare_for(config)
    t = time.perf_counter()
    arrays = {}
    for name, rows in (("train", train_rows), ("val", val_rows)):
        src = ds.source(rows)
        items = [prep.map(src[i]) for i in range(len(src))]
        arrays[name] = trainer.put({k: np.stack([it[k] for it in items]) for k in items[0]})
    load_seconds = time.perf_counter() - t
    train_s = stream.Stream(ds.source(train_rows), prep, args.workers)
    val_s = stream.Stream(ds.source(val_rows), prep, args.workers)
    st = StreamingTrainer(trainer, steps, args.chunk)
    mem, streamed = trainer.init([0], (ds.n_pixels,)), trainer.init([0], (ds.n_pixels,))
    times = {"in_memory": [], "sharded": []}
    for epoch in range(args.epochs + 1):  # epoch 0 compiles both: not timed
        t = time.perf_counter()
        mem, m = trainer.epoch(mem, arrays["train"], arrays["val"])
        jax.block_until_ready(m)
        t_mem = time.perf_counter() - t
        t = time.perf_counter()
        streamed = fit_stream(st, streamed, train_s, val_s, epoch + 1)
        jax.block_until_ready(streamed.params)
        t_stream = time.perf_counter() - t
        if epoch:
            times["in_memory"].append(t_mem)
            times["sharded"].append(t_stream)
        print(f"  epoch {epoch}: in memory {t_mem:.2f} s, sharded {t_stream:.2f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    result = {"meta": meta(args), "n": args.n[0], "n_train": len(train_rows), "batch": args.batch,
              "chunk": args.chunk, "workers": args.workers, "steps_per_epoch": steps, "set": args.set,
              "model": {k: v for k, v in config.model.to_dict().items()}, "epoch_seconds": times,
              "median_epoch_seconds": med, "steps_per_s": {k: steps / v for k, v in med.items()},
              "sharded_over_in_memory": med["in_memory"] / med["sharded"], "in_memory_load_seconds": load_seconds}
    print(f"steps/s: in memory {steps / med['in_memory']:.1f}, sharded {steps / med['sharded']:.1f} "
          f"(sharded / in memory {result['sharded_over_in_memory']:.2f})")
    save("scale_train.json", result, args.json)


def mode_workers(args) -> None:
    rows = []  # a count may repeat (--workers 1 2 1 2: alternating rounds on a shared machine)
    for i, w in enumerate(args.workers):
        out = pathlib.Path(args.work) / f"round{i}_workers_{w}"
        rows.append(ingest_links(args, args.files, out, w))
    base = statistics.median(r["items_per_s"] for r in rows if r["workers"] == rows[0]["workers"])
    for r in rows:
        r["speedup"] = r["items_per_s"] / base
    save("scale_workers.json", {"meta": meta(args), "files": args.files, "fits": args.fits,
                                "distinct_files": len(fits_files(args.fits)), "rows": rows}, args.json)


def mode_structures(args) -> None:
    """Bytes per file that one ingestion task's growing structures keep and peak at, on ``--n`` empty files."""
    import gc
    import tracemalloc

    from research.data import shards

    n = args.n[0]
    folder = pathlib.Path(args.work) / "names"
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):  # named like the sizes links: f<i>_<real file name>
        (folder / f"f{i:07d}_dr10spec_BOSS-3586-55181-{i % 1000:04d}.fits").touch()
    ids = [f"{3000 + i // 640000}-{55000 + (i // 640) % 1000}-{i % 640 + 1:04d}" for i in range(n)]
    rows = []

    def measure(structure: str, how: str, fn):
        gc.collect()
        tracemalloc.start()
        kept = fn()
        current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append({"structure": structure, "how": how, "kept_bytes_per_file": current / n,
                     "peak_bytes_per_file": peak / n})
        print(f"  {structure}, {how}: kept {current / n:.1f} B/file, peak {peak / n:.1f} B/file", flush=True)
        return kept

    old = measure("file list", "before: sorted list of Path", lambda: sorted(
        p for p in folder.iterdir() if p.name.lower().endswith(".fits")))
    whole = shards.LIST_IN_MEMORY
    shards.LIST_IN_MEMORY = n
    files = measure("file list", "FileList in memory (folders up to 65,536 names)",
                    lambda: shards.FileList.find(folder, (".fits",)))
    shards.LIST_IN_MEMORY = whole
    assert list(files) == [str(p) for p in old]
    files = measure("file list", "FileList sorted on disk (larger folders)",
                    lambda: shards.FileList.find(folder, (".fits",)))
    assert list(files) == [str(p) for p in old] and n <= whole or isinstance(files._names[0], shards.DiskNames)
    del old

    def old_seen():
        seen = {}
        for i, sid in enumerate(ids):
            seen[sid.encode().decode()] = files[i].rpartition("/")[2]  # the row's id and file: strings of their own
        return seen

    def new_seen():
        seen = shards.IdIndex()
        for i, sid in enumerate(ids):
            seen[sid] = i
        return seen

    measure("duplicate index (every file a new id)", "before: dict id -> file name", old_seen)
    measure("duplicate index (every file a new id)", "IdIndex: id hash -> file index", new_seen)

    def skip(i):  # a duplicate, as in the sizes links (every file past the first cycle)
        return {"file": files[i].rpartition("/")[2],  # (not Path: it interns names, a fixed ~0.4 MB)
                "reason": f"{files[i]}: duplicate of f{i % 46:07d}_dr10spec_BOSS-3586-55181-0002.fits "
                          "(same plate-mjd-fiber 3586-55181-0002)"}

    def old_skips():
        skipped = [skip(i) for i in range(n)]
        text = (json.dumps({"task": 0, "skipped": skipped}) + "\n").encode()  # the report, written whole
        return skipped, text

    def new_skips():
        skipped = shards.SkipList(args.work, "report")
        for i in range(n):
            skipped.append(skip(i))
        return shards.write_report(pathlib.Path(args.work) / "report.json", {"task": 0, "skipped": skipped})

    measure("skipped files (every file skipped) + task report", "before: list of dicts, json.dumps", old_skips)
    measure("skipped files (every file skipped) + task report", "SkipList spooled, report streamed", new_skips)
    save("scale_structures.json", {"meta": meta(args), "n": n, "rows": rows}, args.json)


def mode_readers(args) -> None:
    """CPU seconds a file of the astropy reader and the fast reader (:mod:`research.data.sdss_fastread`), each
    followed by the gridding ingestion does, on the same files, alternating round by round in this process."""
    from research.data import sdss_fits, sdss_fastread, sdss_shards

    files = fits_files(args.fits)
    grid = sdss_fits.make_grid(np.log10(WAVE[0]), np.log10(WAVE[1]))
    readers = {"astropy (research.data.sdss_fits)": sdss_fits.read_spectrum,
               "fast (research.data.sdss_fastread)": sdss_fastread.read_spectrum}
    seconds = {name: [] for name in readers}
    for _ in range(args.rounds):
        for name, read in readers.items():
            start = time.process_time()
            for path in files:
                try:
                    sdss_shards.grid_spectrum(read(path), grid, frame="observed", norm="median", norm_window=None,
                                              min_good_fraction=0.1)
                except Exception:  # noqa: BLE001 - a bad file costs its read, as in ingestion
                    pass
            seconds[name].append(time.process_time() - start)
            print(f"  {name}: {len(files) / seconds[name][-1]:.0f} files/CPU-s", flush=True)
    per_s = {name: len(files) / statistics.median(v) for name, v in seconds.items()}
    fast, slow = per_s["fast (research.data.sdss_fastread)"], per_s["astropy (research.data.sdss_fits)"]
    save("scale_readers.json", {"meta": meta(args), "files": len(files), "rounds": args.rounds,
                                "cpu_seconds": seconds, "files_per_cpu_s": per_s, "fast_over_astropy": fast / slow},
         args.json)


# ---- report --------------------------------------------------------------------------------------
STAGES = (("ingest", "ingest (FITS, 1 worker)"), ("train_stream", "train, streamed steps"),
          ("score", "score + regions, streamed"))


def _command(m: dict) -> str:
    """The measuring command as run, without its scratch and output paths."""
    argv, keep = m["argv"], []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a in ("--work", "--json"):
            skip = True
        elif not a.startswith(("--work=", "--json=")):
            keep.append(a if " " not in a else f"'{a}'")
    return "python -m bench.scale " + " ".join(keep)


def _load_text(m: dict) -> str:
    return (f"{m['date']}, commit {m['commit']}, {m['cpus']} CPUs, device {m['device']}, load average "
            f"{m['load_average_at_start'][0]:.1f} at the start and {m['load_average_at_end'][0]:.1f} at the end")


def markdown(results: pathlib.Path = RESULTS) -> str:
    """The BENCHMARKS.md section of whichever of ``scale.json``, ``scale_train*.json`` and
    ``scale_workers*.json`` exist (``bench/report.py`` appends it; several ``compare`` or ``workers`` results,
    e.g. ``scale_train_gpu.json`` beside the CPU one, each get their table)."""
    sizes = json.loads((results / "scale.json").read_text()) if (results / "scale.json").is_file() else None
    trains, workers_runs = ([json.loads(p.read_text()) for p in sorted(results.glob(f"{stem}*.json"))]
                            for stem in ("scale_train", "scale_workers"))
    out = ["## 7. Data beyond memory: the sharded path (`python -m bench.scale`)", "",
           "Scale set: the real spectra of `../shared/data/sdss` ingested into shards on 3600-10400 Å (4,608 px); "
           "record `i` is real spectrum `i mod 46` rolled by a random whole number of pixels in [-20, 20] (a "
           "redshift change of up to ±0.47 %; the pixels rolled in are masked and z moved to match) plus fresh "
           "Gaussian noise drawn from its own ivar on every good pixel, written shard by shard. The records are "
           "made from the 46 real spectra rather than ingested from 10^5 FITS files: ingestion is measured "
           "separately, on FITS files, up to the N in its rows. Model: `experiments/sdss_cnn_skip.py` with the "
           "overrides named below. Raw numbers: `bench/results/scale*.json`.", ""]
    if sizes:
        runs = sizes.get("earlier_runs", []) + [sizes["meta"]]
        out += ["**Against N** (" + "; then ".join(f"`{_command(m)}` on {_load_text(m)}" for m in runs)
                + "). Each stage is its own process (wall and CPU from `wait4`; peak RSS its own `VmHWM` where the row has "
                "`wait4_peak_rss_mib` in the JSON, else `wait4`'s, which also counts the measuring parent's pages at "
                "the fork: ~200 MiB once it has imported JAX, above an ingestion, below training and scoring). "
                f"Training: {sizes['steps']} streamed steps of batch {sizes['batch']} after a compiled warm-up "
                "chunk, the same work at every N, so its time and memory compare across N. Scoring: every "
                "record, window-rule regions, Parquet out.", "",
                "| stage | N | wall (s) | items/s | process CPU-s (incl. start-up) | peak RSS (MiB) |",
                "|---|---|---|---|---|---|"]
        for key, label in STAGES:
            for row in sizes["rows"]:
                if key in row:
                    r = row[key]
                    out.append(f"| {label} | {row['n']:,} | {r['seconds']:.1f} | {r['items_per_s']:,.0f} | "
                               f"{r['cpu_seconds']:.0f} | {r['peak_rss_mib']:.0f} |")
        out += [""]
        for key, label in STAGES:
            pts = [(row["n"], row[key]) for row in sizes["rows"] if key in row]
            if len(pts) > 1:  # the target's span (10^4 to the largest N) where measured
                (n0, a), (n1, b) = next((p for p in pts if p[0] == 10**4), pts[0]), pts[-1]
                out.append(f"- {label}: peak RSS {a['peak_rss_mib']:.0f} → {b['peak_rss_mib']:.0f} MiB "
                           f"({b['peak_rss_mib'] / a['peak_rss_mib']:.2f}×) from N = {n0:,} to {n1:,}"
                           + (f"; target ≤ 1.5×: **{'met' if b['peak_rss_mib'] <= 1.5 * a['peak_rss_mib'] else 'not met'}**"
                              if n0 == 10**4 and n1 >= 10**6 else "") + ".")
        out += ingest_growth(sizes["rows"], results)
        out += ["", "Items/s of different rows were measured at different loads (see the load averages above) "
                "and do not compare; peak RSS does not depend on the load."]
        if (RESULTS / "scale.png").is_file():
            out += ["", "![time and memory against N](bench/results/scale.png)"]
        out += [""]
    for train in trains:
        m, med = train["meta"], train["median_epoch_seconds"]
        ratio = train["sharded_over_in_memory"]
        out += [f"**Streaming vs in-memory training, side by side** (`{_command(m)}`; {_load_text(m)}). "
                f"One process, one trainer, N = {train['n']:,} "
                f"({train['n_train']:,} training rows, {train['steps_per_epoch']} steps of batch {train['batch']}); "
                "epochs alternate between the in-memory path (one compiled epoch, the data on the device) and "
                f"the sharded path (grain loader, `data.chunk={train['chunk']}`, `data.workers={train['workers']}`), "
                "after a warm-up epoch of each; medians over the timed epochs (validation included).", "",
                "| path | epoch seconds (each) | median (s) | steps/s |", "|---|---|---|---|"]
        for k in ("in_memory", "sharded"):
            out.append(f"| {k} | {', '.join(f'{x:.2f}' for x in train['epoch_seconds'][k])} | {med[k]:.2f} | "
                       f"{train['steps_per_s'][k]:.1f} |")
        pairs = [a / b for a, b in zip(train["epoch_seconds"]["in_memory"], train["epoch_seconds"]["sharded"])]
        out += ["", f"Sharded / in-memory throughput (ratio of the medians): **{ratio:.2f}×**; target ≥ 0.8×: "
                f"**{'met' if ratio >= 0.8 else 'not met'}**. Epoch by epoch (each in-memory epoch over the "
                f"streamed epoch after it): {', '.join(f'{r:.2f}' for r in pairs)}× (median "
                f"{statistics.median(pairs):.2f}×; single epochs vary with the load on the machine).", ""]
    for workers in workers_runs:
        m = workers["meta"]
        out += [f"**Ingestion against `--workers`** (`{_command(m)}`; "
                f"{_load_text(m)}): {workers['files']:,} links to {workers['distinct_files']} FITS files, "
                "every one read and gridded.", "",
                "| workers | wall (s) | files/s | × 1 worker | process CPU-s | peak RSS (MiB) |", "|---|---|---|---|---|---|"]
        for r in workers["rows"]:
            out.append(f"| {r['workers']} | {r['seconds']:.1f} | {r['items_per_s']:.0f} | {r['speedup']:.2f}× | "
                       f"{r['cpu_seconds']:.0f} | {r['peak_rss_mib']:.0f} |")
        counts = sorted({r["workers"] for r in workers["rows"]})
        medians = {w: statistics.median(r["items_per_s"] for r in workers["rows"] if r["workers"] == w) for w in counts}
        per_core = medians[counts[0]] / counts[0]
        out += ["", "Median files/s per worker count: " + ", ".join(
            f"{w}: {medians[w]:.0f} ({medians[w] / medians[counts[0]]:.2f}×)" for w in counts)
            + f". Per core: {per_core:.0f} files/s with {counts[0]} worker(s); target ≥ 20 files/s per core: "
            + ("**met**" if per_core >= 20 else "**not met**") + ".", ""]
    readers = results / "scale_readers.json"
    if readers.is_file():
        r = json.loads(readers.read_text())
        out += [f"**FITS readers, side by side** (`{_command(r['meta'])}`; {_load_text(r['meta'])}): "
                f"{r['files']} real FITS files read and gridded by each reader in turn, {r['rounds']} rounds, "
                "median CPU time.", "", "| reader | files per CPU-second |", "|---|---|"]
        out += [f"| {name} | {v:.0f} |" for name, v in r["files_per_cpu_s"].items()]
        out += ["", f"Fast / astropy: **{r['fast_over_astropy']:.1f}×**. The fast reader gives astropy's arrays, "
                "metadata and types on every file (`tests/test_shards.py`) and hands the files whose tables have no "
                "EXTNAME (3 of these) to astropy.", ""]
    if not workers_runs:
        out += ["**Ingestion against `--workers`**: not measured here (2 shared, busy cores). On a machine with idle "
                "cores: `python -m bench.scale workers --fits ../shared/data/sdss ../shared/data/sdss_extra "
                "--files 4000 --workers 1 2 4 8 16`.", ""]
    return "\n".join(out).rstrip("\n")


def ingest_growth(rows: list[dict], results: pathlib.Path = RESULTS) -> list[str]:
    """What an ingestion task keeps per file (``scale_structures.json``) and the peak RSS at N = 10^6 extrapolated
    from the two largest N ingested."""
    out = []
    path = results / "scale_structures.json"
    if path.is_file():
        st = json.loads(path.read_text())
        out += ["", f"**What one ingestion task keeps per input file** (`{_command(st['meta'])}`; tracemalloc on "
                f"{st['n']:,} empty files named like the links above; {st['meta']['date']}, commit "
                f"{st['meta']['commit']}): each structure now, and as the task held it before.", "",
                "| structure | held as | kept (bytes/file) | peak (bytes/file) |", "|---|---|---|---|"]
        out += [f"| {r['structure']} | {r['how']} | {r['kept_bytes_per_file']:.1f} | {r['peak_bytes_per_file']:.1f} |"
                for r in st["rows"]]
    pts = dict(sorted((row["n"], row["ingest"]["peak_rss_mib"]) for row in rows if "ingest" in row))
    index = [r for r in (json.loads(path.read_text())["rows"] if path.is_file() else []) if r["how"].startswith("IdIndex")]
    if 10**4 in pts and max(pts) >= 10**6:
        top = max(pts)
        out += ["", f"Ingestion peak RSS, measured: {pts[10**4]:.0f} MiB at N = 10^4, {pts[top]:.0f} MiB at "
                f"N = {top:,} (**{pts[top] / pts[10**4]:.2f}×**; target ≤ 1.5×: "
                f"**{'met' if pts[top] / pts[10**4] <= 1.5 else 'not met'}**)."]
        if index:
            extra = index[0]["peak_bytes_per_file"] * top / 2**20
            out[-1] += (f" The links repeat the {min(pts) and 46} real spectra, so the task's duplicate index holds "
                        f"46 ids; with every file a new spectrum it grows {index[0]['kept_bytes_per_file']:.0f} "
                        f"bytes an id (peak {index[0]['peak_bytes_per_file']:.0f} while it doubles, table above): "
                        f"at most {pts[top] + extra:.0f} MiB at N = {top:,} ({(pts[top] + extra) / pts[10**4]:.2f}× "
                        "N = 10^4), computed from the table, not measured.")
    elif len(pts) > 1:
        (n0, a), (n1, b) = sorted(pts.items())[-2:]
        slope = (b - a) / (n1 - n0)  # MiB per file
        at_1e6 = b + slope * (10**6 - n1)
        base = pts.get(10**4)
        ratio = (lambda mib: f" ({mib / base:.2f}× N = 10^4; target ≤ 1.5×)" if base else "")
        out += ["", f"Ingestion peak RSS grows {slope * 2**20:.0f} bytes per file from N = {n0:,} to {n1:,} "
                f"({a:.0f} → {b:.0f} MiB). **Extrapolated, not measured**: {at_1e6:.0f} MiB at N = 10^6"
                f"{ratio(at_1e6)} if that slope held."]
    return out


def plot(rows, path=RESULTS / "scale.png") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for key, label in STAGES:
        pts = [(row["n"], row[key]) for row in rows if key in row]
        if pts:
            a.plot([n for n, _ in pts], [r["items_per_s"] for _, r in pts], "o-", label=label)
            b.plot([n for n, _ in pts], [r["peak_rss_mib"] for _, r in pts], "o-", label=label)
    for ax, title in ((a, "items/s"), (b, "peak RSS (MiB)")):
        ax.set_xscale("log")
        ax.set_xlabel("N spectra")
        ax.set_title(title)
    a.set_yscale("log")
    b.set_ylim(bottom=0)
    b.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.scale", description=__doc__.split("\n\n")[0],
                                epilog=__doc__.split("\n\n", 1)[1], formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="mode", required=True)

    def common(s, n_default):
        s.add_argument("--fits", nargs="+", default=DEFAULT_FITS, help="folders of SDSS spec FITS files")
        s.add_argument("--work", default=None, help="scratch folder (default: a new temporary one)")
        s.add_argument("--json", default=None, help="result file (default: bench/results/<mode's name>.json)")
        s.add_argument("--n", type=int, nargs="+", default=n_default, help="scale-set sizes")
        s.add_argument("--batch", type=int, default=64, help="train.batch_size")
        s.add_argument("--chunk", type=int, default=8, help="data.chunk: batches per compiled call, streamed")
        s.add_argument("--workers", type=int, default=0, help="data.workers: grain reading processes")
        s.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                       help=f"override of {CONFIG}, e.g. model.features='(8, 16)' (repeatable)")

    s = sub.add_parser("sizes", help="ingest / train / score: wall, items/s, CPU, peak RSS against N")
    common(s, [1000, 10000])
    s.add_argument("--steps", type=int, default=64, help="streamed training steps timed at every N")
    s.add_argument("--ingest-max", type=int, default=10000, help="largest N also ingested from FITS links")
    s.add_argument("--merge", action="store_true", help="keep the rows of other N from the existing result file")
    s.add_argument("--stages", nargs="+", choices=("ingest", "train", "score"), default=["ingest", "train", "score"],
                   help="stages measured at these N (e.g. only train at N = 10^6, where scoring takes an hour)")
    s = sub.add_parser("compare", help="steps/s of in-memory and streamed epochs, alternating in one process")
    common(s, [10000])
    s.add_argument("--epochs", type=int, default=3, help="timed epochs of each (after one warm-up epoch)")
    s = sub.add_parser("workers", help="ingestion files/s for each --workers count")
    s.add_argument("--fits", nargs="+", default=DEFAULT_FITS, help="folders of SDSS spec FITS files")
    s.add_argument("--files", type=int, default=4000, help="files ingested per worker count (links, cycling)")
    s.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    s.add_argument("--work", default=None)
    s.add_argument("--json", default=None)
    s = sub.add_parser("readers", help="files per CPU-second of the astropy and the fast FITS reader")
    s.add_argument("--fits", nargs="+", default=DEFAULT_FITS, help="folders of SDSS FITS files")
    s.add_argument("--rounds", type=int, default=3)
    s.add_argument("--json", default=None)
    s.add_argument("--work", default=None)
    s = sub.add_parser("structures", help="bytes per file of an ingestion task's growing structures (tracemalloc)")
    common(s, [100000])
    s = sub.add_parser("stage")  # internal: one measured stage in its own process
    s.add_argument("stage", choices=("make", "ingest", "train", "score"))
    s.add_argument("--n", type=int, default=0)
    s.add_argument("--fits", action="append", default=None)
    s.add_argument("--out")
    s.add_argument("--shards")
    s.add_argument("--links")
    s.add_argument("--workers", type=int, default=0)
    s.add_argument("--batch", type=int, default=64)
    s.add_argument("--chunk", type=int, default=8)
    s.add_argument("--steps", type=int, default=64)
    s.add_argument("--set", action="append", default=[])
    args = p.parse_args()
    if args.mode == "stage":
        if args.stage == "make":
            make_scale_set(pathlib.Path(args.shards), pathlib.Path(args.out), args.n)
            return
        args.fits = args.fits or DEFAULT_FITS
        fn = {"ingest": stage_ingest, "train": stage_train, "score": stage_score}[args.stage]
        print(PREFIX + json.dumps({**fn(args), "own_peak_rss_mib": own_peak_rss_mib()}), flush=True)
        return
    args.load = list(os.getloadavg())
    args.work = args.work or tempfile.mkdtemp(prefix="scale_")
    {"sizes": mode_sizes, "compare": mode_compare, "workers": mode_workers,
     "structures": mode_structures, "readers": mode_readers}[args.mode](args)


if __name__ == "__main__":
    main()
