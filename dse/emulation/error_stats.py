"""The fitted error of one emulated layer's sums, the noise it draws, and the quantization it trains through.

What :mod:`dse.emulation.error_model` fits and the emulated layers (:mod:`dse.emulation.emulated`)
apply; this module depends on neither, so they do not depend on each other.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

__all__ = ["LayerErrorModel", "NoisePool", "fake_quantize"]


@dataclass(frozen=True)
class LayerErrorModel:
    """Per-output-channel error of an emulated layer's sums: ``approx - exact ~ gain * exact + offset + std * N``."""

    gain: torch.Tensor
    offset: torch.Tensor
    std: torch.Tensor

    @classmethod
    def fit(cls, exact: torch.Tensor, approx: torch.Tensor, channel_dim: int) -> LayerErrorModel:
        """Least squares per channel over every other dimension (batch, positions)."""
        e = exact.detach().movedim(channel_dim, 0).reshape(exact.shape[channel_dim], -1).double()
        r = approx.detach().movedim(channel_dim, 0).reshape(e.shape).double() - e
        e_mean, r_mean = e.mean(dim=1), r.mean(dim=1)
        e_c, r_c = e - e_mean[:, None], r - r_mean[:, None]
        var = (e_c * e_c).mean(dim=1)
        gain = torch.where(var > 0, (e_c * r_c).mean(dim=1) / var.clamp_min(1e-300), torch.zeros_like(var))
        offset = r_mean - gain * e_mean
        residual = r - gain[:, None] * e - offset[:, None]
        return cls(gain.float(), offset.float(), residual.std(dim=1, correction=0).float())

    def apply(
        self, acc: torch.Tensor, channel_dim: int, noise: NoisePool, bias: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The modeled approximate sums (plus ``bias``) for exact sums ``acc``; differentiable in both."""
        view = [1] * acc.dim()
        view[channel_dim] = -1
        gain, offset, std = (t.to(acc.device).view(view) for t in (self.gain, self.offset, self.std))
        shift = offset if bias is None else offset + bias.view(view)
        return torch.addcmul(torch.addcmul(shift, acc, 1 + gain), noise.like(acc), std)  # two passes


class NoisePool:
    """Standard normal noise for the error model, drawn once per refit and read at a random offset.

    Drawing fresh Gaussian noise for every activation of every layer at every step costs more
    than the layer's convolution on a CPU. A window of a pool of i.i.d. normals is i.i.d. too:
    each step reads the pool at a fresh random offset, so within a step every element's noise
    is independent, and across steps the network would have to learn the pool's alignment to
    exploit the reuse. ``refresh`` (at each refit) draws a new pool.
    """

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self._pool: torch.Tensor | None = None
        self._generator = generator

    def refresh(self) -> None:
        self._pool = None  # redrawn, at the size needed, on the next use

    def like(self, t: torch.Tensor) -> torch.Tensor:
        """Standard normal noise of ``t``'s shape, strides and device (a view of the pool)."""
        n = t.numel()
        if self._pool is None or self._pool.device != t.device or self._pool.numel() < 2 * n:
            size = max(2 * n, self._pool.numel() if self._pool is not None else 0)
            self._pool = torch.randn(size, device=t.device, dtype=torch.float32)
        start = int(torch.randint(0, self._pool.numel() - n + 1, (1,), generator=self._generator))
        if t.is_contiguous() or t.is_contiguous(memory_format=torch.channels_last):
            return self._pool.as_strided(t.shape, t.stride(), start)
        return self._pool[start : start + n].view(t.shape)


class _FakeQuantize(torch.autograd.Function):
    """``clamp(round(x / s), lo, hi) * s``; backward: straight through where x lies inside the range."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, scale: float, lo: float, hi: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.bounds = ((lo - 0.5) * scale, (hi + 0.5) * scale)
        return x.mul(1.0 / scale).nan_to_num_(nan=0.0).round_().clamp_(lo, hi).mul_(scale)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, None, None, None]:
        (x,) = ctx.saved_tensors
        low, high = ctx.bounds
        return torch.where((x >= low) & (x <= high), grad, 0.0), None, None, None


def fake_quantize(x: torch.Tensor, scale: float, zero_point: float, qmin: int, qmax: int) -> torch.Tensor:
    """The real value of x's quantization, ``s (clamp(round(x / s) + z, qmin, qmax) - z)``, with the clipped
    straight-through gradient; one pass each way (the error model's operands, not the bit-exact ones)."""
    return _FakeQuantize.apply(x, scale, qmin - zero_point, qmax - zero_point)
