"""One experiment run, end to end: data -> scaling -> training -> scores -> threshold -> metrics,
plots and analyses, all written to ``runs/<experiment>/<run-name>/``."""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from research import pipeline, scoring
from research.analyses import RunContext, check_analyses, run_analyses
from research.config import resolve
from research.data import check_format, prepare_data
from research.data.scaling import PREPROCESSING, save_preprocessing
from research.metrics import classification_metrics
from research.training import check_train_config


def member_metrics(member_errors: dict, labels: np.ndarray, th) -> dict:
    """Each member scored alone (its own threshold): K seeds of one config in one vmapped run."""
    per = [classification_metrics(labels, member_errors["test"][k],
                                  scoring.threshold(member_errors[th.fit_on][k], th.method, th.k, th.percentile))
           for k in range(len(member_errors["test"]))]
    return {key: {"mean": float(np.mean([m[key] for m in per])), "std": float(np.std([m[key] for m in per])),
                  "values": [m[key] for m in per]}
            for key in ("roc_auc", "pr_auc", "f1", "precision", "recall")}


def run(config, should_stop: Callable[[], bool] | None = None, log=print) -> dict:
    """Runs one experiment; returns the summary that is also written to ``metrics.json``."""
    config = resolve(config)
    scoring.check_normalizer(config.score.normalize)
    scoring.check_threshold(config.threshold)
    check_analyses(config)
    check_train_config(config.train)
    if check_format(config) == "sharded":
        from research import stream_run

        return stream_run.run(config, should_stop=should_stop, log=log)
    pipeline.check(config)
    t_start = time.time()
    ds, scaler = prepare_data(config, log)
    tc = config.train
    seeds = [config.seed + i for i in range(tc.ensemble_size)]
    result = pipeline.train(
        config, ds.train, ds.val, seeds=seeds, should_stop=should_stop, log=log,
        run_info={"n_train": len(ds.train["x"]), "n_val": len(ds.val["x"]), "n_test": len(ds.test["x"]),
                  "data": ds.meta})
    rundir, trainer, state, history = result.rundir, result.trainer, result.state, result.history
    if rundir.writer:  # what research.score needs besides the parameters and the threshold
        save_preprocessing(rundir.path / PREPROCESSING, scaler, ds.train["x"].shape[1:], ds.axis)
    if result.stopped:
        return {"stopped_at_epoch": result.epochs_done, "stopped_at_step": result.steps_done, "run_dir": str(rundir.path),
                "exit_code": result.exit_code}
    lead = rundir.writer
    train, val, test = trainer.put(ds.train), trainer.put(ds.val), trainer.put(ds.test)
    epochs_done, train_seconds = result.epochs_done, result.train_seconds

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
    images = []  # the plots the event log shows too
    if config.plots.enabled and lead:
        from research import plots

        images = [rundir.plot_path("loss.png"), rundir.plot_path("examples.png")]
        plots.loss_curves(history, images[0])
        plots.error_histogram(errors["test"], thr, rundir.plot_path("error_hist.png"), labels)
        plots.error_scatter(errors["test"], thr, rundir.plot_path("error_scatter.png"), labels)
        plots.reconstruction_examples(
            ds.test["x"], recon_mean, errors["test"], images[1], kind=ds.kind,
            axis=ds.axis, axis_label=ds.axis_label, n=config.plots.n_examples, ids=ds.test_ids,
            mask=ds.test.get("mask"))
        if labels is not None and len(np.unique(labels)) == 2:
            plots.roc_curve(labels, errors["test"], rundir.plot_path("roc.png"))

    if config.analyses:
        ctx = RunContext(config=config, dataset=ds, run=rundir, recon_test=recon, errors=errors, scaler=scaler,
                         trainer=trainer, params=params)
        summary["analyses"] = run_analyses(config.analyses, ctx)
    summary["seconds_total"] = round(time.time() - t_start, 2)
    rundir.write_json("metrics.json", summary)
    result.monitor.finish(summary, images)
    return summary


def headline(summary: dict) -> str:
    """The line ``research.train`` prints at the end of the run."""
    parts = [f"{summary['experiment']}: threshold={summary['threshold']['value']:.5g}",
             f"flagged={summary['n_flagged']}/{summary['n_test']}"]
    test = summary.get("test")
    if test:
        parts += [f"roc_auc={test['roc_auc']:.4f}", f"pr_auc={test['pr_auc']:.4f}", f"f1={test['f1']:.4f}",
                  f"confusion={test['confusion']}"]
    members = summary.get("members")
    if members:
        parts += [f"members: roc_auc={members['roc_auc']['mean']:.4f}±{members['roc_auc']['std']:.4f}",
                  f"f1={members['f1']['mean']:.4f}±{members['f1']['std']:.4f}"]
    return " ".join(parts) + f" ({summary['seconds_total']:.1f} s) -> {summary['run_dir']}"
