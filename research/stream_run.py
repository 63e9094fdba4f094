"""The ``reconstruction`` runner on sharded spectra (``data.format='sharded'``): splits, streamed
scoring, regions and figures around the one training pipeline.

The same experiment as the in-memory path, for data that does not fit in memory: ``data.path`` names
a merged shard folder (``python -m data_prep.sdss --format shards``; RF frames and FSDD spectra:
``python -m data_prep.rf --format shards``, ``python -m data_prep.audio``). The splits come from the
catalogue alone (as :mod:`research.data.sdss` makes them: ``train_classes``, ``holdout_fraction`` or
``n_folds``/``fold``; RF and FSDD as :mod:`research.data.rf` and :mod:`research.data.fsdd` do; then
``data.val_fraction``); training is :func:`research.pipeline.train` given
:class:`research.data.stream.Stream` rows (run directory, lock, ``run.json``, resume, checkpoints and
stop signals are the pipeline's), and scoring is :func:`research.stream_score.score_split`. Writes
``metrics.json``, ``scores/scores-*.parquet`` and ``scores/regions-*.parquet`` (each process its own
rows), and figures of the ``regions.top_n`` highest scores and a seeded sample of ``regions.sample_n``
test spectra.
"""

from __future__ import annotations

import time

import jax
from jax.experimental import multihost_utils
import numpy as np

from research import pipeline, scoring, stream_score
from research.data import limit_rows, stream
from research.data.scaling import PREPROCESSING, Scaler, save_preprocessing
from research.data.sdss import _held_out
from research.data.shards import Shards
from research.errors import InputError
from research.metrics import classification_metrics
from research.regions import check_method, uses_ivar
from research.regions.registry import params_of


SHARDED = {"sdss": "sdss", "rf": "rf", "fsdd": "audio"}  # data.name -> the dataset of its shards (manifest.json)


def splits(ds: Shards, data_cfg, seed: int) -> dict[str, np.ndarray]:
    """Catalogue rows of train / val / test (and every row's label), chosen as the in-memory loader (SDSS:
    :func:`research.data.sdss.load`, here :func:`sdss_rows`; RF: :func:`research.data.rf.shard_rows`; FSDD:
    :func:`research.data.fsdd.shard_rows`) and :func:`research.data.load_splits` (validation split,
    ``data.limit``) choose them."""
    if data_cfg.name == "rf":
        from research.data.rf import shard_rows
    elif data_cfg.name == "fsdd":
        from research.data.fsdd import shard_rows
    else:
        shard_rows = sdss_rows
    chosen = shard_rows(ds, data_cfg)
    train, test, limit = chosen["train"], chosen["test"], data_cfg.limit
    fraction = float(data_cfg.val_fraction)
    if fraction <= 0:
        val = train
    else:
        n_val = max(1, int(round(fraction * len(train))))
        if n_val >= len(train):
            raise InputError(f"config key data.val_fraction: {fraction} leaves no training rows (of {len(train)})")
        perm = np.random.default_rng(seed).permutation(len(train))
        train, val = train[perm[n_val:]], train[perm[:n_val]]
    train, val = (limit_rows({"i": a}, limit, seed)["i"] for a in (train, val))
    if limit and len(test) > limit:
        test = test[np.sort(np.random.default_rng(seed).choice(len(test), limit, replace=False))]
    return {"train": train, "val": val, "test": test, "labels": chosen["labels"]}


def sdss_rows(ds: Shards, data_cfg) -> dict[str, np.ndarray]:
    """Train and test catalogue rows of SDSS shards as :func:`research.data.sdss.load` chooses them (before
    the validation split), and every row's label."""
    train_classes = tuple(str(c).upper() for c in (data_cfg.train_classes or ("GALAXY",)))
    classes = np.char.upper(ds.column("class").astype(str))
    normal = np.isin(classes, train_classes)
    usable = np.ones(len(classes), bool)
    if data_cfg.zwarning_ok and "zwarning" in ds.catalogue.column_names:
        usable = ~normal | (ds.column("zwarning") == 0)
        normal &= usable
    if not normal.any():
        raise InputError(f"config key data.train_classes: no spectra of {train_classes} in {ds.folder}")
    split_seed, limit = int(data_cfg.split_seed), data_cfg.limit
    normal_idx = np.random.default_rng(split_seed).permutation(np.flatnonzero(normal))
    held = _held_out(normal_idx, data_cfg, train_classes)
    train = np.setdiff1d(normal_idx, held)
    if int(data_cfg.n_train or 0) > 0:
        train = np.random.default_rng(split_seed + 1).permutation(train)[: int(data_cfg.n_train)]
    train = limit_rows({"i": np.sort(train)}, limit, split_seed)["i"]
    test = limit_rows({"i": np.sort(np.concatenate([held, np.flatnonzero(~normal & usable)]))}, limit, split_seed)["i"]
    return {"train": train, "test": test, "labels": (~normal).astype(np.int32)}


def check_config(config) -> None:
    """The keys the streaming path cannot honour, as one-line errors before any work."""
    if config.data.name not in SHARDED:
        raise InputError(f"config key data.format: shards exist for {', '.join(SHARDED)} only, not "
                         f"{config.data.name!r}")
    if config.data.scaling != "none":
        raise InputError("config key data.scaling: the sharded path streams spectra as stored; use 'none'")
    if not config.data.path:
        raise InputError("config key data.path: the merged shard folder is required with data.format='sharded'")
    if config.train.steps_per_call:
        raise InputError("config key train.steps_per_call: the sharded path runs data.chunk steps per call; use 0")
    scope = (config.get("regions") or {}).get("threshold_scope", "spectrum")
    if config.get("analyses") and scope != "spectrum":
        raise InputError("config key regions.threshold_scope: only 'spectrum' streams (one batch at a time)")


def _prepare(data_cfg, keep=("index",)) -> stream.Prepare:
    if data_cfg.name != "sdss":  # records of values only: x as stored (no mask, no weights)
        return stream.Prepare(fill_masked=False, weight_clip=None, keep=keep)
    weight_clip = float(data_cfg.weight_clip) if data_cfg.ivar_weighting else None
    return stream.Prepare(fill_masked=bool(data_cfg.fill_masked), weight_clip=weight_clip, keep=keep)


def run(config, should_stop=None, log=print) -> dict:
    """Called by :func:`research.experiment.run` with a resolved, checked config."""
    check_config(config)
    pipeline.check(config)
    t_start = time.time()
    ds = Shards(config.data.path)
    if ds.dataset != SHARDED[config.data.name]:
        raise InputError(f"config key data.path: {ds.folder} holds {ds.dataset} shards, not "
                         f"{SHARDED[config.data.name]} ones (data.name={config.data.name!r})")
    rows = splits(ds, config.data, config.seed)
    if skipped := [a for a in config.get("analyses") or () if a != "sdss_regions"]:
        log(f"analyses {', '.join(skipped)}: in-memory runs only, not run on shards")
    tc = config.train
    seeds = [config.seed + i for i in range(tc.ensemble_size)]
    prepare, workers = _prepare(config.data), int(config.data.workers)
    result = pipeline.train(
        config, stream.Stream(ds.source(rows["train"]), prepare, workers),
        stream.Stream(ds.source(rows["val"]), prepare, workers), seeds=seeds, should_stop=should_stop, log=log,
        run_info={**{f"n_{k}": int(len(rows[k])) for k in ("train", "val", "test")},
                  "data": {"source": str(ds.folder), "format": "sharded"}})
    if result.rundir.writer:  # what research.score needs to apply this run to new data (as in memory)
        save_preprocessing(result.rundir.path / PREPROCESSING, Scaler(), (ds.n_pixels,), ds.axis)
    if result.stopped:
        return {"stopped_at_epoch": result.epochs_done, "stopped_at_step": result.steps_done,
                "run_dir": str(result.rundir.path), "exit_code": result.exit_code}
    state = result.state
    params = state.best_params if tc.use_best else state.params
    summary = score_and_report(config, ds, rows, result.trainer, params, result.rundir, state, result.history,
                               result.train_seconds, t_start)
    result.monitor.finish(summary, [])
    return summary


def regions_params(config) -> dict | None:
    """The detector's keyword arguments from ``config.regions`` (None when the run has no regions analysis)."""
    if "sdss_regions" not in tuple(config.get("analyses") or ()):
        return None
    cfg = dict(config.get("regions") or {})
    method = check_method(cfg.get("method") or "window")
    from research.analyses.sdss_regions import preprocess_settings  # lazily, as MODEL_ERROR_FILE below

    return {"method": method, "model_error_quantile": float(cfg.get("model_error_quantile") or 0),
            **preprocess_settings(cfg), **params_of(method, cfg)}


def calibrated_model_error(config, ds, rows, trainer, params, rundir) -> np.ndarray:
    """The model error per pixel over the training and validation spectra (a seeded sample of at most
    ``stream_score.MODEL_ERROR_ROWS`` of them), saved where research.load_run finds it, as in memory."""
    from research.analyses.sdss_regions import MODEL_ERROR_FILE

    cfg = config.regions
    calib = np.unique(np.concatenate([rows["train"], rows["val"]]))  # val is train when val_fraction = 0
    if len(calib) > stream_score.MODEL_ERROR_ROWS:
        calib = np.sort(np.random.default_rng(int(cfg.get("seed", 0))).choice(
            calib, stream_score.MODEL_ERROR_ROWS, replace=False))
    sigma = stream_score.model_error(trainer, params, ds.source(calib), _prepare(config.data, ("index", "ivar")),
                                     quantile=float(cfg.model_error_quantile),
                                     width=int(cfg.get("model_error_width") or 1),
                                     detrend_width=int(cfg.get("detrend_width") or 0))
    if rundir.writer:
        np.save(rundir.path / MODEL_ERROR_FILE, sigma)
    return sigma


def score_and_report(config, ds, rows, trainer, params, rundir, state, history, train_seconds, t_start) -> dict:
    th, normalize = config.threshold, config.score.normalize
    rcfg = regions_params(config)
    needs_ivar = rcfg is not None and uses_ivar(rcfg["method"], (config.get("regions") or {}).get("noise_units"))
    prepare = _prepare(config.data)
    test_prepare = _prepare(config.data, ("index", "ivar") if needs_ivar else ("index",))
    if rcfg is not None and rcfg.pop("model_error_quantile"):
        rcfg["model_sigma"] = calibrated_model_error(config, ds, rows, trainer, params, rundir)
    fit_rows = rows[th.fit_on]
    fit = stream_score.fit_scores(trainer, params, ds.source(fit_rows), prepare, normalize)
    thr = scoring.threshold(fit, th.method, th.k, th.percentile)
    ids = ds.column("id")
    axis = ds.axis
    out = rundir.path / "scores"
    regions_cfg = dict(config.get("regions") or {})
    top_n = int(regions_cfg.get("top_n", 10)) if rcfg is not None else 0
    result = stream_score.score_split(trainer, params, ds.source(rows["test"]), test_prepare, out, threshold=thr,
                                      normalize=normalize, ids=ids, labels=rows["labels"], axis=axis,
                                      regions_cfg=rcfg)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("scores written")  # every process's parts are on disk
    table = stream_score.read_parts(out, columns=["index", "score", "flag", "label"]
                                    + (["region_flag", "n_regions"] if rcfg is not None else []))
    labels, scores = table.column("label").to_numpy(), table.column("score").to_numpy()
    index = table.column("index").to_numpy()
    summary = {
        "experiment": config.experiment, "run_dir": str(rundir.path), "format": "sharded",
        "threshold": {"value": thr, "method": th.method, "fit_on": th.fit_on, "k": th.k, "percentile": th.percentile,
                      "exact": True, "n_fit": int(len(fit))},
        "n_flagged": int(table.column("flag").to_numpy().sum()), "n_test": table.num_rows,
        "mean_error": {th.fit_on: float(fit.mean()), "test": float(scores.mean())},
        "train": {"epochs": int(np.asarray(state.epoch)[0]), "seconds": round(train_seconds, 2),
                  "final_train_loss": history[-1]["train_loss"] if history else None,
                  "final_val_loss": history[-1]["val_loss"] if history else None,
                  "best_val_loss": np.asarray(state.best_val).tolist(),
                  "best_epoch": np.asarray(state.best_epoch).tolist()},
        "seeds": [config.seed + i for i in range(config.train.ensemble_size)],
        "outputs": {"scores": [str(out / f) for f in result["score_files"]],
                    "regions": [str(out / f) for f in result["region_files"]]},
    }
    if len(np.unique(labels)) == 2:
        summary["test"] = classification_metrics(labels, scores, thr)
    if rcfg is not None:
        top = index[np.lexsort((index, -scores))[:top_n]]  # highest scores, ties by catalogue row
        summary["regions"] = {"n_spectra": table.num_rows, "n_flagged": int(table.column("region_flag").to_numpy().sum()),
                              "n_regions": int(table.column("n_regions").to_numpy().sum()),
                              "top": [str(ids[i]) for i in top]}
        sample_n = int(regions_cfg.get("sample_n") or 0)
        sample = np.sort(np.random.default_rng(int(regions_cfg.get("seed", 0))).choice(
            rows["test"], min(sample_n, len(rows["test"])), replace=False)) if sample_n else np.zeros(0, np.int64)
        chosen = np.asarray(sorted(set(top.tolist()) | set(sample.tolist())), np.int64)
        summary["regions"]["sampled_ids"] = [str(ids[i]) for i in sample]
        if config.plots.enabled and len(chosen):  # every process predicts (collective) and plots its own rows
            summary["regions"]["figures"] = figures(trainer, params, ds, chosen, test_prepare, thr, rcfg, axis, ids,
                                                    rundir, normalize)
    summary["seconds_total"] = round(time.time() - t_start, 2)
    rundir.write_json("metrics.json", summary)
    return summary


def figures(trainer, params, ds, chosen, prepare, thr, rcfg, axis, ids, rundir, normalize) -> list[str]:
    """Figures of the chosen catalogue rows only (top scores and the seeded sample): one more small pass."""
    from research.regions import detect
    from research.regions.plots import plot_spectrum
    from research.regions.residuals import preprocess, split_settings

    paths = []
    pre, params_r = split_settings(rcfg)
    cat = {c: ds.column(c) for c in ("class", "z")}
    for rows, recon, score, _ in stream_score.batches(trainer, params, ds.source(chosen), prepare, normalize):
        r_recon, r_ivar = preprocess(rows["x"], recon, rows.get("mask"), rows.get("ivar"), axis=axis, **pre)
        regions = detect(rows["x"], r_recon, rows.get("mask"), axis, ivar=r_ivar, **params_r)
        for j, i in enumerate(rows["index"]):
            title = (f"{ids[i]}   {cat['class'][i]}   z={float(cat['z'][i]):.4f}   score {score[j]:.4g}"
                     + ("  [FLAGGED]" if score[j] > thr else ""))
            paths.append(str(plot_spectrum(rundir.plots / "spectra" / f"spectrum_{ids[i]}.png", axis, rows["x"][j],
                                           r_recon[j], rows["mask"][j], regions.regions_of(j), title)))
    return paths
