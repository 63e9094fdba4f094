"""The standard one-class Fashion-MNIST benchmark, all classes trained as one compiled program.

For each class c a model is trained on the training images of c only and scores every test image
by reconstruction error; the ROC-AUC of c (normal) against the other nine classes is reported,
with the mean over classes. Every (class, seed) model is one member of a ``member_data`` ensemble,
so the ten models share one ``vmap``-ed, jit-compiled epoch. With ``train.ensemble_size`` E > 1
each class gets E members (different seeds) whose errors are averaged.

``python -m research.train --config=experiments/fashion_mnist.py:one_class[_conv2d] [--config.a.b=v]``
"""

from __future__ import annotations

import time

import numpy as np
from sklearn.metrics import roc_auc_score

from research import pipeline, plots, scoring
from research.plots import images as image_plots
from research.config import resolve
from research.data import check_format
from research.data.fashion_mnist import CLASS_NAMES, SHORT_NAMES, folder_of, read_split
from research.errors import InputError
from research.training import Trainer, check_train_config


def class_splits(images, labels, classes, limit: int, val_fraction: float, val_rows: int, seed: int):
    """Per-class training and validation stacks ``(n_classes, n, H, W)``.

    ``val_fraction > 0`` holds that fraction of each class out; otherwise validation re-uses a
    seeded subset of ``val_rows`` training images (loss monitoring only, nothing is selected on it).
    """
    rng = np.random.default_rng(seed)
    per_class = [np.flatnonzero(labels == c) for c in classes]
    n = min(len(idx) for idx in per_class)
    if limit:
        n = min(n, int(limit))
    n_val = int(round(val_fraction * n)) if val_fraction > 0 else 0
    if n - n_val < 1:
        raise InputError(f"config key data.val_fraction: {val_fraction} leaves no training images per class")
    train, val = [], []
    for idx in per_class:
        idx = np.sort(rng.permutation(idx)[:n])
        if n_val:
            val.append(images[idx[:n_val]])
            train.append(images[idx[n_val:]])
        else:
            train.append(images[idx])
            val.append(images[idx[np.sort(rng.permutation(n)[: min(val_rows, n)])]])
    return np.stack(train), np.stack(val)


def auc_table(per_class: dict[str, float], mean: float, spread: dict[str, float] | None = None) -> str:
    """Markdown table of the per-class AUCs and their mean."""
    head = "| class | ROC-AUC |" + (" member std |" if spread else "") + "\n|---|---|" + ("---|" if spread else "")
    rows = [f"| {name} | {auc:.4f} |" + (f" {spread[name]:.4f} |" if spread else "") for name, auc in per_class.items()]
    return "\n".join([head, *rows, f"| **mean** | **{mean:.4f}** |" + (" |" if spread else "")]) + "\n"


def run(config, should_stop=None, log=print) -> dict:
    """Trains all one-class models, scores the test set and writes the run directory."""
    config = resolve(config)
    scoring.check_normalizer(config.score.normalize)
    check_train_config(config.train)
    if check_format(config) != "in_memory":
        raise InputError("config key data.format: the one_class runner trains a dataset per member, in memory only")
    pipeline.check(config)
    t_start = time.time()
    dc, tc = config.data, config.train
    classes = tuple(int(c) for c in dc.classes)
    if not classes or any(not 0 <= c < len(CLASS_NAMES) for c in classes):
        raise InputError(f"config key data.classes: {classes} must name classes in 0..{len(CLASS_NAMES) - 1}")
    folder = folder_of(dc)
    train_x, train_y = read_split(folder, "train")
    test_x, test_y = read_split(folder, "test")
    limit = int(dc.limit or 0)
    if limit and len(test_x) > limit:
        keep = np.sort(np.random.default_rng(config.seed).choice(len(test_x), limit, replace=False))
        test_x, test_y = test_x[keep], test_y[keep]
    train, val = class_splits(train_x, train_y, classes, limit, dc.val_fraction, dc.val_rows, config.seed)

    n_members = len(classes) * tc.ensemble_size
    member_class = np.tile(np.arange(len(classes)), tc.ensemble_size)  # member m models classes[m % n]
    result = pipeline.train(
        config, {"x": train[member_class]}, {"x": val[member_class]},
        seeds=[config.seed + m for m in range(n_members)], member_data=True, should_stop=should_stop, log=log,
        progress_text=lambda m: f"train_loss={m['train_loss'].mean():.4g} val_loss={m['val_loss'].mean():.4g}",
        run_info={"member_class": [classes[c] for c in member_class], "n_train_per_class": int(train.shape[1]),
                  "n_val_per_class": int(val.shape[1]), "n_test": int(len(test_x)), "folder": str(folder)})
    rundir, state, history = result.rundir, result.state, result.history
    if result.stopped:
        return {"stopped_at_epoch": result.epochs_done, "stopped_at_step": result.steps_done, "run_dir": str(rundir.path),
                "exit_code": result.exit_code}
    lead, train_seconds = rundir.writer, result.train_seconds
    model, steps = result.trainer.model, train.shape[1] // tc.batch_size

    # Every member scores the same test set: a shared-data program that keeps only the errors.
    scorer = Trainer.from_config(model, tc, steps)
    test_d = scorer.put({"x": test_x})
    params = state.best_params if tc.use_best else state.params
    member_errors = np.asarray(scorer.errors(params, test_d), np.float64)  # (members, n_test)
    member_errors = scoring.normalize(member_errors, test_x, config.score.normalize)
    member_errors = member_errors.reshape(tc.ensemble_size, len(classes), -1)
    scores = member_errors.mean(0)  # (classes, n_test): ensemble-mean error per one-class model

    per_class, spread = {}, {}
    for i, c in enumerate(classes):
        labels = (test_y != c).astype(int)
        per_class[CLASS_NAMES[c]] = float(roc_auc_score(labels, scores[i]))
        if tc.ensemble_size > 1:
            spread[CLASS_NAMES[c]] = float(np.std([roc_auc_score(labels, e[i]) for e in member_errors]))
    mean_auc = float(np.mean(list(per_class.values())))
    summary = {
        "experiment": config.experiment, "run_dir": str(rundir.path), "model": config.model.name,
        "roc_auc": per_class, "mean_roc_auc": mean_auc, "ensemble_size": tc.ensemble_size,
        "member_auc_std": spread or None, "n_test": int(len(test_x)),
        "n_train_per_class": int(train.shape[1]), "epochs": int(np.asarray(state.epoch)[0]),
        "train_seconds": round(train_seconds, 2), "final_train_loss": history[-1]["train_loss"] if history else None,
    }
    rundir.write_json("auc.json", {"roc_auc": per_class, "mean": mean_auc, "member_std": spread or None})
    if lead:
        (rundir.path / "auc.md").write_text(auc_table(per_class, mean_auc, spread or None))
    columns = {"index": np.arange(len(test_y)), "class": [SHORT_NAMES[y] for y in test_y]}
    columns.update({f"score_{SHORT_NAMES[c]}": scores[i] for i, c in enumerate(classes)})
    rundir.write_csv("scores.csv", columns)

    images = []  # the plots the event log shows too
    if config.plots.enabled and lead:
        images = [rundir.plot_path("loss.png"), rundir.plot_path("class_extremes.png")]
        if history:
            plots.loss_curves(history, images[0])
        image_plots.roc_by_class(test_y, scores, classes, CLASS_NAMES, rundir.plot_path("roc_by_class.png"))
        image_plots.class_extremes(test_x, scores, [CLASS_NAMES[c] for c in classes],
                                   images[1], n=config.plots.n_examples)
    summary["seconds_total"] = round(time.time() - t_start, 2)
    rundir.write_json("metrics.json", summary)
    result.monitor.finish(summary, images)
    return summary


def headline(summary: dict) -> str:
    """The line ``research.train`` prints at the end of a one-class run."""
    aucs = " ".join(f"{auc:.3f}" for auc in summary["roc_auc"].values())
    return (f"{summary['experiment']}: mean ROC-AUC {summary['mean_roc_auc']:.4f} (per class {aucs}); "
            f"train {summary['train_seconds']:.0f} s, total {summary['seconds_total']:.0f} s -> {summary['run_dir']}")
