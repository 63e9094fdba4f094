"""Small pieces shared by the models: activations by name, padding to a stride multiple."""

from typing import Callable

import flax.linen as nn
import jax.numpy as jnp

from research.errors import InputError

_ACTIVATIONS: dict[str, Callable] = {
    "relu": nn.relu,
    "gelu": nn.gelu,
    "silu": nn.silu,
    "elu": nn.elu,
    "leaky_relu": nn.leaky_relu,
    "tanh": jnp.tanh,
    "sigmoid": nn.sigmoid,
    "softplus": nn.softplus,
    "linear": lambda x: x,
    "none": lambda x: x,
}


def activation(name: str | None) -> Callable:
    key = "none" if name is None else str(name).lower()
    if key not in _ACTIVATIONS:
        raise InputError(f"unknown activation {name!r}; choose one of {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[key]


def pad_to_multiple(x: jnp.ndarray, axis: int, multiple: int) -> tuple[jnp.ndarray, int]:
    """Edge-pads ``axis`` up to a multiple; returns the padded array and the original length.

    Strided encoders need lengths divisible by the total stride; padding (and cropping the output
    back) keeps every input sample, where truncation would silently drop the tail.
    """
    length = x.shape[axis]
    target = -(-length // multiple) * multiple
    if target == length:
        return x, length
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, target - length)
    return jnp.pad(x, widths, mode="edge"), length
