"""Maps of the test spectra and of where the autoencoder fails, plus the top anomalies as sound.

* ``map_spectra.png``: PaCMAP 2-D embedding of the test spectra; point size = PCA reconstruction
  error, colour = Isolation Forest score (both fitted on the training split), marker = label.
* ``map_errors.png``: PaCMAP of the per-frequency squared-error vectors ``(recon - x)^2`` with
  k-means clusters (``config.fsdd_maps.n_clusters``) found on that embedding, and
  ``cluster_profiles.png``: the mean error profile over frequency of each cluster.
* ``top_anomalies.png``: for the highest-scoring test samples, original vs reconstructed spectrum
  and, when the dataset keeps its WAV files (``meta['folder']``, FSDD), original vs resynthesised
  waveform (reconstructed amplitudes with the original phases).

Needs the ``pacmap`` package. Works on any 1-D dataset; the waveform column is FSDD-only.
"""

from __future__ import annotations

import logging

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.cluster import KMeans  # noqa: E402

from research.analyses.baselines import baseline_scores  # noqa: E402
from research.errors import InputError  # noqa: E402

DEFAULTS = {"n_clusters": 4}  # config.fsdd_maps: k-means clusters of the error map
MIN_SAMPLES = 20  # PaCMAP's neighbour graph needs a few dozen points to mean anything


def embed(x: np.ndarray, seed: int = 0) -> np.ndarray:
    try:
        import pacmap
    except ImportError:
        raise InputError("analyses fsdd_maps: needs the pacmap package (pip install 'pacmap>=0.7,<1')") from None
    logging.getLogger("pacmap").setLevel(logging.ERROR)  # it warns on every seeded run
    x = np.asarray(x, np.float32).reshape(len(x), -1)
    n_neighbors = int(min(10, len(x) - 2))
    return pacmap.PaCMAP(n_components=2, n_neighbors=n_neighbors, random_state=seed, verbose=False).fit_transform(x)


def _sizes(values: np.ndarray, lo: float = 6.0, hi: float = 90.0) -> np.ndarray:
    span = np.ptp(values)
    return lo + (hi - lo) * ((values - values.min()) / span if span > 0 else np.zeros_like(values))


def _save(fig, ctx, name: str):
    path = ctx.run.plot_path(name)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def spectra_map(ctx, emb, pca_err, iforest, labels) -> None:
    fig, ax = plt.subplots(figsize=(7, 6))
    sc = None
    for label, marker, name in ((0, "o", "normal"), (1, "^", "anomaly")):
        sel = labels == label
        sc = ax.scatter(emb[sel, 0], emb[sel, 1], s=_sizes(pca_err)[sel], c=iforest[sel], marker=marker,
                        cmap="viridis", vmin=iforest.min(), vmax=iforest.max(), alpha=0.75,
                        edgecolors="k", linewidths=0.2, label=name)
    fig.colorbar(sc, ax=ax, label="Isolation Forest score (higher = more anomalous)")
    ax.legend(title="marker = label; size = PCA error", loc="best")
    ax.set_title("PaCMAP of test spectra")
    ax.set_xticks([])
    ax.set_yticks([])
    _save(fig, ctx, "map_spectra.png")


def error_maps(ctx, emb, clusters, err_vectors, labels, axis, axis_label) -> None:
    k = clusters.max() + 1
    colors = plt.get_cmap("tab10")(np.arange(k) % 10)
    fig, ax = plt.subplots(figsize=(7, 6))
    for c in range(k):
        for label, marker in ((0, "o"), (1, "^")):
            sel = (clusters == c) & (labels == label)
            ax.scatter(emb[sel, 0], emb[sel, 1], s=12, color=colors[c], marker=marker, alpha=0.8,
                       label=f"cluster {c}" if label == 0 else None)
    ax.legend(title="colour = k-means cluster; ^ = anomaly")
    ax.set_title("PaCMAP of per-frequency reconstruction-error vectors")
    ax.set_xticks([])
    ax.set_yticks([])
    _save(fig, ctx, "map_errors.png")

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for c in range(k):
        sel = clusters == c
        ax.plot(axis, err_vectors[sel].mean(0), color=colors[c],
                label=f"cluster {c} (n={sel.sum()}, {labels[sel].mean():.0%} anomalies)")
    ax.set_yscale("log")
    ax.set_xlabel(axis_label)
    ax.set_ylabel("mean squared reconstruction error")
    ax.set_title("Mean error profile per cluster")
    ax.legend(fontsize=8)
    _save(fig, ctx, "cluster_profiles.png")


def top_anomalies(ctx, x, recon, scores, labels) -> list[str]:
    ds = ctx.dataset
    ids = ds.test_ids or [str(i) for i in range(len(x))]
    n = int(min(ctx.config.plots.n_examples, len(x)))
    top = np.argsort(scores)[::-1][:n]
    folder = ds.meta.get("folder")
    cols = 2 if folder else 1
    fig, axes = plt.subplots(n, cols, figsize=(6 * cols, 2.4 * n), squeeze=False)
    axis = ds.axis if ds.axis is not None else np.arange(x.shape[1])
    for row, i in enumerate(top):
        ax = axes[row, 0]
        ax.plot(axis, x[i], lw=0.8, label="original")
        ax.plot(axis, recon[i], lw=0.8, label="reconstructed")
        ax.set_title(f"{ids[i]} (label {labels[i]}, error {scores[i]:.3g})", fontsize=9)
        ax.set_xlabel(ds.axis_label, fontsize=8)
        ax.legend(fontsize=7)
        if folder:
            from research.data import fsdd

            n_fft = int(ds.meta.get("n_fft", 8192))
            wave = fsdd.read_wav(fsdd.wav_path(ds.meta, ids[i]))
            resyn = fsdd.resynthesise(wave, recon[i], n_fft)
            t = np.arange(len(resyn)) / fsdd.SAMPLE_RATE
            ax = axes[row, 1]
            ax.plot(t, resyn, lw=0.6, color="tab:orange", label="from reconstructed spectrum")
            ax.plot(t, wave[: len(resyn)], lw=0.6, color="tab:blue", alpha=0.7, label="original")
            ax.set_xlabel("time (s)", fontsize=8)
            ax.set_title(f"{ids[i]} waveform", fontsize=9)
            ax.legend(fontsize=7)
    fig.suptitle("Top anomalies by autoencoder error")
    _save(fig, ctx, "top_anomalies.png")
    return [ids[i] for i in top]


def run(ctx) -> dict:
    ds = ctx.dataset
    labels = np.zeros(len(ds.test["x"]), int) if ds.test_labels is None else np.asarray(ds.test_labels)
    if len(labels) < MIN_SAMPLES:
        raise InputError(f"analyses fsdd_maps: {len(labels)} test samples; maps need at least {MIN_SAMPLES}")
    seed = int(ctx.config.seed)
    options = {**DEFAULTS, **(ctx.config.get("fsdd_maps") or {})}
    x_scaled = np.asarray(ds.test["x"], np.float64).reshape(len(labels), -1)
    recon_scaled = np.asarray(ctx.recon_test, np.float64).mean(0).reshape(len(labels), -1)
    inverse = ctx.scaler.inverse if ctx.scaler is not None else (lambda a: a)
    x, recon = np.asarray(inverse(x_scaled)), np.asarray(inverse(recon_scaled))
    scores = np.asarray(ctx.errors["test"])

    base = baseline_scores(ds.train["x"], ds.test["x"], seed, ctx.config.get("baselines") or {})
    err_vectors = (recon_scaled - x_scaled) ** 2
    emb_spectra = embed(x_scaled, seed)
    emb_errors = embed(err_vectors, seed)
    k = int(min(options["n_clusters"], len(labels)))
    clusters = KMeans(n_clusters=k, n_init=10, random_state=seed).fit_predict(emb_errors)

    axis = ds.axis if ds.axis is not None else np.arange(x.shape[1])
    if ctx.config.plots.enabled and ctx.run.writer:
        spectra_map(ctx, emb_spectra, base["pca"], base["iforest"], labels)
        error_maps(ctx, emb_errors, clusters, err_vectors, labels, axis, ds.axis_label)
    top = top_anomalies(ctx, x, recon, scores, labels) if ctx.config.plots.enabled and ctx.run.writer else []
    ids = ds.test_ids or [str(i) for i in range(len(labels))]
    ctx.run.write_csv("fsdd_maps.csv", {
        "id": ids, "label": labels, "score": scores, "pca_error": base["pca"], "iforest": base["iforest"],
        "spectra_x": emb_spectra[:, 0], "spectra_y": emb_spectra[:, 1],
        "errors_x": emb_errors[:, 0], "errors_y": emb_errors[:, 1], "cluster": clusters})
    return {
        "n_clusters": k,
        "clusters": [{"cluster": c, "n": int((clusters == c).sum()),
                      "anomaly_fraction": float(labels[clusters == c].mean())} for c in range(k)],
        "top_anomalies": top,
    }
