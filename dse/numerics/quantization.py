"""Integer quantization of weights and activations for approximate multipliers.

Signed operands use symmetric quantization (zero point 0); unsigned operands use
affine quantization whose range always contains 0, so zero padding stays exact:

    q = clamp(round(x / s) + z, q_min, q_max),   x ~ s * (q - z)

Weights get one scale per output channel (or one per tensor); activation
ranges are calibrated once and frozen (never recomputed per batch: TFApprox's
mistake made accuracy depend on batch composition).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from dse.exceptions import ConfigError

__all__ = ["QuantParams", "activation_qparams", "qrange", "quantize", "weight_qparams"]


def qrange(bits: int, signed: bool) -> tuple[int, int]:
    """Integer range of a b-bit operand: the whole table, -2^(b-1)..2^(b-1)-1 or 0..2^b-1."""
    return (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1) if signed else (0, 2**bits - 1)


@dataclass(frozen=True)
class QuantParams:
    """Scale(s) and zero point(s); tensors broadcast over the output-channel axis for weights."""

    scale: torch.Tensor
    zero_point: torch.Tensor
    bits: int
    signed: bool


def _affine(lo: torch.Tensor, hi: torch.Tensor, bits: int, signed: bool) -> tuple[torch.Tensor, torch.Tensor]:
    lo, hi = torch.minimum(lo, torch.zeros_like(lo)), torch.maximum(hi, torch.zeros_like(hi))
    if signed:
        scale = torch.maximum(hi, -lo) / (2 ** (bits - 1) - 1)
        zero = torch.zeros_like(scale)
    else:
        scale = (hi - lo) / (2**bits - 1)
        zero = torch.round(-lo / torch.where(scale > 0, scale, torch.ones_like(scale)))
    scale = torch.where(scale > 0, scale, torch.ones_like(scale))  # an all-zero tensor quantizes to 0
    return scale.float(), zero.float()


def weight_qparams(weight: torch.Tensor, bits: int, signed: bool, per_channel: bool = True) -> QuantParams:
    """Scales from the weight range, per output channel (dim 0) or per tensor."""
    if not 2 <= bits <= 16:
        raise ConfigError(f"Weight quantization needs 2..16 bits, got {bits}.")
    w = weight.detach().float()
    if per_channel:
        flat = w.reshape(w.shape[0], -1)
        lo, hi = flat.min(dim=1).values, flat.max(dim=1).values
    else:
        lo, hi = w.min().reshape(1), w.max().reshape(1)
    scale, zero = _affine(lo, hi, bits, signed)
    return QuantParams(scale, zero, bits, signed)


def activation_qparams(lo: float, hi: float, bits: int, signed: bool) -> QuantParams:
    """Per-tensor scale from a calibrated activation range [lo, hi]."""
    scale, zero = _affine(torch.tensor([float(lo)]), torch.tensor([float(hi)]), bits, signed)
    return QuantParams(scale, zero, bits, signed)


def quantize(
    x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor | float, bits: int, signed: bool, offset: float = 0.0
) -> torch.Tensor:
    """Integer-valued float tensor ``clamp(round(x / scale) + zero_point) + offset`` (exact below 2^24).

    NaN is quantized as 0 (to the zero point) and +-inf saturate, so a diverging
    model gives a (bad) result instead of a crash. ``offset`` shifts the result in the
    same pass (table row indices); every step is exact integer arithmetic in float.
    """
    lo, hi = qrange(bits, signed)
    q = x / scale  # one new tensor; the rest in place
    q.nan_to_num_(nan=0.0).round_().add_(zero_point + offset)
    return q.clamp_(lo + offset, hi + offset)
