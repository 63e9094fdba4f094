"""1-D convolutional autoencoder for signals of any length (padded to the stride, output cropped back)."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from research.models.common import activation, pad_to_multiple
from research.models.conv_ops import Conv, ConvTranspose


class Conv1DAE(nn.Module):
    """Strided convolutions down, transposed convolutions up, optional dense bottleneck.

    Accepts ``(batch, length)`` or ``(batch, length, channels)`` and returns the same shape. The layers
    are ``nn.Conv``/``nn.ConvTranspose`` computed as matmuls (:mod:`research.models.conv_ops`), several
    times faster on CPU, with the same parameters and outputs.
    """

    features: Sequence[int] = (32, 64)
    kernel_size: int = 7
    stride: int = 2
    latent_dim: int | None = 32
    activation: str = "gelu"
    output_activation: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        squeeze = x.ndim == 2
        h = x[..., None] if squeeze else x
        channels = h.shape[-1]
        h, length = pad_to_multiple(h, axis=1, multiple=self.stride ** len(self.features))
        act = activation(self.activation)
        for i, feat in enumerate(self.features):
            h = act(Conv(feat, (self.kernel_size,), strides=(self.stride,), name=f"enc_{i}")(h))
        if self.latent_dim is not None:
            inner = h.shape[1:]
            z = nn.Dense(self.latent_dim, name="latent")(h.reshape(h.shape[0], -1))
            h = act(nn.Dense(inner[0] * inner[1], name="expand")(z)).reshape((-1, *inner))
        for i, feat in enumerate(reversed(tuple(self.features[:-1]))):
            h = act(ConvTranspose(feat, (self.kernel_size,), strides=(self.stride,), name=f"dec_{i}")(h))
        h = ConvTranspose(channels, (self.kernel_size,), strides=(self.stride,), name="output")(h)
        h = activation(self.output_activation)(h[:, :length])
        return h[..., 0] if squeeze else h
