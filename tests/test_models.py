import jax
import jax.numpy as jnp
import numpy as np
import pytest

from research.errors import InputError
from research.models import build_model


@pytest.mark.parametrize("shape", [(3, 140), (2, 137), (2, 4000, 2), (4, 28, 28)])
def test_dense_ae_shapes_and_dtypes(shape):
    model = build_model({"name": "dense", "latent_dim": 8, "hidden": (32,), "output_activation": "sigmoid"})
    x = jnp.asarray(np.random.default_rng(0).normal(size=shape), jnp.float32)
    params = model.init(jax.random.key(0), x)
    y = model.apply(params, x)
    assert y.shape == x.shape and y.dtype == jnp.float32
    assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0  # sigmoid output
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))


def test_fashion_mnist_seed_model_is_784_64_784():
    model = build_model({"name": "dense", "latent_dim": 64, "output_activation": "sigmoid"})
    params = model.init(jax.random.key(0), jnp.zeros((1, 28, 28)))["params"]
    assert params["latent"]["kernel"].shape == (784, 64)
    assert params["output"]["kernel"].shape == (64, 784)


@pytest.mark.slow
@pytest.mark.parametrize("length", [140, 137, 101, 4000])
@pytest.mark.parametrize("latent", [16, None])
def test_conv1d_any_length_is_padded_and_cropped(length, latent):
    model = build_model({"name": "conv1d", "features": (8, 16, 16), "latent_dim": latent})
    x = jnp.asarray(np.random.default_rng(1).normal(size=(2, length)), jnp.float32)
    params = model.init(jax.random.key(0), x)
    y = model.apply(params, x)
    assert y.shape == x.shape and y.dtype == jnp.float32
    # the last sample influences the output: nothing was truncated
    grad = jax.grad(lambda v: model.apply(params, v).sum())(x)
    assert float(jnp.abs(grad[:, -1]).sum()) > 0


@pytest.mark.slow
def test_conv1d_multichannel():
    model = build_model({"name": "conv1d", "features": (8, 16)})
    x = jnp.ones((3, 99, 2))
    assert model.apply(model.init(jax.random.key(0), x), x).shape == (3, 99, 2)


def test_unknown_model_or_field_is_one_line_error():
    with pytest.raises(InputError, match="model.name: unknown model 'nope'"):
        build_model({"name": "nope"})
    with pytest.raises(InputError, match="model.widths: not a field of DenseAE"):
        build_model({"name": "dense", "widths": (3,)})
