import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import losses


@pytest.fixture
def arrays():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4, 50)).astype(np.float32)
    recon = rng.normal(size=(4, 50)).astype(np.float32)
    mask = rng.random((4, 50)) > 0.3
    return x, recon, mask


@pytest.mark.parametrize("kind", ["mse", "mae"])
def test_per_sample_matches_numpy(arrays, kind):
    x, recon, mask = arrays
    e = (recon - x) ** 2 if kind == "mse" else np.abs(recon - x)
    expected = (e * mask).sum(1) / mask.sum(1)
    got = losses.per_sample(jnp.asarray(x), jnp.asarray(recon), jnp.asarray(mask), kind=kind)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5)
    np.testing.assert_allclose(float(losses.loss(x, recon, mask, kind=kind)), (e * mask).sum() / mask.sum(), rtol=1e-5)


def test_masked_elements_contribute_nothing_even_nan(arrays):
    x, recon, mask = arrays
    poisoned = np.where(mask, x, np.nan).astype(np.float32)  # masked targets are NaN
    clean = losses.loss(jnp.asarray(x), jnp.asarray(recon), jnp.asarray(mask))
    dirty = losses.loss(jnp.asarray(poisoned), jnp.asarray(recon), jnp.asarray(mask))
    assert np.isfinite(float(dirty))
    assert float(dirty) == pytest.approx(float(clean), rel=1e-6)
    grad = jax.grad(lambda r: losses.loss(jnp.asarray(poisoned), r, jnp.asarray(mask)))(jnp.asarray(recon))
    grad = np.asarray(grad)
    assert np.all(np.isfinite(grad))
    assert np.all(grad[~mask] == 0.0)
    assert np.all(grad[mask] != 0.0)


def test_weights_scale_elements(arrays):
    x, recon, _ = arrays
    w = np.ones_like(x)
    w[:, :10] = 0.0
    weighted = losses.per_sample(x, recon, None, jnp.asarray(w))
    expected = (((recon - x) ** 2) * w).sum(1) / x.shape[1]
    np.testing.assert_allclose(np.asarray(weighted), expected, rtol=1e-5)


def test_fully_masked_sample_is_zero_not_nan(arrays):
    x, recon, mask = arrays
    mask = mask.copy()
    mask[0] = False
    err = np.asarray(losses.per_sample(x, recon, mask))
    assert err[0] == 0.0 and np.all(np.isfinite(err))
