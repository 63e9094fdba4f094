"""Classical baselines beside the autoencoder: Isolation Forest and PCA reconstruction error.

Both are fitted on the (scaled, normal-only) training split and score the test split; higher =
more anomalous. Their ROC-AUC and PR-AUC sit next to the autoencoder's in ``baselines.json``, the
per-sample scores in ``baseline_scores.csv``, and the ROC curves in ``plots/baselines_roc.png``.
Options under ``config.baselines``: :data:`DEFAULTS`.
"""

from __future__ import annotations

import numpy as np
from sklearn.decomposition import PCA
from sklearn.ensemble import IsolationForest
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from research.errors import InputError

DEFAULTS = {
    "pca_components": 0.95,  # PCA components: an int, or a float in (0, 1) = fraction of variance kept
    "iforest_estimators": 200,  # trees of the Isolation Forest
    "per_group": False,  # also each anomalous group against all normals (group = test id before the last '_')
}


def _flat(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, np.float64).reshape(len(x), -1)


def iforest_scores(train_x, test_x, seed: int = 0, n_estimators: int = 200) -> np.ndarray:
    """Negated ``score_samples``: higher = shorter isolation paths = more anomalous."""
    forest = IsolationForest(n_estimators=n_estimators, random_state=seed).fit(_flat(train_x))
    return -forest.score_samples(_flat(test_x))


def pca_errors(train_x, test_x, n_components: float | int = 0.95, per_feature: bool = False) -> np.ndarray:
    """Mean squared error of the PCA reconstruction, per sample (or per feature with ``per_feature``)."""
    train, test = _flat(train_x), _flat(test_x)
    if isinstance(n_components, float) and not 0 < n_components < 1:
        n_components = int(n_components)
    if isinstance(n_components, int):
        n_components = max(1, min(n_components, min(train.shape) - 1))
    pca = PCA(n_components=n_components, svd_solver="full").fit(train)
    sq = (test - pca.inverse_transform(pca.transform(test))) ** 2
    return sq if per_feature else sq.mean(1)


def baseline_scores(train_x, test_x, seed: int = 0, options=None) -> dict[str, np.ndarray]:
    options = {**DEFAULTS, **(options or {})}
    return {
        "iforest": iforest_scores(train_x, test_x, seed, int(options["iforest_estimators"])),
        "pca": pca_errors(train_x, test_x, options["pca_components"]),
    }


def per_group_auc(labels, scores: dict[str, np.ndarray], ids) -> dict[str, dict[str, float]]:
    """ROC-AUC of each anomalous group (id text before the last ``_``) against every normal sample."""
    labels = np.asarray(labels)
    groups = np.array([str(i).rsplit("_", 1)[0] for i in ids])
    out = {}
    for group in sorted(set(groups[labels == 1])):
        sel = (labels == 0) | ((groups == group) & (labels == 1))
        out[group] = {name: float(roc_auc_score(labels[sel], s[sel])) for name, s in scores.items()}
    return out


def _roc_plot(labels, scores: dict[str, np.ndarray], path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    for name, s in scores.items():
        fpr, tpr, _ = roc_curve(labels, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(labels, s):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC: autoencoder vs baselines")
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run(ctx) -> dict:
    ds = ctx.dataset
    labels = ds.test_labels
    if labels is None or len(np.unique(labels)) < 2:
        raise InputError("analyses baselines: needs test labels with both normal and anomalous samples")
    options = {**DEFAULTS, **(ctx.config.get("baselines") or {})}
    scores = {"autoencoder": np.asarray(ctx.errors["test"], np.float64)}
    scores.update(baseline_scores(ds.train["x"], ds.test["x"], int(ctx.config.seed), options))
    result = {name: {"roc_auc": float(roc_auc_score(labels, s)), "pr_auc": float(average_precision_score(labels, s))}
              for name, s in scores.items()}
    ids = ds.test_ids or [str(i) for i in range(len(labels))]
    if options["per_group"]:
        result["per_group"] = per_group_auc(labels, scores, ids)
    ctx.run.write_json("baselines.json", result)
    ctx.run.write_csv("baseline_scores.csv", {"id": ids, "label": labels, **scores})
    if ctx.config.plots.enabled and ctx.run.writer:
        _roc_plot(labels, scores, ctx.run.plot_path("baselines_roc.png"))
    return result
