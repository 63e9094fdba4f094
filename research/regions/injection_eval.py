"""Injection evaluation of the SDSS region detector on real, held-out spectra.

Trains the CNN-skip model of ``experiments/sdss_cnn_skip.py`` on the training galaxies (or loads
the parameters cached by an earlier run of this script with the same config), injects emission
spikes, absorption troughs and dropped segments of known amplitude (in local-noise sigma) into
the held-out galaxies, and scores the detected regions (precision, recall, IoU per amplitude).

The seed detector parameters are reported as they are; then a small grid of detector settings is
tuned on one set of injections (``--tune-seed``) and the best one is reported on a fresh set
(``--seed``), so the tuned numbers are not scored on the injections they were chosen with.

    python -m research.regions.injection_eval             # writes results/sdss_injection.md
    python -m research.regions.injection_eval --set model.skip_levels="()" --epochs 300
    python -m research.regions.injection_eval --folds 4   # every galaxy held out once: results/sdss_injection_folds.md
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import hashlib
import itertools
import json
import pathlib
import shlex
import sys
import time

import numpy as np

from research.paths import REPO_ROOT, SDSS_CACHE
from research.regions import injection

SEED_DETECTOR = {"window_size": 50, "percentile_threshold": 95.0, "range_mismatch_factor": 1.5,
                 "overall_anomaly_threshold": 0.3, "threshold_scope": "spectrum", "noise_units": False}
GRID = {"window_size": (10, 20, 50), "range_mismatch_factor": (None, 1.5, 3.0), "rel_threshold": (None, 0.0),
        # residual preprocessing (research/regions/residuals.py): 0 = raw residual, else the width (px) of the
        # running median of orig - recon added to the reconstruction (removes the smooth model misfit)
        "detrend_width": (0, 201),
        # the absolute threshold: a percentile of the spectrum's own residuals (flux or sigma units), or a
        # fixed window-mean |residual| in sigma units
        "threshold": tuple({"percentile_threshold": p, "noise_units": n} for p in (95.0, 99.0, 99.5) for n in (False, True))
        + tuple({"abs_threshold": a, "noise_units": True} for a in (2.0, 3.0, 4.0, 6.0))}


# the matched filter (research/regions/matched_filter.py): significance of the summed residual in windows of
# 4-64 px, nearby runs joined, with or without a local robust rescaling and the detrended residual
MATCHED_FILTER = {"method": "matched_filter", "scales": (4, 8, 16, 32, 64), "overall_anomaly_threshold": 0.3}
MATCHED_FILTER_GRID = {"significance": (6.0, 8.0, 10.0, 12.0), "merge_gap": (8, 16, 32),
                       "local_scale_block": (0, 512), "detrend_width": (0, 201)}


def grid_settings():
    for values in itertools.product(*GRID.values()):
        det = dict(SEED_DETECTOR)
        for key, value in zip(GRID, values):
            det.update(value if key == "threshold" else {key: value})
        yield det
    for values in itertools.product(*MATCHED_FILTER_GRID.values()):
        yield {**MATCHED_FILTER, **dict(zip(MATCHED_FILTER_GRID, values))}


def load_config(spec: str, sets: list[str], epochs: int | None):
    """The config of ``file.py`` or ``file.py:variant`` with ``KEY=VALUE`` overrides (:func:`research.cli.load_config`)."""
    from research.cli import load_config as load

    return load(spec, [*sets, *([f"train.epochs={epochs}"] if epochs is not None else [])])


def run_name(config) -> str:
    """``injection_<hash>``: the hash of what is trained (data, model, optimiser, seed), so a rerun with
    the same config finds its run and another config gets its own."""
    described = {k: config[k].to_dict() for k in ("data", "model", "train")}
    for key in ("checkpoint_every", "steps_per_call", "eval_batch_size", "use_best"):
        described["train"].pop(key, None)  # research.pipeline.RESUMABLE: a resume may change them
    if not described["train"].get("line_scale"):  # off: the run is the one trained before the key existed
        for key in ("line_scale", "line_width"):
            described["train"].pop(key, None)
    return "injection_" + hashlib.sha1(json.dumps([described, config.seed], sort_keys=True, default=str)
                                       .encode()).hexdigest()[:12]


def train_or_load(config, ds, cache_dir: pathlib.Path, log=print):
    """``(trainer, params)`` of the configured model trained on ``ds`` (split for validation) through
    :func:`research.pipeline.train`, into run ``injection_<hash>`` under ``cache_dir`` with
    ``run.resume='auto'``: a rerun resumes the finished run (nothing left to train) and reuses it, an
    interrupted one continues from its checkpoint."""
    from research import pipeline
    from research.config import resolve
    from research.data import split_validation

    config = resolve(config)
    ds = split_validation(ds, config.data.val_fraction, config.seed)
    config.run.root = str(cache_dir)
    config.run.name = run_name(config)
    config.run.resume = "auto"
    config.run.tensorboard = False
    result = pipeline.train(config, ds.train, ds.val, seeds=[config.seed], log=log,
                            run_info={"n_train": len(ds.train["x"]), "n_val": len(ds.val["x"]),
                                      "train_ids": ds.meta.get("train_ids")})
    pipeline.release()
    if result.stopped:
        raise SystemExit(result.exit_code)
    params = result.state.best_params if config.train.use_best else result.state.params
    return result.trainer, params


def held_out_part(config, fold, args) -> dict:
    """The held-out galaxies of the config's split (``fold`` None) or of one cross-validation fold, and the
    reconstructions of the model trained without them."""
    from research.data import load_dataset, split_validation

    config = copy.deepcopy(config)
    if fold is not None:
        config.data.n_folds, config.data.fold = args.folds, fold
    ds = load_dataset(config.data)
    normal = ds.test_labels == 0
    ids = [i for i, n in zip(ds.test_ids, normal) if n]
    print(f"{'' if fold is None else f'fold {fold}: '}{len(ds.train['x'])} training spectra, {len(ids)} held-out "
          f"{ds.meta['train_classes']} spectra: {', '.join(ids)}", flush=True)
    ds = split_validation(ds, config.data.val_fraction, config.seed)
    trainer, params = train_or_load(config, ds, pathlib.Path(args.cache))

    def reconstruct(xb):
        recon, _ = trainer.predict(params, trainer.put({"x": np.asarray(xb, np.float32)}))
        return np.asarray(recon)[0]

    x = ds.test["x"][normal]
    # the training and validation galaxies as the model reconstructs them: calibration of the model error
    calibration = {k: np.concatenate([ds.train[k], ds.val[k]]) for k in ("x", "ivar", "mask")}
    return {"x": x, "ivar": ds.test["ivar"][normal], "mask": ds.test["mask"][normal], "ids": ids, "axis": ds.axis,
            "n_train": len(ds.train["x"]), "reconstruct": reconstruct, "recon": reconstruct(x),
            "calibration": {**calibration, "recon": reconstruct(calibration["x"])}}


def select(rows: list[dict], amplitude: float, key: str = "precision") -> tuple:
    """Ranking of a detector setting at ``amplitude``: meets the target first, then recall, then precision
    (``key``: 'precision' counts every region, 'precision_new' leaves out those already in the clean spectrum)."""
    r = next(r for r in rows if r["kind"] == "all" and r["amplitude"] == amplitude)
    p = 0.0 if np.isnan(r[key]) else r[key]
    return (p >= 0.8 and r["recall"] >= 0.9, min(r["recall"], p / 0.8 * 0.9), r["recall"], p)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "experiments" / "sdss_cnn_skip.py"))
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (python literal)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--amplitudes", default="1,2,3,5,8,10")
    parser.add_argument("--copies", type=int, default=10, help="injected copies per held-out spectrum and kind")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--tune-amplitude", type=float, default=5.0)
    parser.add_argument("--no-tune", action="store_true")
    parser.add_argument("--folds", type=int, default=0,
                        help="> 1: cross-validation, every galaxy held out by one fold (one model per fold); "
                             "default: the config's single split")
    parser.add_argument("--out", default=None, help="default results/sdss_injection.md "
                        "(sdss_injection_folds.md with --folds)")
    parser.add_argument("--cache", default=str(SDSS_CACHE))
    args = parser.parse_args(argv)
    args.out = args.out or str(REPO_ROOT / "results" / f"sdss_injection{'_folds' if args.folds > 1 else ''}.md")

    config = load_config(args.config, args.set, args.epochs)
    parts = [held_out_part(config, fold, args) for fold in (range(args.folds) if args.folds > 1 else [None])]
    held_ids = [i for part in parts for i in part["ids"]]
    n_train = sorted({part["n_train"] for part in parts})
    train_text = f"{n_train[0]}" if len(n_train) == 1 else f"{n_train[0]}-{n_train[-1]}"
    split_text = (f"{args.folds} folds, every galaxy held out by one of them and reconstructed by the model trained "
                  "without it" if args.folds > 1 else "the config's split")
    amplitudes = [float(a) for a in args.amplitudes.split(",")]
    x, ivar, mask, clean_recon = (np.concatenate([part[k] for part in parts]) for k in ("x", "ivar", "mask", "recon"))
    sizes = [len(part["x"]) for part in parts]

    def trials_for(amps, seed):
        """Injections into every part's galaxies, reconstructed by that part's own model."""
        return injection.concat_trials([injection.make_trials(part["x"], part["ivar"], part["mask"],
                                                              part["reconstruct"], amps, copies=args.copies,
                                                              seed=seed + 100 * i)
                                        for i, part in enumerate(parts)], sizes)

    chi = np.abs(x - clean_recon) * np.sqrt(ivar)
    chi_pct = np.percentile(chi[mask], [50, 95, 99])
    t0 = time.time()
    trials = trials_for(amplitudes, args.seed)
    seed_rows = injection.score_trials(trials, x, ivar, mask, clean_recon, SEED_DETECTOR)
    copied = {}  # how much of each injected feature the model reproduces (1 = all of it, 0 = none)
    for kind in injection.KINDS:
        frac = []
        for t in trials:
            for f in t.features:
                if f.kind == kind:
                    added = (t.x[f.spectrum] - x[f.source])[f.start:f.end]
                    followed = (t.recon[f.spectrum] - clean_recon[f.source])[f.start:f.end]
                    frac.append(float(np.sum(followed * added) / np.sum(added * added)))
        copied[kind] = float(np.median(frac))
    print(f"seed parameters scored ({time.time() - t0:.0f} s)", flush=True)

    def tune(tune_trials, clean):
        """Every grid setting ranked by :func:`select` on the tuning injections (both precisions: a dict)."""
        scored = [(injection.score_trials(tune_trials, x, ivar, mask, clean, det), det) for det in grid_settings()]
        return {k: sorted(((select(rows, args.tune_amplitude, k), det) for rows, det in scored),
                          key=lambda t: t[0], reverse=True) for k in ("precision", "precision_new")}

    # the ceiling of the detector: a "model" that knows each clean spectrum exactly and ignores the
    # injection, so its residual is a fresh noise draw plus the injected feature
    sigma = 1 / np.sqrt(np.where(ivar > 0, ivar, np.inf))
    oracle_clean = (x + sigma * np.random.default_rng(args.seed + 7).standard_normal(x.shape)).astype(np.float32)

    def with_oracle(ts):
        return [dataclasses.replace(t, recon=oracle_clean[t.source]) for t in ts]

    best, best_rows, ranking = None, None, []
    best_new = best_new_rows = ranking_new = clean_regions = None
    oracle_rows = injection.score_trials(with_oracle(trials), x, ivar, mask, oracle_clean, SEED_DETECTOR)
    oracle_best, oracle_best_rows = None, None
    if not args.no_tune:
        tune_trials = trials_for([args.tune_amplitude], args.tune_seed)
        rankings = tune(tune_trials, clean_recon)
        ranking, ranking_new = rankings["precision"], rankings["precision_new"]
        best, best_new = ranking[0][1], ranking_new[0][1]
        best_rows = injection.score_trials(trials, x, ivar, mask, clean_recon, best)
        best_new_rows = injection.score_trials(trials, x, ivar, mask, clean_recon, best_new)
        clean_regions = injection.detect(x, clean_recon, mask, ivar, best_new)
        print(f"tuned on seed {args.tune_seed}: {best}; by P_new: {best_new}", flush=True)
        oracle_best = tune(with_oracle(tune_trials), oracle_clean)["precision"][0][1]
        oracle_best_rows = injection.score_trials(with_oracle(trials), x, ivar, mask, oracle_clean, oracle_best)

    def fmt(det):
        return ", ".join(f"{k}={v}" for k, v in det.items())

    def quote(arg):  # data.frame='rest' reads better as "data.frame='rest'" than shlex's quoting
        return f'"{arg}"' if "'" in arg and not any(c in arg for c in '"$`\\') else shlex.quote(arg)

    command = " ".join(["python -m research.regions.injection_eval", *map(quote, sys.argv[1:] if argv is None else argv)])
    lines = ["# SDSS region detection: injection evaluation", "", f"`{command}`", "",
             f"Model `{config.model.name}` ({fmt(dict(config.model))}; data frame {config.data.frame}), "
             f"trained {config.train.epochs} epochs on "
             f"{train_text} galaxy spectra ({split_text}); features injected into the {len(held_ids)} "
             "held-out galaxies "
             f"({args.copies} copies per spectrum, kind and amplitude, one feature per copy; seed {args.seed}). "
             "Widths: emission Gaussian sigma 2-5 px, absorption 5-12 px, dropped segment 20-80 px. "
             "Amplitude = peak height in units of the local noise sigma (median 1/sqrt(ivar) over the feature).",
             "", "P = precision over all predicted regions in the injected spectra; P_new = the same without "
             "false regions that the detector already reports in the clean spectrum (the galaxy's own features); "
             "R = recall; IoU = mean over features (0 when missed). A region matches a feature when they overlap "
             f"with IoU >= {injection.MIN_IOU} (so a region covering most of the spectrum matches nothing).", "",
             f"## Seed parameters ({fmt(SEED_DETECTOR)})", "", injection.markdown_table(seed_rows), ""]
    clean_rate = next(r["clean_regions_per_spectrum"] for r in seed_rows if r["kind"] == "all")
    lines += [f"Regions reported in the clean held-out spectra: {clean_rate:.2f} per spectrum.", "",
              "Model diagnostics on the held-out galaxies: |residual| / sigma median "
              f"{chi_pct[0]:.2f}, 95th percentile {chi_pct[1]:.2f}, 99th {chi_pct[2]:.2f} (pure noise: 0.67 / 1.96 / "
              "2.58); share of an injected feature the reconstruction reproduces (median over features; 1 = copied "
              "through, 0 = ignored): " + ", ".join(f"{k} {v:.2f}" for k, v in copied.items()) + ".", ""]
    if best is not None:
        clean_best = next(r["clean_regions_per_spectrum"] for r in best_rows if r["kind"] == "all")
        lines += [f"## Tuned parameters ({fmt(best)})", "",
                  f"Chosen from {len(ranking)} settings on a separate injection set (seed {args.tune_seed}, amplitude "
                  f"{args.tune_amplitude:g} sigma), ranked by meeting recall >= 0.9 at precision >= 0.8, then recall. "
                  "The window rule (research/regions/window.py): window_size, range_mismatch_factor, rel_threshold and the "
                  "absolute threshold (percentile 95/99/99.5 in flux or sigma units, or a fixed 2/3/4/6 sigma); "
                  "the matched filter (research/regions/matched_filter.py): significance 6/8/10/12 sigma, merge_gap "
                  "8/16/32 px, local_scale_block 0/512; both with detrend_width 0/201 (residual without / with its "
                  "running median removed).", "",
                  injection.markdown_table(best_rows), "",
                  f"Regions reported in the clean held-out spectra: {clean_best:.2f} per spectrum.", ""]
        lines += ["Top 5 settings on the tuning set (target met, recall, precision at the tuning amplitude):", ""]
        lines += [f"- {fmt(det)}: {rank[0]}, R={rank[2]:.2f}, P={rank[3]:.2f}" for rank, det in ranking[:5]]
        clean_new = next(r["clean_regions_per_spectrum"] for r in best_new_rows if r["kind"] == "all")
        n_feat = next(r["n_features"] for r in best_new_rows if r["kind"] == "all")
        p_cap = n_feat / (n_feat + args.copies * len(injection.KINDS) * len(clean_regions.start))
        per_galaxy = ", ".join(f"{held_ids[i]} {int((clean_regions.spectrum == i).sum())}" for i in range(len(held_ids)))
        lines += ["", f"## Tuned by P_new ({fmt(best_new)})", "",
                  "The same grid and tuning set, ranked by P_new: the region-level precision of an injection-recovery "
                  "test, where regions the detector already reports in the clean spectrum (the held-out galaxy's "
                  "own features) are neither right nor wrong. P still counts them as false: it cannot reach 0.8 while "
                  "the held-out galaxies' own lines are detected (e.g. 2880-54509-0230, whose [OIII] 5007 line is "
                  f"about 100 times its continuum, is anomalous next to the {train_text} training galaxies).", "",
                  injection.markdown_table(best_new_rows), "",
                  f"Regions reported in the clean held-out spectra: {clean_new:.2f} per spectrum ({per_galaxy}). "
                  f"Each is counted false in every injected copy of its galaxy ({args.copies * len(injection.KINDS)}), "
                  f"so with one region per found feature P is at most about {n_feat} / ({n_feat} + "
                  f"{args.copies * len(injection.KINDS)} x {len(clean_regions.start)}) = {p_cap:.2f}, whatever the "
                  "detector does with the injections.", "",
                  "Top 5 settings by P_new on the tuning set (target met, recall, P_new):", ""]
        lines += [f"- {fmt(det)}: {rank[0]}, R={rank[2]:.2f}, P_new={rank[3]:.2f}" for rank, det in ranking_new[:5]]
        lines += [""]
    lines += ["## Ceiling of the detector: oracle reconstruction", "",
              "The same injections, scored against an 'oracle' reconstruction: each clean held-out spectrum plus a "
              "fresh noise draw from its ivar, whatever was injected. This is what a model that reconstructs "
              "normal galaxies to the noise level, and nothing else, would give.", "",
              f"Seed parameters: {fmt(SEED_DETECTOR)}", "", injection.markdown_table(oracle_rows), ""]
    if oracle_best is not None:
        lines += [f"Tuned the same way on the oracle: {fmt(oracle_best)}", "",
                  injection.markdown_table(oracle_best_rows), ""]
    text = "\n".join(lines)
    out = pathlib.Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    (out.with_suffix(".json")).write_text(json.dumps({"seed": seed_rows, "tuned": best_rows, "tuned_params": best,
                                                      "reproduced_fraction": copied, "chi_percentiles": chi_pct.tolist(),
                                                      "tuned_new": best_new_rows, "tuned_new_params": best_new,
                                                      "oracle_seed": oracle_rows, "oracle_tuned": oracle_best_rows,
                                                      "oracle_tuned_params": oracle_best},
                                                     indent=1, default=str))
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
