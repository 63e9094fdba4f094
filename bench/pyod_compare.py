"""One anomaly detector on one experiment's data: train on the normal training rows, score the test
split, report ROC-AUC and seconds. ``project`` is this codebase's own run of the config.

    python -m bench.pyod_compare --config experiments/ecg5000.py:dense --detector IForest
"""

from __future__ import annotations

import tempfile
import time

import numpy as np

from bench.common import emit, load_config, prepare, worker_args

DETECTORS = ("project", "AutoEncoder", "IForest", "PCA")


def _args(p):
    p.add_argument("--detector", choices=DETECTORS, required=True)
    p.add_argument("--epochs", type=int, default=None, help="PyOD AutoEncoder epochs (default: PyOD's own)")


def run_project(config) -> dict:
    from research.experiment import run

    with tempfile.TemporaryDirectory() as root:
        config.run.root = root
        config.plots.enabled = False
        start = time.perf_counter()
        summary = run(config, log=lambda *a: None)
        seconds = time.perf_counter() - start
    return {"roc_auc": summary["test"]["roc_auc"], "fit_score_seconds": seconds,
            "train_seconds": summary["train"]["seconds"], "epochs": summary["train"]["epochs"],
            "ensemble_size": config.train.ensemble_size}


def run_pyod(config, detector: str, epochs: int | None, device: str) -> dict:
    import pyod
    from sklearn.metrics import roc_auc_score

    ds = prepare(config)
    # every normal row the project sees: its validation rows are a slice of the training normals
    parts = [ds.train["x"]] + ([ds.val["x"]] if config.data.val_fraction > 0 else [])
    train = np.concatenate(parts).reshape(sum(len(p) for p in parts), -1)
    test = ds.test["x"].reshape(len(ds.test["x"]), -1)
    extra = {}
    if detector == "AutoEncoder":
        from pyod.models.auto_encoder import AutoEncoder

        kwargs = {"verbose": 0, "random_state": config.seed, "device": "cuda" if device == "gpu" else "cpu"}
        if epochs:
            kwargs["epoch_num"] = epochs
        model = AutoEncoder(**kwargs)
        extra = {"epochs": model.epoch_num, "batch_size": model.batch_size, "hidden": list(model.hidden_neuron_list)}
    elif detector == "IForest":
        from pyod.models.iforest import IForest

        model = IForest(random_state=config.seed)
    else:
        from pyod.models.pca import PCA

        model = PCA(random_state=config.seed)
    start = time.perf_counter()
    model.fit(train)
    scores = model.decision_function(test)
    seconds = time.perf_counter() - start
    return {"roc_auc": float(roc_auc_score(ds.test_labels, scores)), "fit_score_seconds": seconds,
            "n_train": len(train), "n_test": len(test), "version": f"pyod {pyod.__version__}", **extra}


def main() -> None:
    args = worker_args(__doc__.splitlines()[0], _args)
    config = load_config(args.config, args.set)
    result = (run_project(config) if args.detector == "project"
              else run_pyod(config, args.detector, args.epochs, args.device))
    emit({"detector": args.detector, "config": args.config, **result})


if __name__ == "__main__":
    main()
