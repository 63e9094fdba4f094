"""The machine's attainable float32 matmul rate through JAX: the ceiling the training figures are read against.

    python -m bench.peak --device cpu
"""

from __future__ import annotations

import argparse
import time

from bench.common import emit, setup_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", choices=("cpu", "gpu"), default="cpu")
    p.add_argument("--size", type=int, default=1024)
    args = p.parse_args()
    setup_device(args.device)
    import jax
    import jax.numpy as jnp

    n = args.size if args.device == "cpu" else 8192
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
    dot = jax.jit(lambda a: a @ a)
    dot(a).block_until_ready()
    rates = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(5):
            out = dot(a)
        out.block_until_ready()
        rates.append(5 * 2 * n ** 3 / (time.perf_counter() - start) / 1e9)
    emit({"matmul_gflops": max(rates), "matmul_gflops_median": sorted(rates)[2], "size": n,
          "device": str(jax.devices()[0]), "device_kind": jax.devices()[0].device_kind})


if __name__ == "__main__":
    main()
