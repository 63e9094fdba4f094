"""Reconstruction errors with optional mask and weights.

Masked elements contribute exactly zero to the loss *and* its gradient: the target is replaced
before the difference is taken, so NaNs in masked pixels cannot leak through ``0 * nan``.
"""

import jax.numpy as jnp

KINDS = ("mse", "mae")


def elementwise(x: jnp.ndarray, recon: jnp.ndarray, kind: str = "mse") -> jnp.ndarray:
    diff = recon - x
    if kind == "mse":
        return diff * diff
    if kind == "mae":
        return jnp.abs(diff)
    raise ValueError(f"unknown error kind {kind!r}; choose one of {KINDS}")


def _masked_terms(x, recon, mask, weights, kind):
    if mask is None:
        err = elementwise(x, recon, kind)
        w = jnp.ones_like(err)
    else:
        mask = mask.astype(bool)
        err = elementwise(jnp.where(mask, x, recon), recon, kind)
        w = mask.astype(err.dtype)
    if weights is not None:
        err = err * jnp.where(w > 0, weights, 0.0)
    return jnp.where(w > 0, err, 0.0), w


def per_sample(x, recon, mask=None, weights=None, kind: str = "mse") -> jnp.ndarray:
    """Mean error over each sample's (unmasked) elements; shape ``(batch,)``."""
    err, w = _masked_terms(x, recon, mask, weights, kind)
    axes = tuple(range(1, err.ndim))
    return err.sum(axes) / jnp.maximum(w.sum(axes), 1.0)


def loss(x, recon, mask=None, weights=None, kind: str = "mse") -> jnp.ndarray:
    """Mean error over all unmasked elements of the batch (a scalar)."""
    err, w = _masked_terms(x, recon, mask, weights, kind)
    return err.sum() / jnp.maximum(w.sum(), 1.0)
