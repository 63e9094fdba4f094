"""Reading a finished run back for comparisons: its final train state from the ``latest`` checkpoint."""

import json
import pathlib

import jax
import numpy as np


def final_state(run_dir) -> dict:
    """The newest ``latest`` checkpoint of a run as a tree of numpy arrays."""
    import orbax.checkpoint as ocp

    latest = pathlib.Path(run_dir).absolute() / "checkpoints" / "latest"
    steps = sorted((p for p in latest.iterdir() if p.name.isdigit()), key=lambda p: int(p.name))
    assert steps, f"{latest}: no checkpoint"
    checkpointer = ocp.StandardCheckpointer()
    path = steps[-1] / "default"
    metadata = checkpointer.metadata(path)
    metadata = getattr(metadata, "item_metadata", metadata)
    here = jax.sharding.SingleDeviceSharding(jax.devices()[0])  # it may have been saved by N processes
    target = jax.tree.map(lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=here), metadata)
    tree = checkpointer.restore(path, target)
    return jax.tree.map(np.asarray, tree)


def max_abs_difference(a: dict, b: dict) -> float:
    leaves_a, tree_a = jax.tree.flatten(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b, "different state structures"
    return max(float(np.max(np.abs(x.astype(np.float64) - y.astype(np.float64)), initial=0.0))
               for x, y in zip(leaves_a, leaves_b))


def assert_bitwise_equal(a: dict, b: dict) -> None:
    leaves_a, tree_a = jax.tree_util.tree_flatten_with_path(a)
    leaves_b, tree_b = jax.tree.flatten(b)
    assert tree_a == tree_b, "different state structures"
    for (path, x), y in zip(leaves_a, leaves_b):
        name = jax.tree_util.keystr(path)
        assert x.dtype == y.dtype and x.shape == y.shape, name
        assert np.array_equal(x, y), f"{name} differs (max {np.max(np.abs(x - y))})"


def allreduce_tolerance(run_dir) -> float:
    """How far a data-parallel run's parameters may be from one process's: an all-reduce sums the gradient
    in another order, and Adam divides it by its own running size, so where a gradient is near zero that
    rounding moves a step by a visible part of the learning rate (1.5e-5 after 4 steps at lr 2e-3 on one
    machine, under 1e-5 on another). The bound is 1% of lr x steps, the most Adam moves a parameter."""
    run_dir = pathlib.Path(run_dir)
    lr = json.loads((run_dir / "config.json").read_text())["train"]["learning_rate"]
    return 0.01 * lr * int(np.asarray(final_state(run_dir)["step"]).reshape(-1)[0])
