"""Integer-valued convolutions and matrix products that stay exact in floating point.

A float32 sum of integers is exact while every partial sum stays below 2^24.
With |term| <= ``max_term`` and K terms per output, ``K * max_term < 2^24``
guarantees it; otherwise the input channels are split into chunks that satisfy
the bound, and chunk results are added in float64 (exact below 2^53).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["FLOAT32_EXACT", "exact_conv2d", "exact_linear", "accumulator_dtype"]

FLOAT32_EXACT = 2**24


def accumulator_dtype(terms: int, max_term: float) -> torch.dtype:
    """float32 when a sum of ``terms`` integers of magnitude <= max_term is exact in it, else float64."""
    return torch.float32 if terms * max_term < FLOAT32_EXACT else torch.float64


def _chunks(n_channels: int, per_channel_terms: int, max_term: float) -> int:
    if per_channel_terms * max_term >= FLOAT32_EXACT:
        raise OverflowError(f"one input channel alone ({per_channel_terms} terms of {max_term}) exceeds float32 exactness")
    return math.ceil(n_channels * per_channel_terms * max_term / (FLOAT32_EXACT - 1))


def exact_conv2d(
    x: torch.Tensor, w: torch.Tensor, stride: tuple[int, int], dilation: tuple[int, int], groups: int, max_term: float
) -> torch.Tensor:
    """``conv2d(x, w)`` of integer-valued tensors (no padding), exact; float32 or float64 result."""
    cg, kh, kw = w.shape[1:]
    chunks = _chunks(cg, kh * kw, max_term)
    if chunks <= 1:
        return F.conv2d(x, w, None, stride, 0, dilation, groups)
    if groups != 1:  # rare: grouped conv with huge groups; exact but slower
        return F.conv2d(x.double(), w.double(), None, stride, 0, dilation, groups)
    bounds = torch.linspace(0, cg, chunks + 1).round().long().tolist()
    out = None
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        part = F.conv2d(x[:, lo:hi], w[:, lo:hi], None, stride, 0, dilation).double()
        out = part if out is None else out + part
    assert out is not None
    return out


def exact_linear(x: torch.Tensor, w: torch.Tensor, max_term: float) -> torch.Tensor:
    """``x @ w.T`` of integer-valued tensors, exact; float32 or float64 result."""
    k = w.shape[1]
    chunks = _chunks(k, 1, max_term)
    if chunks <= 1:
        return F.linear(x, w)
    bounds = torch.linspace(0, k, chunks + 1).round().long().tolist()
    return sum(F.linear(x[:, lo:hi], w[:, lo:hi]).double() for lo, hi in zip(bounds[:-1], bounds[1:]))  # type: ignore[return-value]
