"""The reference emulation: unfold, then one table lookup per product, summed in int64.

Slow and obviously right; the oracle of every test. Inputs are table *indices*
(operand bit patterns, 0..2^bits-1), already padded; the result is the int64
sum over each receptive field of ``lut[x_k, w_k]``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["conv_output_size", "lut_conv2d_reference", "lut_linear_reference"]

_CHUNK_ELEMENTS = 2**25  # bound the (N, O, K, L) gather's memory


def conv_output_size(
    size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], dilation: tuple[int, int]
) -> tuple[int, int]:
    """Output height and width of a convolution over an already padded ``size`` input.

    >>> conv_output_size((34, 34), (3, 3), (2, 2), (1, 1))
    (16, 16)
    """
    h, w = ((n - d * (k - 1) - 1) // s + 1 for n, k, s, d in zip(size, kernel, stride, dilation, strict=True))
    return h, w


def lut_conv2d_reference(
    x_idx: torch.Tensor,
    w_idx: torch.Tensor,
    lut: torch.Tensor,
    stride: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> torch.Tensor:
    """(N, O, H', W') int64 sums of ``lut[x, w]`` for a conv over an already padded input."""
    n, _, h, w = x_idx.shape
    o, cg, kh, kw = w_idx.shape
    size = lut.shape[0]
    cols = F.unfold(x_idx.double(), (kh, kw), dilation=dilation, stride=stride).long()  # (N, C*kh*kw, L)
    h_out, w_out = conv_output_size((h, w), (kh, kw), stride, dilation)
    k = cg * kh * kw
    cols = cols.view(n, groups, k, -1)
    weights = w_idx.reshape(groups, o // groups, k)
    flat = lut.reshape(-1).long()
    out = torch.empty(n, groups, o // groups, cols.shape[-1], dtype=torch.int64)
    step = max(1, _CHUNK_ELEMENTS // max(1, n * k * cols.shape[-1]))
    for g in range(groups):
        for start in range(0, o // groups, step):
            wg = weights[g, start : start + step]  # (Oc, K)
            index = cols[:, g, None, :, :] * size + wg[None, :, :, None]  # (N, Oc, K, L)
            out[:, g, start : start + step] = flat[index].sum(dim=2)
    return out.view(n, o, h_out, w_out)


def lut_linear_reference(x_idx: torch.Tensor, w_idx: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """(N, O) int64 sums of ``lut[x, w]`` over the K inputs."""
    size = lut.shape[0]
    flat = lut.reshape(-1).long()
    return flat[x_idx[:, None, :].long() * size + w_idx[None, :, :].long()].sum(dim=-1)
