"""A second anomaly score beside the reconstruction error: the density of the autoencoder's latent codes.

A spectrum the decoder can reproduce may still sit where no training spectrum put its code (the
spender line of work on SDSS/DESI outliers scores -log p(z) with a flow on the latents). Here a
Gaussian mixture is fitted to the (standardised) latent codes of the training spectra, its number of
components and covariance type chosen by BIC; the score is -log p(z). Options under ``config.latent``:
:data:`DEFAULTS` (``reg_covar`` is in standardised units; the codes of ~100 spectra in 32 dimensions
need it).

The analysis reports the ROC-AUC of the test anomalies (label 1) against the held-out normal spectra
for the reconstruction error, the latent density and their rank average (each score replaced by its
rank among the test spectra, the two ranks averaged: no labels, no scale to match), writes
``latent_density.md`` with that table and returns the numbers for ``metrics.json``.
"""

from __future__ import annotations

import jax
import numpy as np
from sklearn.metrics import roc_auc_score
from sklearn.mixture import GaussianMixture

from research.errors import InputError
from research.rundir import unique_path

LATENT_MODULE = "latent"
CONFIG_BLOCK = "latent"
DEFAULTS = {"max_components": 4, "covariance_types": ("full", "diag"), "reg_covar": 1e-3, "seed": 0}


def latent_codes(model, params, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """``(N, latent_dim)`` outputs of the model's dense bottleneck (the submodule named ``latent``)."""
    @jax.jit
    def encode(batch):
        _, state = model.apply(params, batch, capture_intermediates=lambda mdl, _: mdl.name == LATENT_MODULE)
        found = state["intermediates"].get(LATENT_MODULE)
        if found is None:
            raise InputError(f"analyses latent_density: model {type(model).__name__} has no dense bottleneck "
                             "(set model.latent_dim)")
        return found["__call__"][0]

    return np.concatenate([np.asarray(encode(x[i:i + batch_size])) for i in range(0, len(x), batch_size)])


class LatentDensity:
    """BIC-chosen Gaussian mixture on standardised codes; :meth:`score` is -log p(z)."""

    def __init__(self, max_components: int = 4, covariance_types=("full", "diag"), reg_covar: float = 1e-3,
                 seed: int = 0):
        if int(max_components) < 1:
            raise InputError(f"config key latent.max_components: {max_components} must be >= 1")
        self.options = [(k, c) for c in covariance_types for k in range(1, int(max_components) + 1)]
        self.reg_covar, self.seed = float(reg_covar), int(seed)

    def fit(self, z: np.ndarray) -> "LatentDensity":
        z = np.asarray(z, np.float64)
        self.mean, self.std = z.mean(0), z.std(0) + 1e-8
        u = (z - self.mean) / self.std
        fits = []
        for k, cov in self.options:
            if k > len(u):
                continue
            gmm = GaussianMixture(k, covariance_type=cov, reg_covar=self.reg_covar, random_state=self.seed,
                                  n_init=2).fit(u)
            fits.append((gmm.bic(u), k, cov, gmm))
        self.bic, self.n_components, self.covariance_type, self.gmm = min(fits, key=lambda t: t[0])
        self.bics = {f"{cov}_{k}": float(b) for b, k, cov, _ in fits}
        return self

    def score(self, z: np.ndarray) -> np.ndarray:
        return -self.gmm.score_samples((np.asarray(z, np.float64) - self.mean) / self.std)


def rank_average(*scores: np.ndarray) -> np.ndarray:
    """Mean over scores of each sample's rank (0..1) within that score."""
    def ranks(s):
        order = np.argsort(np.argsort(np.asarray(s, np.float64), kind="stable"), kind="stable")
        return order / max(len(s) - 1, 1)
    return np.mean([ranks(s) for s in scores], axis=0)


def auc_table(labels: np.ndarray, error: np.ndarray, density: np.ndarray) -> dict[str, float]:
    """ROC-AUC of label 1 against label 0 for each score and their rank average."""
    labels = np.asarray(labels).astype(int)
    if len(np.unique(labels)) < 2:
        raise InputError("analyses latent_density: the test split needs both normal and anomalous spectra")
    return {"reconstruction_error": float(roc_auc_score(labels, error)),
            "latent_density": float(roc_auc_score(labels, density)),
            "rank_average": float(roc_auc_score(labels, rank_average(error, density)))}


def run(ctx) -> dict:
    cfg = {**DEFAULTS, **(ctx.config.get(CONFIG_BLOCK) or {})}
    ds = ctx.dataset
    density = LatentDensity(cfg["max_components"], tuple(cfg["covariance_types"]), cfg["reg_covar"], cfg["seed"])
    members = jax.tree_util.tree_leaves(ctx.params)[0].shape[0]
    test_scores, chosen = [], []
    for k in range(members):  # an ensemble: one mixture per member, -log p averaged
        params = jax.tree_util.tree_map(lambda p: p[k], ctx.params)
        fitted = density.fit(latent_codes(ctx.trainer.model, params, np.asarray(ds.train["x"])))
        test_scores.append(fitted.score(latent_codes(ctx.trainer.model, params, np.asarray(ds.test["x"]))))
        chosen.append(f"{fitted.covariance_type} x {fitted.n_components}")
    score = np.mean(test_scores, axis=0)
    error = np.asarray(ctx.errors["test"])
    labels = np.asarray(ds.test_labels)
    aucs = auc_table(labels, error, score)
    n_anom, n_norm = int(labels.sum()), int((labels == 0).sum())
    lines = ["# Latent density vs reconstruction error", "",
             f"ROC-AUC of {n_anom} anomalies (test label 1) against {n_norm} held-out normal spectra; the mixture "
             f"({', '.join(chosen)} components, chosen by BIC) is fitted on the latent codes of the "
             f"{len(ds.train['x'])} training spectra.", "", "| score | ROC-AUC |", "|---|---|"]
    lines += [f"| {name.replace('_', ' ')} | {auc:.3f} |" for name, auc in aucs.items()]
    if ctx.run.writer:
        unique_path(ctx.run.path / "latent_density.md").write_text("\n".join(lines) + "\n")
    ids = ds.test_ids or [str(i) for i in range(len(labels))]
    top = np.argsort(-score)[:10]
    return {"roc_auc": aucs, "components": chosen, "n_train": int(len(ds.train["x"])), "n_normal": n_norm,
            "n_anomaly": n_anom, "top_latent": [{"id": ids[i], "label": int(labels[i]), "score": float(score[i])}
                                                for i in top]}
