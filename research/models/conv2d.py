"""2-D convolutional autoencoder for images of any size (padded to the stride, output cropped back)."""

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from research.models.common import activation, pad_to_multiple


class Conv2DAE(nn.Module):
    """Strided 2-D convolutions down, transposed convolutions up, optional dense bottleneck.

    Accepts ``(batch, height, width)`` or ``(batch, height, width, channels)`` and returns the
    same shape. ``latent_dim=None`` keeps the spatial code of the last encoder layer.
    """

    features: Sequence[int] = (32, 64)
    kernel_size: int = 3
    stride: int = 2
    latent_dim: int | None = 32
    activation: str = "relu"
    output_activation: str | None = None

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        squeeze = x.ndim == 3
        h = x[..., None] if squeeze else x
        channels = h.shape[-1]
        multiple = self.stride ** len(self.features)
        h, height = pad_to_multiple(h, axis=1, multiple=multiple)
        h, width = pad_to_multiple(h, axis=2, multiple=multiple)
        act = activation(self.activation)
        k, s = (self.kernel_size,) * 2, (self.stride,) * 2
        for i, feat in enumerate(self.features):
            h = act(nn.Conv(feat, k, strides=s, name=f"enc_{i}")(h))
        if self.latent_dim is not None:
            inner = h.shape[1:]
            z = nn.Dense(self.latent_dim, name="latent")(h.reshape(h.shape[0], -1))
            h = act(nn.Dense(inner[0] * inner[1] * inner[2], name="expand")(z)).reshape((-1, *inner))
        for i, feat in enumerate(reversed(tuple(self.features[:-1]))):
            h = act(nn.ConvTranspose(feat, k, strides=s, name=f"dec_{i}")(h))
        h = nn.ConvTranspose(channels, k, strides=s, name="output")(h)
        h = activation(self.output_activation)(h[:, :height, :width])
        return h[..., 0] if squeeze else h
