"""1-D convolutional encoder/decoder with U-Net-style skip connections."""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from research.models import conv_ops
from research.models.common import activation, pad_to_multiple

CONV_IMPLS = ("auto", "xla", "matmul")


class CNNSkipAE(nn.Module):
    """Each level convolves then halves the length by pooling; the decoder doubles it back
    (nearest-neighbour), concatenates the encoder features of the same resolution and convolves.
    Pooling and repeat instead of strided and transposed convolutions: same shapes, but their
    gradients are several times cheaper on CPU.

    ``features`` sets depth and channels; ``kernel_size`` is one int or one per level.
    ``skip_levels`` lists the levels that get a skip (None = all). Skips let the decoder copy
    local detail from the input, anomalies included; dropping them forces detail through the
    coarser path, and ``latent_dim`` adds a dense bottleneck (the deepest features flattened to
    ``latent_dim`` numbers and back), the only thing that stops a purely convolutional model from
    passing a local feature through. Accepts ``(batch, length)`` or ``(batch, length, channels)``
    and returns the same shape.
    """

    features: Sequence[int] = (16, 32, 64)
    kernel_size: int | Sequence[int] = 7
    bottleneck_features: int | None = None
    latent_dim: int | None = None
    skip_levels: Sequence[int] | None = None
    pool: str = "avg"  # 'avg' or 'max'
    conv_impl: str = "auto"  # 'xla' (nn.Conv), 'matmul' (conv_ops.Conv), 'auto' = matmul on CPU
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

        if self.pool not in ("avg", "max"):
            raise ValueError(f"pool must be 'avg' or 'max', got {self.pool!r}")
        if self.conv_impl not in CONV_IMPLS:
            raise ValueError(f"conv_impl must be one of {CONV_IMPLS}, got {self.conv_impl!r}")
        impl = self.conv_impl
        if impl == "auto":
            impl = "matmul" if jax.default_backend() == "cpu" else "xla"

        def conv(feat, k, name):
            if impl == "matmul":  # XLA:CPU convolutions (and their gradients) are slow
                return conv_ops.Conv(feat, (k,), name=name)
            return nn.Conv(feat, (k,), name=name)

        skips = []
        for i, (feat, k) in enumerate(zip(self.features, kernels)):
            h = act(conv(feat, k, f"enc_{i}")(h))
            skips.append(h)
            pairs = h.reshape(h.shape[0], h.shape[1] // 2, 2, h.shape[2])
            h = pairs.mean(2) if self.pool == "avg" else pairs.max(2)
        h = act(conv(self.bottleneck_features or self.features[-1], kernels[-1], "bottleneck")(h))
        if self.latent_dim:
            inner = h.shape[1:]
            z = nn.Dense(self.latent_dim, name="latent")(h.reshape(h.shape[0], -1))
            h = act(nn.Dense(inner[0] * inner[1], name="expand")(z)).reshape((-1, *inner))
        for i in reversed(range(depth)):
            feat, k = self.features[i], kernels[i]
            h = jnp.repeat(h, 2, axis=1)
            if i in use_skip:
                h = jnp.concatenate([h, skips[i]], axis=-1)
            h = act(conv(feat, k, f"dec_{i}")(h))
        h = conv(channels, 1, "output")(h)
        h = activation(self.output_activation)(h[:, :length])
        return h[..., 0] if squeeze else h
