"""bench/matmul_floor.py finds every matrix product of a step, nested ones included, and times them."""

import jax
import jax.numpy as jnp
import pytest

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


def test_member_batched_products_keep_their_batch_axis():
    x = jnp.ones((64, 12))
    params = jax.tree.map(lambda a: jnp.stack([a] * 4), _params())
    step = jax.vmap(_mlp_grad, in_axes=(0, None))
    found = list(_products(jax.make_jaxpr(step)(params, x).jaxpr))
    assert len(found) == 5 and any(len(avals[0].shape) == 3 or len(avals[1].shape) == 3 for _, _, avals in found)


@pytest.mark.slow
def test_the_time_of_a_product_grows_with_its_size():
    """A product with 4096 times the flops of another is timed at least 8 times longer (about 1000 times on
    an idle CPU): the floor times the products themselves, not a fixed overhead."""
    def times(n):
        a = jnp.ones((n, n))
        return matmul_floor(lambda u, v: (u @ v) @ v, a, a, reps=4, repeats=3)

    small, large = times(32), times(512)
    assert small["count"] == large["count"] == 2
    assert large["seconds"] > 8 * small["seconds"], (small, large)


@pytest.mark.slow
def test_step_costs_add_up_the_member_chunks():
    """member_chunk=2 over 3 members costs a step of two members plus a step of one: the same flops as
    all three in one vmap, from twice as many (smaller) products."""
    import ml_collections

    from bench.throughput import step_costs
    from research.models import build_model
    from research.training import Trainer, make_optimizer

    model = build_model({"name": "dense", "hidden": (16,), "latent_dim": 4})
    tx = make_optimizer(ml_collections.ConfigDict({"epochs": 1, "learning_rate": 1e-3}), 4)
    train = {"x": jax.random.normal(jax.random.key(1), (64, 24))}
    costs = {}
    for chunk in (0, 2):
        trainer = Trainer(model, tx, batch_size=16, member_chunk=chunk)
        costs[chunk] = step_costs(trainer, trainer.init([0, 1, 2], (24,)), trainer.put(train), time_products=False)
    assert costs[2]["matmuls_per_step"] == 2 * costs[0]["matmuls_per_step"] > 0
    assert abs(costs[2]["flops_per_step"] / costs[0]["flops_per_step"] - 1) < 0.05
