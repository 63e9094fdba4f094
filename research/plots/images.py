"""Figures specific to image datasets (the generic histogram and examples are in ``research.plots.standard``)."""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np
from sklearn.metrics import roc_auc_score, roc_curve

from research.plots.standard import plt, save


def _show(ax, img, title=None):
    ax.imshow(np.squeeze(img), cmap="gray", vmin=0.0, vmax=1.0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title:
        ax.set_title(title, fontsize=7)


def originals_over_reconstructions(x, recon, path, n: int = 10, ids: Sequence[str] | None = None,
                                   errors=None) -> pathlib.Path:
    """The first ``n`` samples (top row) above their reconstructions (bottom row)."""
    n = min(n, len(x))
    fig, axes = plt.subplots(2, n, figsize=(1.3 * n, 3.0), squeeze=False)
    for i in range(n):
        title = ids[i].split("_", 1)[-1] if ids is not None else f"#{i}"
        _show(axes[0, i], x[i], title)
        _show(axes[1, i], recon[i], None if errors is None else f"err {errors[i]:.3g}")
    axes[0, 0].set_ylabel("original", fontsize=8)
    axes[1, 0].set_ylabel("reconstruction", fontsize=8)
    return save(fig, path)


def highest_error_images(x, errors, path, n: int = 10, ids: Sequence[str] | None = None,
                         recon=None) -> pathlib.Path:
    """The ``n`` samples with the largest reconstruction error, titled with id and error
    (a second row shows their reconstructions when given)."""
    errors = np.asarray(errors)
    top = np.argsort(errors)[::-1][: min(n, len(errors))]
    rows = 1 if recon is None else 2
    fig, axes = plt.subplots(rows, len(top), figsize=(1.3 * len(top), 1.6 * rows + 0.4), squeeze=False)
    for col, i in enumerate(top):
        name = ids[i] if ids is not None else f"#{i}"
        _show(axes[0, col], x[i], f"{name}\nerr {errors[i]:.4f}")
        if recon is not None:
            _show(axes[1, col], recon[i])
    if recon is not None:
        axes[1, 0].set_ylabel("reconstruction", fontsize=8)
    fig.suptitle(f"{len(top)} highest reconstruction errors", fontsize=9)
    return save(fig, path)


def class_extremes(images, scores, class_names: Sequence[str], path, n: int = 6) -> pathlib.Path:
    """One row per one-class model: the ``n`` test images it finds most normal, then the ``n``
    most anomalous. ``scores`` is ``(n_models, n_images)``."""
    scores = np.asarray(scores)
    fig, axes = plt.subplots(len(scores), 2 * n, figsize=(0.9 * 2 * n, 0.95 * len(scores) + 0.4), squeeze=False)
    for row, s in enumerate(scores):
        order = np.argsort(s)
        for col, i in enumerate(np.concatenate([order[:n], order[::-1][:n]])):
            _show(axes[row, col], images[i])
        axes[row, 0].set_ylabel(class_names[row], fontsize=7, rotation=0, ha="right", va="center")
    fig.suptitle(f"per normal class: {n} lowest-error test images | {n} highest-error", fontsize=9)
    return save(fig, path)


def roc_by_class(test_classes, scores, normal_classes: Sequence[int], class_names: Sequence[str],
                 path) -> pathlib.Path:
    """ROC of each one-class model: its own class (normal) against all other test images."""
    test_classes = np.asarray(test_classes)
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for c, s in zip(normal_classes, np.asarray(scores)):
        labels = (test_classes != c).astype(int)
        fpr, tpr, _ = roc_curve(labels, s)
        ax.plot(fpr, tpr, lw=1, label=f"{class_names[c]} ({roc_auc_score(labels, s):.3f})")
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("One-class ROC (normal class vs the rest)")
    ax.legend(fontsize=7, loc="lower right")
    return save(fig, path)
