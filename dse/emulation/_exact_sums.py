"""Integer-valued convolutions and matrix products that stay exact in floating point.

A float32 sum of integers is exact while every partial sum stays below 2^24.
With |term| <= ``max_term`` and K terms per output, ``K * max_term < 2^24``
guarantees it; otherwise the input channels are split into chunks that satisfy
the bound, and chunk results are added in float64 (exact below 2^53).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["FLOAT32_EXACT", "INT32_EXACT", "accumulator_dtype", "channel_chunks", "exact_conv2d", "exact_linear"]

FLOAT32_EXACT = 2**24
INT32_EXACT = 2**31  # int32 sums (the compiled kernel) are exact below this


def accumulator_dtype(terms: int, max_term: float) -> torch.dtype:
    """float32 when a sum of ``terms`` integers of magnitude <= max_term is exact in it, else float64."""
    return torch.float32 if terms * max_term < FLOAT32_EXACT else torch.float64


def channel_chunks(n_channels: int, per_channel_terms: int, max_term: float) -> list[tuple[int, int]]:
    """Input-channel ranges ``[lo, hi)`` whose sums stay exact in float32.

    Every output sums ``per_channel_terms`` terms of magnitude <= ``max_term`` per
    input channel; a chunk holds as many whole channels as keep that sum below 2^24.

    >>> channel_chunks(10, 9, 2**19)
    [(0, 3), (3, 6), (6, 9), (9, 10)]
    """
    if per_channel_terms * max_term >= FLOAT32_EXACT:
        raise OverflowError(
            f"one input channel alone ({per_channel_terms} terms of {max_term}) exceeds float32 exactness"
        )
    per_chunk = max(1, int((FLOAT32_EXACT - 1) // (per_channel_terms * max_term))) if max_term else n_channels
    return [(lo, min(n_channels, lo + per_chunk)) for lo in range(0, n_channels, max(1, per_chunk))]


def exact_conv2d(
    x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int], dilation: tuple[int, int], groups: int, max_term: float
) -> torch.Tensor:
    """``conv2d(x, w)`` of integer-valued tensors (no padding), exact; float32 or float64 result."""
    cg, kh, kw = w.shape[1:]
    chunks = channel_chunks(cg, kh * kw, max_term)
    if len(chunks) <= 1:
        return F.conv2d(x, w, None, stride, 0, dilation, groups)
    if groups != 1:  # rare: grouped conv with huge groups; exact but slower
        return F.conv2d(x.double(), w.double(), None, stride, 0, dilation, groups)
    out = torch.zeros(0)
    for i, (lo, hi) in enumerate(chunks):
        part = F.conv2d(x[:, lo:hi], w[:, lo:hi], None, stride, 0, dilation).double()
        out = part if i == 0 else out.add_(part)
    return out


def exact_linear(x: torch.Tensor, w: torch.Tensor, max_term: float) -> torch.Tensor:
    """``x @ w.T`` of integer-valued tensors, exact; float32 or float64 result."""
    chunks = channel_chunks(w.shape[1], 1, max_term)
    if len(chunks) <= 1:
        return F.linear(x, w)
    out = torch.zeros(x.shape[0], w.shape[0], dtype=torch.float64, device=x.device)
    for lo, hi in chunks:
        out.add_(F.linear(x[:, lo:hi], w[:, lo:hi]).double())
    return out
