"""One experiment run, end to end: data -> scaling -> training -> scores -> threshold -> metrics,
plots and analyses, all written to ``runs/<experiment>/<run-name>/``."""

from __future__ import annotations

import json
import platform
import sys
import time
from typing import Callable

import jax
import numpy as np

from research import checkpoints, plots, scoring
from research.analyses import RunContext, check_analyses, run_analyses
from research.config import resolve
from research.data import Dataset, limit_rows, load_dataset
from research.data.scaling import Scaler
from research.errors import InputError
from research.metrics import classification_metrics
from research.models import build_model
from research.progress import Progress
from research.rundir import RunDir, git_info
from research.training import Trainer, check_train_config, fit


def split_validation(ds: Dataset, fraction: float, seed: int) -> None:
    """Holds out a seeded fraction of the (normal) training split; fraction 0 validates on train."""
    if ds.val is not None:
        return
    n = len(ds.train["x"])
    if fraction <= 0:
        ds.val = dict(ds.train)
        return
    n_val = max(1, int(round(fraction * n)))
    if n_val >= n:
        raise InputError(f"config key data.val_fraction: {fraction} leaves no training rows (of {n})")
    perm = np.random.default_rng(seed).permutation(n)
    ds.val = {k: v[perm[:n_val]] for k, v in ds.train.items()}
    ds.train = {k: v[perm[n_val:]] for k, v in ds.train.items()}


def prepare_data(config) -> tuple[Dataset, Scaler]:
    ds = load_dataset(config.data)
    if len(ds.train["x"]) == 0:
        raise InputError(f"data {config.data.name}: the training split (normal samples) is empty")
    split_validation(ds, config.data.val_fraction, config.seed)
    limit = config.data.limit
    ds.train = limit_rows(ds.train, limit, config.seed)
    ds.val = limit_rows(ds.val, limit, config.seed)
    if limit and len(ds.test["x"]) > limit:
        keep = np.sort(np.random.default_rng(config.seed).choice(len(ds.test["x"]), limit, replace=False))
        ds.test = {k: v[keep] for k, v in ds.test.items()}
        ds.test_labels = None if ds.test_labels is None else ds.test_labels[keep]
        ds.test_ids = None if ds.test_ids is None else [ds.test_ids[i] for i in keep]
    scaler = Scaler.fit(config.data.scaling, ds.train["x"], ds.train.get("mask"))
    for split in (ds.train, ds.val, ds.test):
        split["x"] = scaler.transform(split["x"])
    return ds, scaler


def member_metrics(member_errors: dict, labels: np.ndarray, th) -> dict:
    """Each member scored alone (its own threshold): K seeds of one config in one vmapped run."""
    per = [classification_metrics(labels, member_errors["test"][k],
                                  scoring.threshold(member_errors[th.fit_on][k], th.method, th.k, th.percentile))
           for k in range(len(member_errors["test"]))]
    return {key: {"mean": float(np.mean([m[key] for m in per])), "std": float(np.std([m[key] for m in per])),
                  "values": [m[key] for m in per]}
            for key in ("roc_auc", "pr_auc", "f1", "precision", "recall")}


def _fmt(metrics: dict) -> str:
    return " ".join(f"{k}={np.mean(v):.4g}" for k, v in metrics.items())


def run(config, should_stop: Callable[[], bool] | None = None, log=print) -> dict:
    """Runs one experiment; returns the summary that is also written to ``metrics.json``."""
    config = resolve(config)
    data_format = config.data.get("format", "memory")
    if data_format not in ("memory", "sharded"):
        raise InputError(f"config key data.format: {data_format!r} is not 'memory' or 'sharded'")
    if data_format == "sharded":
        from research import stream_run
        return stream_run.run(config, should_stop=should_stop, log=log)
    scoring.check_normalizer(config.score.normalize)
    scoring.check_threshold(config.threshold)
    check_analyses(config)
    check_train_config(config.train)
    t_start = time.time()
    lead = jax.process_index() == 0
    ds, scaler = prepare_data(config)
    rundir = RunDir(config.run.root, config.experiment, config.run.name, writer=lead)
    if lead:
        log(f"run directory: {rundir.path}")
    rundir.write_json("config.json", json.loads(config.to_json_best_effort()))

    model = build_model(config.model)
    tc = config.train
    steps = len(ds.train["x"]) // tc.batch_size
    if steps == 0:
        raise InputError(f"config key train.batch_size: {tc.batch_size} is larger than the "
                         f"{len(ds.train['x'])} training rows")
    trainer = Trainer.from_config(model, tc, steps)
    seeds = [config.seed + i for i in range(tc.ensemble_size)]
    rundir.write_json("run.json", {
        "seeds": seeds, "git": git_info(), "argv": sys.argv, "python": platform.python_version(),
        "jax": jax.__version__, "devices": [str(d) for d in jax.devices()],
        "process_count": jax.process_count(), "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "n_train": len(ds.train["x"]), "n_val": len(ds.val["x"]), "n_test": len(ds.test["x"]),
        "data": ds.meta})

    train, val, test = trainer.put(ds.train), trainer.put(ds.val), trainer.put(ds.test)
    sample_shape = ds.train["x"].shape[1:]
    state = trainer.init(seeds, sample_shape)
    ckpt = checkpoints.Checkpoints(rundir.checkpoints)
    history: list[dict] = []
    log_path = rundir.path / "log.jsonl"
    if config.run.resume and ckpt.latest_epoch() is not None:
        state = ckpt.restore(state)
        start = ckpt.latest_epoch()
        if log_path.exists():
            history = [r for r in map(json.loads, log_path.read_text().splitlines()) if r["epoch"] <= start]
        if lead:
            log_path.write_text("".join(json.dumps(r) + "\n" for r in history))
            log(f"resumed from epoch {start} ({rundir.checkpoints / 'latest'})")
    elif lead and log_path.exists():
        log_path.unlink()

    start_epoch = int(np.asarray(state.epoch)[0])
    progress = Progress(tc.epochs, start_epoch, desc=config.experiment, enabled=lead)
    t_train = time.time()

    def on_epoch(st, metrics):
        epoch = int(np.asarray(st.epoch)[0])
        record = {"epoch": epoch, "train_loss": metrics["train_loss"].tolist(),
                  "val_loss": metrics["val_loss"].tolist(), "time": round(time.time() - t_train, 3)}
        history.append(record)
        rundir.append_jsonl("log.jsonl", record)
        progress.update(_fmt(metrics))
        if tc.checkpoint_every and epoch % tc.checkpoint_every == 0:
            ckpt.save(st)

    stop = should_stop or (lambda: False)
    state = fit(trainer, state, train, val, tc.epochs, on_epoch=on_epoch, should_stop=stop)
    progress.close()
    ckpt.save(state)
    train_seconds = time.time() - t_train
    epochs_done = int(np.asarray(state.epoch)[0])
    if epochs_done < tc.epochs:
        ckpt.close()
        if lead:
            log(f"stopped at epoch {epochs_done}/{tc.epochs}; checkpoint saved, resume with "
                f"--config.run.name={rundir.path.name} --config.run.resume=True")
        return {"stopped_at_epoch": epochs_done, "run_dir": str(rundir.path)}
    ckpt.close()

    params = state.best_params if tc.use_best else state.params
    member_errors, recon = {}, None
    for split, data in (("train", train), ("val", val), ("test", test)):
        r, e = trainer.predict(params, data)
        member_errors[split] = scoring.normalize(e, data["x"], config.score.normalize)
        if split == "test":
            recon = np.asarray(r)
    errors, spread = {}, {}
    for split, e in member_errors.items():
        errors[split], spread[split] = scoring.ensemble_scores(e)

    th = config.threshold
    thr = scoring.threshold(errors[th.fit_on], th.method, th.k, th.percentile)
    flags = scoring.flag(errors["test"], thr)
    labels = ds.test_labels
    summary = {
        "experiment": config.experiment, "run_dir": str(rundir.path),
        "threshold": {"value": thr, "method": th.method, "fit_on": th.fit_on, "k": th.k,
                      "percentile": th.percentile},
        "n_flagged": int(flags.sum()), "n_test": int(len(flags)),
        "mean_error": {k: float(v.mean()) for k, v in errors.items()},
        "train": {"epochs": epochs_done, "seconds": round(train_seconds, 2),
                  "final_train_loss": history[-1]["train_loss"] if history else None,
                  "final_val_loss": history[-1]["val_loss"] if history else None,
                  "best_val_loss": np.asarray(state.best_val).tolist(),
                  "best_epoch": np.asarray(state.best_epoch).tolist()},
        "seeds": seeds,
    }
    if labels is not None:
        summary["test"] = classification_metrics(labels, errors["test"], thr)
        if tc.ensemble_size > 1:
            summary["members"] = member_metrics(member_errors, labels, th)

    ids = ds.test_ids or [str(i) for i in range(len(flags))]
    columns = {"id": ids, "score": errors["test"], "score_std": spread["test"], "flag": flags}
    if labels is not None:
        columns["label"] = labels
    rundir.write_csv("scores.csv", columns)

    recon_mean = recon.mean(0)
    if config.plots.enabled and lead:
        plots.loss_curves(history, rundir.plot_path("loss.png"))
        plots.error_histogram(errors["test"], thr, rundir.plot_path("error_hist.png"), labels)
        plots.error_scatter(errors["test"], thr, rundir.plot_path("error_scatter.png"), labels)
        plots.reconstruction_examples(
            ds.test["x"], recon_mean, errors["test"], rundir.plot_path("examples.png"), kind=ds.kind,
            axis=ds.axis, axis_label=ds.axis_label, n=config.plots.n_examples, ids=ds.test_ids,
            mask=ds.test.get("mask"))
        if labels is not None and len(np.unique(labels)) == 2:
            plots.roc_curve(labels, errors["test"], rundir.plot_path("roc.png"))

    if config.analyses:
        ctx = RunContext(config=config, dataset=ds, run=rundir, trainer=trainer, state=state, params=params,
                         recon_test=recon, errors=errors, errors_std=spread, threshold=thr, flags=flags,
                         scaler=scaler)
        summary["analyses"] = run_analyses(config.analyses, ctx)
    summary["seconds_total"] = round(time.time() - t_start, 2)
    rundir.write_json("metrics.json", summary)
    return summary
