"""1-D convolutional encoder/decoder with U-Net-style skip connections."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp

from research.models.common import activation, pad_to_multiple


class CNNSkipAE(nn.Module):
    """Each level convolves then halves the length; the decoder doubles it back and concatenates
    the encoder features of the same resolution before convolving.

    ``features`` sets depth and channels; ``kernel_size`` is one int or one per level.
    ``skip_levels`` lists the levels that get a skip (None = all). Skips from the finest levels
    let the decoder copy the input pixel for pixel, which also copies anomalies; dropping them
    (e.g. ``skip_levels=(1, 2)``) forces fine detail through the coarser path. Accepts
    ``(batch, length)`` or ``(batch, length, channels)`` and returns the same shape.
    """

    features: Sequence[int] = (16, 32, 64)
    kernel_size: int | Sequence[int] = 7
    bottleneck_features: int | None = None
    skip_levels: Sequence[int] | None = None
    activation: str = "gelu"
    output_activation: str | None = None

    def _kernels(self) -> tuple[int, ...]:
        if isinstance(self.kernel_size, int):
            return (self.kernel_size,) * len(self.features)
        kernels = tuple(int(k) for k in self.kernel_size)
        if len(kernels) != len(self.features):
            raise ValueError(f"kernel_size has {len(kernels)} entries for {len(self.features)} levels")
        return kernels

    @nn.compact
    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        squeeze = x.ndim == 2
        h = x[..., None] if squeeze else x
        channels = h.shape[-1]
        depth = len(self.features)
        h, length = pad_to_multiple(h, axis=1, multiple=2 ** depth)
        act = activation(self.activation)
        kernels = self._kernels()
        use_skip = set(range(depth)) if self.skip_levels is None else {int(i) for i in self.skip_levels}

        skips = []
        for i, (feat, k) in enumerate(zip(self.features, kernels)):
            h = act(nn.Conv(feat, (k,), name=f"enc_{i}")(h))
            skips.append(h)
            h = act(nn.Conv(feat, (k,), strides=(2,), name=f"down_{i}")(h))
        h = act(nn.Conv(self.bottleneck_features or self.features[-1], (kernels[-1],), name="bottleneck")(h))
        for i in reversed(range(depth)):
            feat, k = self.features[i], kernels[i]
            h = act(nn.ConvTranspose(feat, (2,), strides=(2,), name=f"up_{i}")(h))
            if i in use_skip:
                h = jnp.concatenate([h, skips[i]], axis=-1)
            h = act(nn.Conv(feat, (k,), name=f"dec_{i}")(h))
        h = nn.Conv(channels, (1,), name="output")(h)
        h = activation(self.output_activation)(h[:, :length])
        return h[..., 0] if squeeze else h
