"""How long a training step's own matrix products take when each runs alone, summed.

The square-matmul ceiling (bench/peak.py) overstates what thin or member-batched products can reach,
so the "limited by" column needs the products the step really does, at their real shapes. Every
``dot_general`` (and ``conv_general_dilated``) of the step's jaxpr is timed alone, compiled, inside a
``lax.scan`` that alternates between two operand sets (no per-call dispatch, nothing loop-invariant
for XLA to hoist), and the medians are summed: what the step's arithmetic costs at its real shapes.
A step can come in slightly under the sum when XLA overlaps independent products.
"""

from __future__ import annotations

import statistics
import time

PRODUCTS = ("dot_general", "conv_general_dilated")


def _products(jaxpr):
    """``(primitive, params, operand avals)`` of every product in ``jaxpr`` and its sub-jaxprs."""
    from jax.extend import core

    for eqn in jaxpr.eqns:
        if eqn.primitive.name in PRODUCTS:
            yield eqn.primitive, eqn.params, [v.aval for v in eqn.invars]
        for sub in core.jaxprs_in_params(eqn.params):
            yield from _products(sub)


def _time_one(primitive, params, avals, reps: int, repeats: int) -> float:
    """Median seconds of one product, from ``repeats`` timings of a scan of ``reps`` products that
    alternate between two operand sets (a different one each iteration, so nothing is loop-invariant,
    and both stay in cache as the step's freshly made operands would)."""
    import jax
    import jax.numpy as jnp

    keys = jax.random.split(jax.random.key(0), len(avals))
    operands = [jax.random.normal(k, (2, *a.shape), jnp.float32).astype(a.dtype) for k, a in zip(keys, avals)]

    @jax.jit
    def run(ops):
        def body(acc, i):
            out = primitive.bind(*(o[i] for o in ops), **params)
            return acc + out.reshape(-1)[0].astype(jnp.float32), None
        return jax.lax.scan(body, jnp.zeros((), jnp.float32), jnp.arange(reps) % 2)[0]

    jax.block_until_ready(run(operands))
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        jax.block_until_ready(run(operands))
        times.append((time.perf_counter() - t) / reps)
    return statistics.median(times)


def matmul_floor(fn, *args, reps: int = 20, repeats: int = 5) -> dict:
    """Seconds the products of ``fn(*args)`` take when each runs alone, summed; and how many there are."""
    import jax

    closed = jax.make_jaxpr(fn)(*args)
    found = list(_products(closed.jaxpr))
    seconds = [_time_one(p, params, avals, reps, repeats) for p, params, avals in found]
    return {"seconds": float(sum(seconds)), "count": len(found)}

