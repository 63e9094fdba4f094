"""bench/matmul_floor.py finds every matrix product of a step, nested ones included, and times them."""

import jax
import jax.numpy as jnp

from bench.matmul_floor import _products, matmul_floor


def _mlp_grad(params, x):
    def loss(p):
        h = jax.nn.relu(x @ p["w1"])
        return jnp.mean((h @ p["w2"] - x) ** 2)
    return jax.grad(loss)(params)


def _params():
    k1, k2 = jax.random.split(jax.random.key(0))
    return {"w1": jax.random.normal(k1, (12, 5)), "w2": jax.random.normal(k2, (5, 12))}


def test_counts_forward_and_backward_products_inside_jit_and_scan():
    x = jnp.ones((8, 12))
    # forward: 2; backward: dW2, dh, dW1 (no gradient for the input): 5 in all
    assert len(list(_products(jax.make_jaxpr(_mlp_grad)(_params(), x).jaxpr))) == 5

    def three_steps(params, xs):
        return jax.lax.scan(lambda p, xb: (jax.jit(_mlp_grad)(p, xb), None), params, xs)[0]

    found = list(_products(jax.make_jaxpr(three_steps)(_params(), jnp.ones((3, 8, 12))).jaxpr))
    assert len(found) == 5  # a scan body is one program: its products are counted once
    shapes = sorted(tuple(a.shape for a in avals) for _, _, avals in found)
    assert ((8, 12), (12, 5)) in shapes and ((8, 5), (5, 12)) in shapes


def test_member_batched_products_keep_their_batch_axis_and_cost_time():
    x = jnp.ones((64, 12))
    params = jax.tree.map(lambda a: jnp.stack([a] * 4), _params())
    step = jax.vmap(_mlp_grad, in_axes=(0, None))
    found = list(_products(jax.make_jaxpr(step)(params, x).jaxpr))
    assert any(len(avals[0].shape) == 3 or len(avals[1].shape) == 3 for _, _, avals in found)
    floor = matmul_floor(step, params, x, reps=4, repeats=2)
    assert floor["count"] == len(found) == 5 and floor["seconds"] > 0
