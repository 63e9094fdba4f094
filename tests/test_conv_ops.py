import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import lax

from research.data.ecg5000 import read_ucr
from research.models import conv_ops

# (input shape, window, strides, lhs_dilation, padding, rhs_dilation): strided, transposed (polyphase),
# 2-D, negative padding (cropping), phases that meet no kernel tap, dilated kernels
CASES = [
    ((4, 140, 1), (7,), (2,), (1,), "SAME", (1,)),
    ((4, 35, 8), (7,), (1,), (2,), [(4, 3)], (1,)),
    ((2, 33, 3), (5,), (3,), (1,), "VALID", (1,)),
    ((2, 10, 3), (3,), (1,), (3,), [(-1, 2)], (2,)),
    ((2, 10, 3), (2,), (1,), (4,), [(1, 1)], (1,)),
    ((2, 10, 3), (2,), (2,), (2,), [(1, 1)], (1,)),
    ((3, 12, 12, 2), (3, 3), (2, 2), (1, 1), "SAME", (1, 1)),
    ((2, 6, 5, 3), (3, 2), (1, 1), (2, 3), [(2, 1), (0, 1)], (1, 2)),
]


@pytest.mark.parametrize("shape,window,strides,lhs_dil,padding,rhs_dil", CASES)
def test_matches_lax_convolution_and_its_gradient(shape, window, strides, lhs_dil, padding, rhs_dil):
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.normal(size=shape), jnp.float32)
    w = jnp.asarray(rng.normal(size=(*window, shape[-1], 5)), jnp.float32)
    dn = lax.conv_dimension_numbers(x.shape, w.shape, ("NWC", "WIO", "NWC") if len(window) == 1 else ("NHWC", "HWIO", "NHWC"))

    def run(conv):
        return lambda x, w: conv(x, w, strides, padding, lhs_dilation=lhs_dil, rhs_dilation=rhs_dil,
                                 dimension_numbers=dn, precision="highest")

    ref, got = run(lax.conv_general_dilated), run(conv_ops.conv_general_dilated)
    np.testing.assert_allclose(got(x, w), ref(x, w), rtol=1e-5, atol=1e-4)
    g_ref = jax.grad(lambda x, w: (ref(x, w) ** 2).sum(), argnums=(0, 1))(x, w)
    g_got = jax.grad(lambda x, w: (got(x, w) ** 2).sum(), argnums=(0, 1))(x, w)
    for a, b in zip(g_got, g_ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-3 * float(jnp.abs(b).max()))


class _FlaxLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.gelu(nn.Conv(16, (7,), strides=(2,), name="down")(x))
        return nn.ConvTranspose(1, (7,), strides=(2,), name="up")(h)


class _OpsLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        h = nn.gelu(conv_ops.Conv(16, (7,), strides=(2,), name="down")(x))
        return conv_ops.ConvTranspose(1, (7,), strides=(2,), name="up")(h)


def test_layers_have_flax_parameters_and_outputs_on_ecg(ecg_dir):
    _, x = read_ucr(ecg_dir / "ECG5000_TRAIN.txt")
    x = jnp.asarray(x[:64, :, None])
    ref, ops = _FlaxLayers(), _OpsLayers()
    params = ref.init(jax.random.key(0), x)
    same = jax.tree.map(lambda a, b: a.shape == b.shape and bool((a == b).all()), params, ops.init(jax.random.key(0), x))
    assert jax.tree.structure(params) == jax.tree.structure(same) and all(jax.tree.leaves(same))
    np.testing.assert_allclose(ops.apply(params, x), ref.apply(params, x), rtol=1e-5, atol=1e-5)
