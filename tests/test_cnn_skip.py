"""CNNSkipAE: shapes, both convolution paths, skips, the masked loss on real spectra, other 1-D data."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research import losses
from research.models import build_model


def _model(**kw):
    return build_model({"name": "cnn_skip", "features": (8, 16, 16), "kernel_size": 5, **kw})


@pytest.mark.parametrize("shape,extra", [((2, 137), {}), ((3, 4648), {"skip_levels": (), "latent_dim": 8}),
                                         ((2, 101, 3), {})])
def test_any_length_and_channels_round_trip(shape, extra):
    model = _model(**extra)
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    params = jax.jit(model.init)(jax.random.key(0), x)
    y = jax.jit(model.apply)(params, x)
    assert y.shape == x.shape and y.dtype == jnp.float32
    grad = jax.jit(jax.grad(lambda v: model.apply(params, v).sum()))(x)
    assert float(jnp.abs(grad[:, -1]).sum()) > 0  # the padded tail was cropped, not the data


def test_matmul_and_xla_convolutions_agree():
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, 300)), jnp.float32)
    fast, ref = _model(conv_impl="matmul", kernel_size=(7, 5, 3)), _model(conv_impl="xla", kernel_size=(7, 5, 3))
    params = jax.jit(fast.init)(jax.random.key(0), x)
    assert jax.tree.structure(params) == jax.tree.structure(jax.eval_shape(ref.init, jax.random.key(0), x))
    assert np.allclose(jax.jit(fast.apply)(params, x), jax.jit(ref.apply)(params, x), atol=1e-5)


def test_skip_levels_choose_which_resolutions_are_concatenated():
    x = jnp.zeros((1, 64))
    every = jax.eval_shape(_model(skip_levels=None).init, jax.random.key(0), x)["params"]
    coarse = jax.eval_shape(_model(skip_levels=(2,)).init, jax.random.key(0), x)["params"]
    # decoder input channels: upsampled features (+ the skipped encoder features)
    assert [every[f"dec_{i}"]["kernel"].shape[1] for i in range(3)] == [16 + 8, 16 + 16, 16 + 16]
    assert [coarse[f"dec_{i}"]["kernel"].shape[1] for i in range(3)] == [16, 16, 16 + 16]


@pytest.mark.slow
def test_masked_pixels_contribute_nothing_on_real_spectra(data_dir):
    from research.data import sdss_fits as sdss

    files = [data_dir / "sdss" / n for n in ("spec-0266-51602-0013.fits", "spSpec-51630-0266-637.fit")]
    if not all(f.is_file() for f in files):
        pytest.skip("SDSS files not found")
    specs = [sdss.read_spectrum(f) for f in files]
    grid = sdss.make_grid(3.58, 3.96)
    rows = [sdss.resample(s, grid) for s in specs]
    flux = np.stack([r[0] / np.median(r[0][r[2]]) for r in rows]).astype(np.float32)
    ivar = np.stack([r[1] for r in rows]).astype(np.float32)
    mask = np.stack([r[2] for r in rows])
    assert (~mask).sum() > 100  # the real files do have masked pixels
    model = _model()
    params = jax.jit(model.init)(jax.random.key(0), flux)
    recon = jax.jit(model.apply)(params, flux)
    weights = (ivar / np.median(ivar[mask])).astype(np.float32)

    def loss_of(target, w):
        return losses.loss(target, recon, mask, w)

    base = loss_of(flux, weights)
    garbage = np.where(mask, flux, np.nan).astype(np.float32)  # masked targets become NaN
    assert float(loss_of(garbage, weights)) == pytest.approx(float(base), rel=1e-6)
    grad = jax.grad(lambda t: loss_of(t, weights))(jnp.asarray(flux))
    assert float(jnp.abs(grad[~mask]).max()) == 0.0 and float(jnp.abs(grad[mask]).max()) > 0
    param_grad = jax.jit(jax.grad(lambda p: losses.loss(garbage, model.apply(p, flux), mask, weights)))(params)
    assert all(bool(jnp.all(jnp.isfinite(g))) for g in jax.tree.leaves(param_grad))
    # inverse-variance weighting: zero weight on one spectrum drops it from the loss, the other stays
    w2 = weights.copy()
    w2[0] = 0
    assert float(loss_of(flux, w2)) != pytest.approx(float(base))
    assert float(losses.per_sample(flux, recon, mask, w2)[1]) == \
        pytest.approx(float(losses.per_sample(flux, recon, mask, weights)[1]))


@pytest.mark.slow
def test_trains_on_another_1d_dataset(ecg_dir):
    import ml_collections
    from research.data.ecg5000 import read_ucr
    from research.training import Trainer, fit, make_optimizer

    labels, x = read_ucr(ecg_dir / "ECG5000_TRAIN.txt")
    x = x[labels == 1][:128]
    model = _model(features=(8, 16))
    cfg = ml_collections.ConfigDict({"epochs": 8, "learning_rate": 3e-3, "schedule": "constant"})
    trainer = Trainer(model, make_optimizer(cfg, 4), batch_size=32)
    data = trainer.put({"x": x})
    state = trainer.init([0], x.shape[1:])
    before = float(trainer.predict(state.params, data)[1].mean())
    state = fit(trainer, state, data, data, 8)
    after = float(trainer.predict(state.params, data)[1].mean())
    assert after < 0.5 * before
