"""Cross-validated SDSS evaluation over every usable galaxy: injection recovery, learning curve, latent density.

Every galaxy is held out by one of ``--folds`` folds and reconstructed by the model trained without it
(trained through :func:`research.pipeline.train` into cached runs as in :mod:`research.regions.injection_eval`,
whose pieces this reuses). Per fold: the
spectrum-level ROC-AUC of the test anomalies (quasars, stars) for the reconstruction error, the latent
density and their rank average (:mod:`research.analyses.latent_density`). Over all folds: features
injected at ``--amplitudes`` into the held-out galaxies, the matched-filter grid (on the residual
detrended once, over ``--detrend`` px) tuned on a separate injection seed and scored on a fresh one,
beside the seed window rule and the config's detector. Then the learning curve: fold 0's held-out
galaxies reconstructed by models trained on ``--curve`` galaxies (a seeded subset, ``data.n_train``),
scored at 5 sigma with the fixed detectors. ``--relative`` adds ``regions.relative_error`` values to the
grid (:func:`research.regions.residuals.relative_error`), ``--noise-width`` ``regions.noise_width`` values
(:func:`research.regions.residuals.noise_scale`), ``--line-tolerance`` ``regions.line_tolerance``
(:func:`research.regions.residuals.line_error`), ``--local-scale`` the matched filter's
``local_scale_block``; with more than one combination, the best setting at each is reported side by side.

    python -m research.regions.injection_cv --folds 3 --copies 2 --curve 20,40 --line-tolerance 0,0.7 \
        --local-scale 0,4096 --significance 5,5.5,6,8 --merge-gap 32,64,96 --quantiles 0,0.75,0.9 \
        --check-seeds 2,3,4,5                                  # results/sdss_injection_cv.md
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import pathlib
import sys
import time

import numpy as np

from research.paths import REPO_ROOT, SDSS_CACHE
from research.regions import injection
from research.regions.injection_eval import SEED_DETECTOR, held_out_part, load_config, select, train_or_load
from research.regions.residuals import detrend, model_error, with_model_error

MATCHED = {"method": "matched_filter", "scales": (4, 8, 16, 32, 64), "overall_anomaly_threshold": 0.3}
# the model error (research/regions/residuals.py model_error) added to the noise: its quantile over the
# fold's training galaxies, 0 = off
GRID = [{**MATCHED, "significance": s, "merge_gap": g, "model_error_quantile": q}
        for q in (0.0, 0.5, 0.75, 0.9) for s in (5.0, 6.0, 8.0, 10.0) for g in (16, 32)]


VARIANT_KEYS = {"relative_error": 0.0, "noise_width": 0, "line_tolerance": 0.0, "local_scale_block": 0}


def grid(relative_errors=(0.0,), noise_widths=(0,), line_tolerances=(0.0,), local_scale_blocks=(0,),
         significances=None, merge_gaps=None, quantiles=None) -> list[dict]:
    """:data:`GRID` (its significances, merge gaps and model-error quantiles replaced by the values given) at
    every combination of ``regions.relative_error`` (``--relative``), ``regions.noise_width``
    (``--noise-width``), ``regions.line_tolerance`` (``--line-tolerance``) and ``regions.local_scale_block``
    (``--local-scale``); 0 = the grid as it is."""
    axes = {key: sorted({d[key] for d in GRID}, key=[d[key] for d in GRID].index)
            for key in ("model_error_quantile", "significance", "merge_gap")}
    for key, values in (("model_error_quantile", quantiles), ("significance", significances), ("merge_gap", merge_gaps)):
        if values:
            axes[key] = list(values)
    base = [{**MATCHED, "significance": s, "merge_gap": g, "model_error_quantile": q}
            for q in axes["model_error_quantile"] for s in axes["significance"] for g in axes["merge_gap"]]
    out = []
    for values in itertools.product(relative_errors, noise_widths, line_tolerances, local_scale_blocks):
        extra = {k: v for k, v in zip(VARIANT_KEYS, values) if v}
        out += [{**d, **extra} for d in base]
    return out


def _variant(d) -> tuple:
    return tuple(type(default)(d.get(k, default)) for k, default in VARIANT_KEYS.items())


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fold_scores(config, fold, args) -> dict:
    """Reconstruction error and latent density of one fold's test split, and their AUCs."""
    import jax

    from research.analyses.latent_density import LatentDensity, auc_table, latent_codes
    from research.data import load_dataset

    config = copy.deepcopy(config)
    config.data.n_folds, config.data.fold = args.folds, fold
    ds = load_dataset(config.data)
    trainer, params = train_or_load(config, ds, pathlib.Path(args.cache), log=log)
    first = jax.tree_util.tree_map(lambda a: a[0], params)
    test = {k: ds.test[k] for k in ("x", "mask", "weights") if k in ds.test}
    error = np.asarray(trainer.errors(params, trainer.put(test)))[0]
    density = LatentDensity(**config.latent.to_dict()).fit(latent_codes(trainer.model, first, ds.train["x"]))
    score = density.score(latent_codes(trainer.model, first, ds.test["x"]))
    return {"labels": ds.test_labels.tolist(), "ids": ds.test_ids, "error": error.tolist(), "density": score.tolist(),
            "components": f"{density.covariance_type} x {density.n_components}",
            "roc_auc": auc_table(ds.test_labels, error, score)}


class Evaluation:
    """Injections into the held-out galaxies of some parts (folds), each reconstructed by its own model."""

    def __init__(self, parts, copies, width, error_width=5):
        self.parts, self.copies, self.width, self.error_width = parts, copies, width, error_width
        self.x, self.ivar, self.mask, self.clean = (np.concatenate([p[k] for p in parts])
                                                    for k in ("x", "ivar", "mask", "recon"))
        self.clean_detrended = detrend(self.x, self.clean, self.mask, width, self.ivar)
        self.ivars = {0.0: self.ivar}
        self.axis = parts[0].get("axis")  # the common grid (rest wavelengths for regions.line_tolerance)

    def ivar_for(self, quantile: float) -> np.ndarray:
        """The held-out galaxies' ivar with each fold's model error (that quantile over its training
        galaxies' detrended residuals) added to the noise; 0 = the noise alone."""
        if quantile not in self.ivars:
            rows = []
            for p in self.parts:
                c = p["calibration"]
                recon = detrend(c["x"], c["recon"], c["mask"], self.width, c["ivar"])
                sigma = model_error(c["x"], recon, c["mask"], c["ivar"], quantile, self.error_width)
                rows.append(with_model_error(p["ivar"], sigma))
            self.ivars[quantile] = np.concatenate(rows)
        return self.ivars[quantile]

    def trials(self, amplitudes, seed, detrended=True):
        trials = injection.concat_trials([injection.make_trials(p["x"], p["ivar"], p["mask"], p["reconstruct"], amplitudes,
                                                                copies=self.copies, seed=seed + 100 * i)
                                          for i, p in enumerate(self.parts)], [len(p["x"]) for p in self.parts])
        if detrended:  # once for every setting of the grid (detrend_width is not a grid key here)
            for t in trials:
                t.recon = detrend(t.x, t.recon, self.mask[t.source], self.width, self.ivar[t.source])
        return trials

    def score(self, trials, detector, detrended=True):
        clean = self.clean_detrended if detrended else self.clean
        detector, ivar = self._split(detector)
        return injection.score_trials(trials, self.x, ivar, self.mask, clean, detector, axis=self.axis)

    def _split(self, detector):
        detector = dict(detector)
        return detector, self.ivar_for(float(detector.pop("model_error_quantile", 0.0) or 0.0))

    def clean_regions(self, detector, ids):
        detector, ivar = self._split(detector)
        regions = injection.detect(self.x, self.clean_detrended, self.mask, ivar, detector, self.axis)
        return {ids[i]: int((regions.spectrum == i).sum()) for i in range(len(self.x))}


def run(args) -> dict:
    config = load_config(args.config, args.set, args.epochs)
    t0 = time.time()
    parts, latent = [], []
    for fold in range(args.folds):
        parts.append(held_out_part(config, fold, args))
        latent.append(fold_scores(config, fold, args))
        log(f"fold {fold}: {latent[-1]['roc_auc']} ({time.time() - t0:.0f} s)")
    amplitudes = [float(a) for a in args.amplitudes.split(",")]
    error_width = int(config.regions.model_error_width)
    ev = Evaluation(parts, args.copies, args.detrend, error_width)
    tune = ev.trials([5.0], args.tune_seed)
    values = {"relative_errors": [float(v) for v in args.relative.split(",") if v],
              "noise_widths": [int(v) for v in args.noise_width.split(",") if v],
              "line_tolerances": [float(v) for v in args.line_tolerance.split(",") if v],
              "local_scale_blocks": [int(v) for v in args.local_scale.split(",") if v]}
    axes = {"significances": [float(v) for v in args.significance.split(",") if v],
            "merge_gaps": [int(v) for v in args.merge_gap.split(",") if v],
            "quantiles": [float(v) for v in args.quantiles.split(",") if v]}
    scored = [(ev.score(tune, d), d) for d in grid(**values, **axes)]
    ranked = {k: sorted(((select(rows, 5.0, k), d) for rows, d in scored), key=lambda t: t[0], reverse=True)
              for k in ("precision", "precision_new")}
    ranked["precision_at_recall"] = sorted(((recall_first(rows, 5.0), d) for rows, d in scored),
                                           key=lambda t: t[0], reverse=True)
    variants = list(itertools.product(*values.values()))
    if len(variants) > 1:  # the best setting at each combination of the added keys, side by side
        for variant in variants:
            name = "_".join(f"{k}_{v:g}" for k, v in zip(VARIANT_KEYS, variant))
            ranked[f"precision_at_recall_{name}"] = [t for t in ranked["precision_at_recall"] if _variant(t[1]) == variant]
    fresh_raw, fresh = ev.trials(amplitudes, args.seed, detrended=False), ev.trials(amplitudes, args.seed)
    ids = [i for p in parts for i in p["ids"]]
    config_detector = {**MATCHED, "significance": float(config.regions.significance),
                       "merge_gap": int(config.regions.merge_gap),
                       "model_error_quantile": float(config.regions.model_error_quantile)}
    for key, default in VARIANT_KEYS.items():
        if config.regions.get(key):
            config_detector[key] = type(default)(config.regions[key])
    if config.regions.get("line_tolerance"):
        config_detector["line_halfwidth"] = float(config.regions.line_halfwidth)
    cv = {"n_held": len(ids), "n_train": [p["n_train"] for p in parts],
          "seed_rule": ev.score(fresh_raw, SEED_DETECTOR, detrended=False), "default": ev.score(fresh, config_detector)}
    for k, ranking in ranked.items():
        best = ranking[0][1]
        cv[f"tuned_{k}"] = {"params": best, "rows": ev.score(fresh, best), "clean_regions": ev.clean_regions(best, ids)}
    checks = [int(v) for v in args.check_seeds.split(",") if v]
    cv["check_seeds"] = {seed: _all(ev.score(ev.trials([5.0], seed), config_detector), 5.0) for seed in checks}
    log(f"cross-validation scored ({time.time() - t0:.0f} s)")
    detectors = {"default": config_detector, **{k: cv[k]["params"] for k in cv if k.startswith("tuned_")}}

    def curve_point(part):
        single = Evaluation([part], args.copies, args.detrend, error_width)
        trials = single.trials([5.0], args.seed)
        return {"n_train": part["n_train"], **{name: single.score(trials, d) for name, d in detectors.items()}}

    curve = {"all": curve_point(parts[0])}
    for n in [int(v) for v in args.curve.split(",") if v]:
        small = copy.deepcopy(config)
        small.data.n_train = n
        curve[n] = curve_point(held_out_part(small, 0, args))
        log(f"curve n_train={n} scored ({time.time() - t0:.0f} s)")
    return {"folds": args.folds, "copies": args.copies, "amplitudes": amplitudes, "epochs": config.train.epochs,
            "grid": {**axes, "variants": dict(zip(VARIANT_KEYS, values.values()))},
            "seed": args.seed,
            "cv": cv, "curve": curve, "latent": latent}


def recall_first(rows, amplitude: float) -> tuple:
    """Ranking of a setting: recall >= 0.9 first, then strict precision, then recall (the best precision a
    researcher gets while finding nine features in ten)."""
    r = _all(rows, amplitude)
    p = 0.0 if np.isnan(r["precision"]) else r["precision"]
    return (r["recall"] >= 0.9, p, r["recall"])


def _all(rows, amplitude):
    return next(r for r in rows if r["kind"] == "all" and r["amplitude"] == amplitude)


def _cell(r):
    return f"{r['precision']:.2f} / {r['precision_new']:.2f} / {r['recall']:.2f} / {r['iou']:.2f}"


def _describe(g: dict | None) -> str:
    """The tuning grid of a run's JSON, in words (runs written before it was recorded: the plain grid)."""
    g = g or {}
    plain = {k: sorted({d[k] for d in GRID}) for k in ("significance", "merge_gap", "model_error_quantile")}
    sig = g.get("significances") or plain["significance"]
    gap = g.get("merge_gaps") or plain["merge_gap"]
    q = g.get("quantiles") or plain["model_error_quantile"]
    words = [f"significance {'/'.join(f'{v:g}' for v in sig)}σ", f"merge gap {'/'.join(f'{v:g}' for v in gap)} px",
             "model error (its quantile over each fold's training galaxies, added to the noise) "
             + "/".join("off" if not v else f"{v:g}" for v in q)]
    for key, values in (g.get("variants") or {}).items():
        if len(values) > 1 or any(values):
            words.append(f"{key.replace('_', ' ')} " + "/".join("off" if not v else f"{v:g}" for v in values))
    return ", ".join(words)


def _tuned_name(key: str) -> str:
    """``tuned_precision_at_recall_relative_error_0_..._local_scale_block_4096`` -> "best at R >= 0.9 with
    local scale block 4096" (only what is on), other keys -> "tuned for <target>"."""
    target = key.removeprefix("tuned_")
    if not target.startswith("precision_at_recall_"):
        return f"tuned for {target}"
    rest, on = target.removeprefix("precision_at_recall_"), []
    for k in VARIANT_KEYS:
        value, _, rest = rest.removeprefix(k + "_").partition("_")
        if float(value):
            on.append(f"{k.replace('_', ' ')} {value}")
    return "best at R ≥ 0.9 with " + (", ".join(on) if on else "none of the added keys")


def markdown(res: dict, command: str) -> str:
    cv, amps = res["cv"], res["amplitudes"]
    lines = ["# SDSS: cross-validated evaluation over every usable galaxy", "", f"`{command}`", "",
             f"{res['folds']} folds over {cv['n_held']} galaxies, each held out once (models trained {res['epochs']} "
             f"epochs on {min(cv['n_train'])}-{max(cv['n_train'])} galaxies plus validation); {res['copies']} injected "
             "copies per held-out galaxy, kind and amplitude.", "",
             "## Spectrum level: ROC-AUC of the quasars and stars against the held-out galaxies", "",
             "| score | " + " | ".join(f"fold {i}" for i in range(len(res["latent"]))) + " | mean |",
             "|---|" + "---|" * (len(res["latent"]) + 1)]
    for key in ("reconstruction_error", "latent_density", "rank_average"):
        values = [f["roc_auc"][key] for f in res["latent"]]
        lines.append(f"| {key.replace('_', ' ')} | " + " | ".join(f"{v:.3f}" for v in values) + f" | {np.mean(values):.3f} |")
    lines += ["", "## Injections (all feature kinds): P / P_new / R / IoU", "",
              "Matched filter on the residual detrended over 201 px; grid: " + _describe(res.get("grid")) + "; "
              "tuned on injection seed 0 (5σ), reported on seed 1. Tuned for precision / precision_new: target met, "
              "then recall; for precision_at_recall: recall >= 0.9, then strict precision.", "",
              "| detector | " + " | ".join(f"{a:g}σ" for a in amps) + " | regions per clean spectrum |",
              "|---|" + "---|" * (len(amps) + 1)]
    named = [("seed window rule", cv["seed_rule"], None), ("config detector", cv["default"], None)]
    named += [(f"{_tuned_name(k)}: {v['params']['significance']:g}σ, gap {v['params']['merge_gap']}, "
               f"model error q {v['params'].get('model_error_quantile', 0):g}"
               + "".join(f", {k.replace('_', ' ')} {v['params'][k]:g}" for k in VARIANT_KEYS if v["params"].get(k)),
               v["rows"], None)
              for k, v in cv.items() if k.startswith("tuned_")]
    for name, rows, _ in named:
        lines.append(f"| {name} | " + " | ".join(_cell(_all(rows, a)) for a in amps)
                     + f" | {_all(rows, amps[0])['clean_regions_per_spectrum']:.2f} |")
    if checks := cv.get("check_seeds"):
        rows = [(res.get("seed", 1), _all(cv["default"], 5.0))] + [(int(k), v) for k, v in checks.items()]
        lines += ["", "The config detector at 5σ on other injection seeds (P / P_new / R / IoU):", "",
                  "| injection seed | 5σ |", "|---|---|"]
        lines += [f"| {seed} | {_cell(r)} |" for seed, r in rows]
        spread = {k: [r[k] for _, r in rows] for k in ("precision", "recall")}
        lines += ["", "Over these seeds: " + ", ".join(f"{k} {np.mean(v):.3f} ({min(v):.3f}-{max(v):.3f})"
                                                   for k, v in spread.items()) + "."]
    curve_names = [k for k in next(iter(res["curve"].values())) if k != "n_train"]
    lines += ["", "## Learning curve (fold 0's held-out galaxies, 5σ): P / P_new / R / IoU", "",
              "| training galaxies | " + " | ".join(_tuned_name(n) if n != "default" else "config detector"
                                                    for n in curve_names) + " |", "|---|" + "---|" * len(curve_names)]
    for n, point in sorted(res["curve"].items(), key=lambda t: t[1]["n_train"]):
        lines.append(f"| {point['n_train']} ({n}) | " + " | ".join(_cell(_all(point[d], 5.0)) for d in curve_names) + " |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(REPO_ROOT / "experiments" / "sdss_cnn_skip.py"))
    parser.add_argument("--set", action="append", default=[], help="config override KEY=VALUE (python literal)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--amplitudes", default="5,8")
    parser.add_argument("--curve", default="20,40", help="training-set sizes of the learning curve ('' = none)")
    parser.add_argument("--detrend", type=int, default=201)
    parser.add_argument("--relative", default="0", help="regions.relative_error values added to the tuning grid "
                        "(comma-separated; with more than one, the best setting at each is reported too)")
    parser.add_argument("--noise-width", default="0", help="regions.noise_width values (px, the local robust noise "
                        "scale; 0 = off) added to the tuning grid, as --relative")
    parser.add_argument("--line-tolerance", default="0", help="regions.line_tolerance values (the observed line "
                        "excess near known lines, research/regions/residuals.py line_error; 0 = off), as --relative")
    parser.add_argument("--local-scale", default="0", help="regions.local_scale_block values (px: the matched "
                        "filter's significance over its robust scale in blocks; 0 = off), as --relative")
    parser.add_argument("--significance", default="", help="the grid's significances (comma-separated; default "
                        "5,6,8,10); a local scale wants lower ones")
    parser.add_argument("--merge-gap", default="", help="the grid's merge gaps (px; default 16,32)")
    parser.add_argument("--quantiles", default="", help="the grid's model-error quantiles (default 0,0.5,0.75,0.9)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--check-seeds", default="", help="further injection seeds (comma-separated) on which the "
                        "config detector is scored at 5 sigma: how much the reported numbers move with the draw")
    parser.add_argument("--tune-seed", type=int, default=0)
    parser.add_argument("--cache", default=str(SDSS_CACHE))
    parser.add_argument("--from-json", help="write the tables of an earlier run's JSON instead of running")
    parser.add_argument("--out", default=str(REPO_ROOT / "results" / "sdss_injection_cv.md"))
    args = parser.parse_args(argv)
    out = pathlib.Path(args.out)
    command = " ".join(["python -m research.regions.injection_cv", *(sys.argv[1:] if argv is None else argv)])
    if args.from_json:
        res = json.loads(pathlib.Path(args.from_json).read_text())
        command = res.get("command", command)
    else:
        res = {**run(args), "command": command}
        out.parent.mkdir(parents=True, exist_ok=True)
        out.with_suffix(".json").write_text(json.dumps(res, indent=1, default=str))
    out.write_text(markdown(res, command))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
