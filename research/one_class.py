"""The standard one-class Fashion-MNIST benchmark, all classes trained as one compiled program.

For each class c a model is trained on the training images of c only and scores every test image
by reconstruction error; the ROC-AUC of c (normal) against the other nine classes is reported,
with the mean over classes. Every (class, seed) model is one member of a ``member_data`` ensemble,
so the ten models share one ``vmap``-ed, jit-compiled epoch. With ``train.ensemble_size`` E > 1
each class gets E members (different seeds) whose errors are averaged.

``python -m research.one_class --config=experiments/fashion_mnist_one_class.py[:conv2d] [--config.a.b=v]``
"""

from __future__ import annotations

import json
import platform
import sys
import time

import jax
import numpy as np
from absl import app, flags, logging
from sklearn.metrics import roc_auc_score

from research import image_plots, plots, scoring
from research.checkpoints import Checkpoints
from research.config import resolve
from research.data.fashion_mnist import CLASS_NAMES, SHORT_NAMES, folder_of, read_split
from research.errors import InputError
from research.models import build_model
from research.monitor import RunMonitor
from research.rundir import RunDir, git_info
from research.train import parse_flags
from research import startup as run_startup
from research.training import Trainer, check_train_config, fit, make_schedule


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


def run(config, log=print) -> dict:
    """Trains all one-class models, scores the test set and writes the run directory."""
    config = resolve(config)
    scoring.check_normalizer(config.score.normalize)
    check_train_config(config.train)
    t_start = time.time()
    startup = run_startup.take(config)
    dc, tc = config.data, config.train
    classes = tuple(int(c) for c in dc.get("classes", range(len(CLASS_NAMES))))
    if not classes or any(not 0 <= c < len(CLASS_NAMES) for c in classes):
        raise InputError(f"config key data.classes: {classes} must name classes in 0..{len(CLASS_NAMES) - 1}")
    folder = folder_of(dc)
    train_x, train_y = read_split(folder, "train")
    test_x, test_y = read_split(folder, "test")
    limit = int(dc.get("limit") or 0)
    if limit and len(test_x) > limit:
        keep = np.sort(np.random.default_rng(config.seed).choice(len(test_x), limit, replace=False))
        test_x, test_y = test_x[keep], test_y[keep]
    train, val = class_splits(train_x, train_y, classes, limit, dc.val_fraction, dc.get("val_rows", 500),
                              config.seed)
    startup.mark("data")

    n_members = len(classes) * tc.ensemble_size
    member_class = np.tile(np.arange(len(classes)), tc.ensemble_size)  # member m models classes[m % n]
    seeds = [config.seed + m for m in range(n_members)]
    lead = jax.process_index() == 0
    rundir = RunDir(config.run.root, config.experiment, config.run.name, writer=lead)
    if lead:
        log(f"run directory: {rundir.path}")
    rundir.write_json("config.json", json.loads(config.to_json_best_effort()))
    rundir.write_json("run.json", {
        "seeds": seeds, "member_class": [classes[c] for c in member_class], "git": git_info(),
        "argv": sys.argv, "python": platform.python_version(), "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()], "started": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "n_train_per_class": int(train.shape[1]), "n_val_per_class": int(val.shape[1]),
        "n_test": int(len(test_x)), "folder": str(folder)})

    model = build_model(config.model)
    steps = train.shape[1] // tc.batch_size
    if steps == 0:
        raise InputError(f"config key train.batch_size: {tc.batch_size} is larger than the "
                         f"{train.shape[1]} training images per class")
    trainer = Trainer.from_config(model, tc, steps, member_data=True)
    train_d = trainer.put({"x": train[member_class]})
    val_d = trainer.put({"x": val[member_class]})
    state = trainer.init(seeds, train.shape[2:])

    ckpt = Checkpoints(rundir.checkpoints)
    history: list[dict] = []
    if config.run.resume and ckpt.latest_epoch() is not None:
        state = ckpt.restore(state)
        log(f"resumed from epoch {ckpt.latest_epoch()}")
    monitor = RunMonitor(config, rundir, startup, int(np.asarray(state.epoch)[0]), steps, make_schedule(tc, steps),
                         lead=lead)
    t_train = time.time()

    def on_epoch(st, metrics):
        epoch = int(np.asarray(st.epoch)[0])
        record = {"epoch": epoch, "train_loss": metrics["train_loss"].tolist(),
                  "val_loss": metrics["val_loss"].tolist(), "time": round(time.time() - t_train, 3)}
        history.append(record)
        rundir.append_jsonl("log.jsonl", record)
        monitor.epoch(epoch, metrics)
        if tc.checkpoint_every and epoch % tc.checkpoint_every == 0:
            ckpt.save(st)

    state = fit(trainer, state, train_d, val_d, tc.epochs, on_epoch=on_epoch)
    ckpt.save(state)
    ckpt.close()
    train_seconds = time.time() - t_train
    del train_d, val_d

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
    monitor.finish(summary, images)
    return summary


def main(argv) -> None:
    if len(argv) > 1:
        print(f"error: unexpected arguments: {' '.join(argv[1:])}", file=sys.stderr)
        sys.exit(2)
    logging.set_verbosity(logging.WARNING)
    try:
        run_startup.begin(flags.FLAGS.config)
        summary = run(flags.FLAGS.config)
    except InputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    aucs = " ".join(f"{auc:.3f}" for auc in summary["roc_auc"].values())
    print(f"{summary['experiment']}: mean ROC-AUC {summary['mean_roc_auc']:.4f} (per class {aucs}); "
          f"train {summary['train_seconds']:.0f} s, total {summary['seconds_total']:.0f} s -> {summary['run_dir']}")


if __name__ == "__main__":
    app.run(main, flags_parser=parse_flags)
