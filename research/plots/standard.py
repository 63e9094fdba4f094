"""The standard figures of every run, saved as PNG (Agg backend, never overwriting a file)."""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import roc_curve as _roc_curve, roc_auc_score  # noqa: E402

from research.rundir import unique_path  # noqa: E402

NORMAL_COLOR, ANOMALY_COLOR = "tab:blue", "tab:red"


def save(fig, path) -> pathlib.Path:
    path = unique_path(path)
    fig.tight_layout()
    fig.savefig(path, dpi=110, pil_kwargs={"compress_level": 1})  # the same pixels, a third of the encoding time
    plt.close(fig)
    return path


def loss_curves(history: list[dict], path) -> pathlib.Path:
    """Train and validation loss per epoch (member mean; band = min..max over ensemble members)."""
    epochs = np.array([h["epoch"] for h in history])
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, color in (("train_loss", "tab:blue"), ("val_loss", "tab:orange")):
        vals = np.array([np.atleast_1d(h[key]) for h in history], dtype=float)
        ax.plot(epochs, vals.mean(1), color=color, label=key.replace("_", " "))
        if vals.shape[1] > 1:
            ax.fill_between(epochs, vals.min(1), vals.max(1), color=color, alpha=0.2)
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax.legend()
    ax.set_title("Training and validation loss")
    return save(fig, path)


def error_histogram(errors, threshold: float, path, labels=None, title="Reconstruction error") -> pathlib.Path:
    errors = np.asarray(errors)
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.histogram_bin_edges(errors, bins=60)
    if labels is None:
        ax.hist(errors, bins=bins, color=NORMAL_COLOR, alpha=0.8, label="samples")
    else:
        labels = np.asarray(labels)
        ax.hist(errors[labels == 0], bins=bins, color=NORMAL_COLOR, alpha=0.6, label="normal")
        ax.hist(errors[labels == 1], bins=bins, color=ANOMALY_COLOR, alpha=0.6, label="anomaly")
    ax.axvline(errors.mean(), color="k", ls=":", label=f"mean {errors.mean():.3g}")
    ax.axvline(threshold, color="k", ls="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel("reconstruction error")
    ax.set_ylabel("count")
    ax.set_title(title)
    ax.legend()
    return save(fig, path)


def error_scatter(errors, threshold: float, path, labels=None, title="Per-sample reconstruction error") -> pathlib.Path:
    errors = np.asarray(errors)
    idx = np.arange(len(errors))
    fig, ax = plt.subplots(figsize=(7, 4))
    anomalous = errors > threshold if labels is None else np.asarray(labels) == 1
    # one RGBA row per point: matplotlib parses a colour name per point (0.15 s for 4,500)
    colors = matplotlib.colors.to_rgba_array([NORMAL_COLOR, ANOMALY_COLOR])[anomalous.astype(int)]
    ax.scatter(idx, errors, c=colors, s=6)
    ax.axhline(threshold, color="k", ls="--", label=f"threshold {threshold:.3g}")
    ax.set_xlabel("sample")
    ax.set_ylabel("reconstruction error")
    ax.set_title(title + ("" if labels is None else " (red = labelled anomaly)"))
    ax.legend()
    return save(fig, path)


def roc_curve(labels, scores, path) -> pathlib.Path:
    fpr, tpr, _ = _roc_curve(labels, scores)
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, label=f"AUC = {roc_auc_score(labels, scores):.4f}")
    ax.plot([0, 1], [0, 1], color="grey", ls=":")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title("ROC")
    ax.legend(loc="lower right")
    return save(fig, path)


def reconstruction_examples(x, recon, errors, path, kind: str = "1d", axis=None, axis_label="index",
                            n: int = 4, ids=None, mask=None) -> pathlib.Path:
    """Originals against reconstructions for the ``n`` lowest- and ``n`` highest-error samples."""
    errors = np.asarray(errors)
    order = np.argsort(errors)
    picks = [("most normal", i) for i in order[:n]] + [("most anomalous", i) for i in order[::-1][:n]]
    if kind == "image":
        fig, axes = plt.subplots(2, len(picks), figsize=(1.6 * len(picks), 3.6))
        for col, (tag, i) in enumerate(picks):
            for row, img in enumerate((x[i], recon[i])):
                axes[row, col].imshow(np.squeeze(img), cmap="gray")
                axes[row, col].axis("off")
            axes[0, col].set_title(f"{tag.split()[1][:4]}\n{errors[i]:.3g}", fontsize=8)
        axes[0, 0].text(-0.3, 0.5, "original", rotation=90, transform=axes[0, 0].transAxes, va="center")
        axes[1, 0].text(-0.3, 0.5, "recon", rotation=90, transform=axes[1, 0].transAxes, va="center")
        return save(fig, path)
    fig, axes = plt.subplots(2, n, figsize=(3.2 * n, 5), squeeze=False)
    t = np.arange(x.shape[1]) if axis is None else np.asarray(axis)
    for k, (tag, i) in enumerate(picks):
        ax = axes[k // n, k % n]
        ax.plot(t, np.squeeze(x[i]), color="k", lw=0.8, label="original")
        ax.plot(t, np.squeeze(recon[i]), color=ANOMALY_COLOR if tag == "most anomalous" else NORMAL_COLOR,
                lw=0.8, label="reconstruction")
        if mask is not None:
            bad = ~np.asarray(mask[i], bool)
            if bad.any():
                ax.fill_between(t, 0, 1, where=np.squeeze(bad), transform=ax.get_xaxis_transform(),
                                color="grey", alpha=0.2, lw=0)
        name = ids[i] if ids is not None else f"#{i}"
        ax.set_title(f"{tag}: {name}\nerror {errors[i]:.3g}", fontsize=8)
        ax.set_xlabel(axis_label, fontsize=8)
    axes[0, 0].legend(fontsize=7)
    return save(fig, path)
