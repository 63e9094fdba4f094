"""Convolutions as one matrix multiply (im2col), for channels-last inputs.

XLA's CPU backend runs small convolutions, and above all their weight gradients (dilated
"backward-filter" convolutions), through slow generic loops: the ECG5000 Conv1DAE trained 4-5x
slower than the same layers written as slices + one matmul, whose gradients are again matmuls,
pads and slices. :func:`conv_general_dilated` is a drop-in for ``lax.conv_general_dilated`` that
flax's ``nn.Conv`` accepts; :func:`Conv` and :func:`ConvTranspose` build layers whose parameters
(names, shapes, initialisation) are those of ``nn.Conv``/``nn.ConvTranspose`` and whose outputs
equal theirs to float rounding.
"""

from __future__ import annotations

import itertools
from typing import Sequence

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax


def _channels_last(dimension_numbers, ndim: int) -> bool:
    n = ndim - 2
    expected = lax.ConvDimensionNumbers(lhs_spec=(0, n + 1, *range(1, n + 1)),
                                        rhs_spec=(n + 1, n, *range(n)),
                                        out_spec=(0, n + 1, *range(1, n + 1)))
    return lax.conv_dimension_numbers((1,) * ndim, (1,) * ndim, dimension_numbers) == expected


def conv_general_dilated(lhs, rhs, window_strides, padding, lhs_dilation=None, rhs_dilation=None,
                         dimension_numbers=None, feature_group_count=1, batch_group_count=1,
                         precision=None, preferred_element_type=None):
    """``lax.conv_general_dilated`` for ``(N, *spatial, C)`` x ``(*window, C_in, C_out)``, computed
    as pad (with interior zeros for ``lhs_dilation``) -> strided slices -> one matmul.

    Grouped convolutions and other layouts go to ``lax.conv_general_dilated`` unchanged.
    """
    n = lhs.ndim - 2
    lhs_dilation = tuple(lhs_dilation or (1,) * n)
    rhs_dilation = tuple(rhs_dilation or (1,) * n)
    strides = tuple(window_strides)
    if feature_group_count != 1 or batch_group_count != 1 or not _channels_last(dimension_numbers, lhs.ndim):
        return lax.conv_general_dilated(lhs, rhs, strides, padding, lhs_dilation, rhs_dilation,
                                        dimension_numbers, feature_group_count, batch_group_count,
                                        precision, preferred_element_type)
    window = rhs.shape[:n]
    if isinstance(padding, str):
        effective = [(k - 1) * d + 1 for k, d in zip(window, rhs_dilation)]
        padding = lax.padtype_to_pads(lhs.shape[1:-1], effective, strides, padding)
    padding = [tuple(p) for p in padding]
    if any(d > 1 for d in lhs_dilation) and all(s == 1 for s in strides):
        return _polyphase(lhs, rhs, padding, lhs_dilation, rhs_dilation, precision, preferred_element_type)
    config = [(0, 0, 0)] + [(lo, hi, d - 1) for (lo, hi), d in zip(padding, lhs_dilation)] + [(0, 0, 0)]
    x = lax.pad(lhs, jnp.zeros((), lhs.dtype), config)
    out = [(size - (k - 1) * d - 1) // s + 1
           for size, k, d, s in zip(x.shape[1:-1], window, rhs_dilation, strides)]
    taps = list(itertools.product(*(range(k) for k in window)))
    starts = [[j * d for j, d in zip(tap, rhs_dilation)] for tap in taps]
    return _matmul_patches(x, starts, out, strides, rhs.reshape(-1, rhs.shape[-1]), precision, preferred_element_type)


def _matmul_patches(x, starts, out, strides, kernel, precision, preferred_element_type):
    """Stacks the strided windows of ``x`` starting at each of ``starts`` and multiplies by ``kernel``."""
    cols = []
    for start in starts:
        limit = [x.shape[0]] + [b + (o - 1) * s + 1 for b, o, s in zip(start, out, strides)] + [x.shape[-1]]
        cols.append(lax.slice(x, [0, *start, 0], limit, (1, *strides, 1)))
    patches = jnp.stack(cols, axis=-2).reshape(x.shape[0], *out, -1)
    return lax.dot_general(patches, kernel, (((patches.ndim - 1,), (0,)), ((), ())),
                           precision=precision, preferred_element_type=preferred_element_type)


def _polyphase(lhs, rhs, padding, lhs_dilation, rhs_dilation, precision, preferred_element_type):
    """Input-dilated (transposed) stride-1 convolution without multiplying the inserted zeros.

    Output position ``o = d*t + r`` only meets the kernel taps ``j`` with ``(r + j*dk - lo) % d == 0``,
    at input index ``t + (r + j*dk - lo) // d``: one small convolution per phase ``r``, interleaved.
    """
    n = lhs.ndim - 2
    window, size = rhs.shape[:n], lhs.shape[1:-1]
    out = [(length - 1) * d + 1 + lo + hi - (k - 1) * dk
           for length, d, (lo, hi), k, dk in zip(size, lhs_dilation, padding, window, rhs_dilation)]
    steps = [-(-o // d) for o, d in zip(out, lhs_dilation)]  # outputs per phase, padded to equal counts
    phase_taps = [[[(j, (r + j * dk - lo) // d) for j in range(k) if (r + j * dk - lo) % d == 0]
                   for r in range(d)]
                  for d, k, dk, (lo, _) in zip(lhs_dilation, window, rhs_dilation, padding)]
    offsets = [[off for taps in dim for _, off in taps] or [0] for dim in phase_taps]
    pad_lo = [max(0, -min(o)) for o in offsets]
    pad_hi = [max(0, t - 1 + max(o) - (length - 1)) for t, o, length in zip(steps, offsets, size)]
    x = jnp.pad(lhs, [(0, 0)] + list(zip(pad_lo, pad_hi)) + [(0, 0)])
    c_out = rhs.shape[-1]
    dtype = preferred_element_type or jnp.result_type(lhs, rhs)
    phases = []
    for phase in itertools.product(*(range(d) for d in lhs_dilation)):
        per_dim = [phase_taps[i][r] for i, r in enumerate(phase)]
        if any(not taps for taps in per_dim):
            phases.append(jnp.zeros((lhs.shape[0], *steps, c_out), dtype))
            continue
        taps = list(itertools.product(*per_dim))
        starts = [[off + p for (_, off), p in zip(tap, pad_lo)] for tap in taps]
        kernel = jnp.stack([rhs[tuple(j for j, _ in tap)] for tap in taps]).reshape(-1, c_out)
        phases.append(_matmul_patches(x, starts, steps, (1,) * n, kernel, precision, preferred_element_type))
    y = jnp.stack(phases).reshape(*lhs_dilation, lhs.shape[0], *steps, c_out)
    order = [n] + [a for i in range(n) for a in (n + 1 + i, i)] + [2 * n + 1]  # (B, T1, d1, T2, d2, ..., C)
    y = y.transpose(order).reshape(lhs.shape[0], *(t * d for t, d in zip(steps, lhs_dilation)), c_out)
    return y[(slice(None), *(slice(0, o) for o in out), slice(None))]


def transpose_padding(kernel_size: Sequence[int], strides: Sequence[int]) -> list[tuple[int, int]]:
    """The padding ``lax.conv_transpose(..., 'SAME')`` applies around the stride-dilated input."""
    pads = []
    for k, s in zip(kernel_size, strides):
        total = k + s - 2
        lo = k - 1 if s > k - 1 else int(np.ceil(total / 2))
        pads.append((lo, total - lo))
    return pads


def Conv(features: int, kernel_size: Sequence[int], strides: Sequence[int] | None = None, **kwargs) -> nn.Conv:
    """``nn.Conv`` (SAME padding) computed by :func:`conv_general_dilated`."""
    return nn.Conv(features, tuple(kernel_size), strides=strides, conv_general_dilated=conv_general_dilated, **kwargs)


def ConvTranspose(features: int, kernel_size: Sequence[int], strides: Sequence[int], **kwargs) -> nn.Conv:
    """``nn.ConvTranspose(features, kernel_size, strides)`` with SAME padding, as the forward
    convolution it is (input dilated by the stride, kernel not flipped): same parameters, same output."""
    kernel_size, strides = tuple(kernel_size), tuple(strides)
    return nn.Conv(features, kernel_size, padding=transpose_padding(kernel_size, strides), input_dilation=strides,
                   conv_general_dilated=conv_general_dilated, **kwargs)
