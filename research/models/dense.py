"""Fully connected autoencoder: the 784->64->784 sigmoid model of the Fashion-MNIST seed is one config."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from research.models.common import activation


class DenseAE(nn.Module):
    """Flattens each sample, encodes through ``hidden`` to ``latent_dim``, mirrors back, restores shape."""

    latent_dim: int = 64
    hidden: Sequence[int] = ()
    activation: str = "relu"
    latent_activation: str | None = None
    output_activation: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        shape = x.shape
        act = activation(self.activation)
        h = x.reshape(shape[0], -1)
        n_out = h.shape[-1]
        for width in self.hidden:
            h = act(nn.Dense(width)(h))
        h = nn.Dense(self.latent_dim, name="latent")(h)
        h = act(h) if self.latent_activation is None else activation(self.latent_activation)(h)
        for width in reversed(tuple(self.hidden)):
            h = act(nn.Dense(width)(h))
        h = nn.Dense(n_out, name="output")(h)
        return activation(self.output_activation)(h).reshape(shape)
