"""Number formats for weights and activations, as value objects that round tensors.

A format maps float32 values to the nearest value it can represent (emulation
by "fake quantization", as QPyTorch does): the products of a layer are then
exact products of representable values, accumulated in float32.

- :class:`MiniFloat` ``eXmY``: IEEE-754-like, X exponent bits (bias 2^(X-1) - 1),
  Y stored mantissa bits, round to nearest with ties to even, subnormals (or
  flush-to-zero), the all-ones exponent reserved for inf/NaN. Overflow either
  saturates to the largest finite value (default) or goes to +-inf. NaN stays NaN.
  Narrow floats are *scaled* like the integers: a power-of-two scale (an exponent
  bias) per output channel of the weights, per tensor of the activations (from the
  calibrated range), chosen so the largest magnitude lands at the top of the format's
  range: ``eXmY`` per channel, ``eXmY_pt`` per tensor, ``eXmY_raw`` the fixed IEEE bias.
  ``fp8_e4m3`` / ``fp8_e5m2`` are the OCP FP8 formats as used in practice (E4M3FN: no
  infinities, max 448; E5M2: IEEE-like, max 57344), scaled per tensor.
  ``bf16`` = e8m7, ``fp16`` = e5m10 (unscaled), ``fp32`` = identity.
- :class:`FixedPoint` ``int<b>``/``uint<b>``: b-bit integers times a scale, symmetric
  (signed) or affine (unsigned); weights per output channel or per tensor,
  activations per tensor over a calibrated range.
- Decimal places are :mod:`dse.numerics.decimal_places`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Literal

import torch

from dse.exceptions import ConfigError

from .quantization import activation_qparams, quantize, weight_qparams

__all__ = ["FORMAT_EXAMPLES", "FixedPoint", "Float32", "MiniFloat", "NumberFormat", "parse_format"]

FORMAT_EXAMPLES = (
    "fp32, fp16, bf16, fp8_e4m3, fp8_e5m2, e<E>m<M>[_pt|_raw][_ftz][_inf] (e.g. e3m2, e2m2, e3m1), "
    "[u]int<b>[_pt] (e.g. int8, int5, uint8)"
)
Scaling = Literal["none", "tensor", "channel"]


class NumberFormat:
    """Base of every format: a name, a storage width, and rounding."""

    name: str
    bits: int

    def round_weight(self, w: torch.Tensor) -> torch.Tensor:
        """Nearest representable weights (per output channel where the format scales)."""
        raise NotImplementedError

    def round_activation(self, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        """Nearest representable activations; [lo, hi] is the calibrated range (used by scaled formats)."""
        raise NotImplementedError

    @property
    def needs_range(self) -> bool:
        """Whether activations scale by a calibrated range (so a layer taking it needs one)."""
        return False


@dataclass(frozen=True)
class Float32(NumberFormat):
    name: str = "fp32"
    bits: int = 32

    def round_weight(self, w: torch.Tensor) -> torch.Tensor:
        return w

    def round_activation(self, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        return x


@dataclass(frozen=True)
class MiniFloat(NumberFormat):
    """IEEE-like float with ``exp_bits`` exponent and ``man_bits`` stored mantissa bits.

    ``finite_only``: the OCP "FN" encoding (E4M3FN): no infinities, the all-ones exponent holds normal
    values and only its all-ones mantissa is NaN. ``scaling``: a power-of-two scale per output channel or
    per tensor (see the module docstring), or none.

    >>> e4m3 = MiniFloat(4, 3)
    >>> e4m3.max_finite, e4m3.min_normal, e4m3.min_subnormal
    (240.0, 0.015625, 0.001953125)
    >>> e4m3.round(torch.tensor([0.3, 1.0625, 1.1875, 300.0, -1e-4])).tolist()
    [0.3125, 1.0, 1.25, 240.0, -0.0]
    >>> MiniFloat(4, 3, finite_only=True).max_finite, MiniFloat(5, 2).max_finite
    (448.0, 57344.0)
    """

    exp_bits: int = 4
    man_bits: int = 3
    subnormals: bool = True
    saturate: bool = True
    name: str = ""
    finite_only: bool = False
    scaling: Scaling = "none"

    def __post_init__(self) -> None:
        if not 2 <= self.exp_bits <= 8 or not 0 <= self.man_bits <= 23:
            raise ConfigError(
                f"Minifloat e{self.exp_bits}m{self.man_bits} cannot be emulated in float32: exponent bits must be 2..8 "
                "and mantissa bits 0..23."
            )
        if self.finite_only and self.man_bits < 1:
            raise ConfigError(f"A finite-only (FN) minifloat needs mantissa bits for its NaN, got m{self.man_bits}.")
        if self.scaling not in ("none", "tensor", "channel"):
            raise ConfigError(f"Minifloat scaling must be none, tensor or channel, got {self.scaling!r}.")
        if not self.name:
            object.__setattr__(self, "name", f"e{self.exp_bits}m{self.man_bits}")

    @property
    def bits(self) -> int:  # type: ignore[override]
        return 1 + self.exp_bits + self.man_bits

    @property
    def bias(self) -> int:
        return 2 ** (self.exp_bits - 1) - 1

    @property
    def emax(self) -> int:  # IEEE: the all-ones exponent is inf/NaN; FN: it holds normals
        return 2**self.exp_bits - (1 if self.finite_only else 2) - self.bias

    @property
    def emin(self) -> int:
        return 1 - self.bias

    @property
    def max_finite(self) -> float:  # FN: the top exponent's all-ones mantissa is NaN
        return (2 - 2.0**-self.man_bits * (2 if self.finite_only else 1)) * 2.0**self.emax

    @property
    def min_normal(self) -> float:
        return 2.0**self.emin

    @property
    def min_subnormal(self) -> float:
        return 2.0 ** (self.emin - self.man_bits)

    def round(self, x: torch.Tensor) -> torch.Tensor:
        """Round to the nearest representable value, ties to even (exact; float32 inputs stay in float32)."""
        if x.dtype != torch.float32:
            return self._round_float64(x)
        out = x
        shift = 23 - self.man_bits
        if shift:  # normal range: round float32's mantissa to man_bits, ties to even, on its bit pattern
            bits = x.view(torch.int32)
            odd = bits.bitwise_right_shift(shift).bitwise_and_(1)
            bits = odd.add_(bits).add_((1 << (shift - 1)) - 1).bitwise_and_(-(1 << shift))  # a carry bumps the exponent
            out = bits.view(torch.float32)
        # below the smallest normal every value shares one quantum (a power of two >= 2^-149: exact)
        quantum = 2.0 ** (self.emin - self.man_bits)
        small = x.abs() < self.min_normal
        out = torch.where(small, torch.round(x / quantum) * quantum, out)
        return self._finish(out, x)

    def _finish(self, out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Flush subnormals, saturate or overflow to inf, keep NaN (``out`` already rounded)."""
        mag = out.abs()
        if not self.subnormals:
            out = torch.where(mag < self.min_normal, out * 0, out)  # signed zero
        limit = torch.full_like(out, self.max_finite if self.saturate else math.inf)
        out = torch.where(mag > self.max_finite, torch.copysign(limit, x), out)
        return torch.where(torch.isnan(x), x, out)

    def _round_float64(self, x: torch.Tensor) -> torch.Tensor:
        """Any other dtype: the same rounding through float64 frexp (exact for float64 inputs)."""
        a = x.double()
        _, exponent = torch.frexp(a)  # |a| = m * 2^exponent, m in [0.5, 1)
        quantum = torch.exp2((torch.clamp(exponent - 1, min=self.emin) - self.man_bits).double())
        rounded = torch.where(torch.isfinite(a), torch.round(a / quantum) * quantum, a)
        return self._finish(rounded, a).to(x.dtype)

    def _scale_for(self, amax: torch.Tensor) -> torch.Tensor:
        """The power of two that maps ``amax`` to the top binade of the format, never above ``max_finite``
        (an exponent bias: exact, and free in hardware beside the per-tensor or per-channel scale itself)."""
        safe = torch.where(amax > 0, amax, torch.ones_like(amax))
        return torch.exp2(torch.floor(torch.log2(self.max_finite / safe)))

    def round_weight(self, w: torch.Tensor) -> torch.Tensor:
        if self.scaling == "none":
            return self.round(w)
        if self.scaling == "channel" and w.dim() > 1:
            amax = w.detach().abs().flatten(1).amax(1).view((-1,) + (1,) * (w.dim() - 1))
        else:
            amax = w.detach().abs().amax()
        scale = self._scale_for(amax.float()).to(w.dtype)
        return self.round(w * scale) / scale

    def round_activation(self, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        if self.scaling == "none":
            return self.round(x)
        scale = self._scale_for(torch.tensor(max(abs(lo), abs(hi)), dtype=torch.float32)).item()
        return self.round(x * scale) / scale

    @property
    def needs_range(self) -> bool:
        return self.scaling != "none"


@dataclass(frozen=True)
class FixedPoint(NumberFormat):
    """b-bit integer values times a scale: ``int<b>`` symmetric, ``uint<b>`` affine.

    Scale 0.7 / 7 = 0.1; -0.35 / 0.1 = -3.5 is a tie and goes to even (-4):

    >>> FixedPoint(4).round_weight(torch.tensor([[0.7, -0.35, 0.1]])).tolist()
    [[0.699999988079071, -0.4000000059604645, 0.10000000149011612]]
    """

    bits: int = 8
    signed: bool = True
    per_channel: bool = True
    name: str = ""

    def __post_init__(self) -> None:
        if not 2 <= self.bits <= 24:
            raise ConfigError(f"Fixed-point width must be 2..24 bits (exact in float32), got {self.bits}.")
        if not self.name:
            object.__setattr__(self, "name", f"{'int' if self.signed else 'uint'}{self.bits}")

    def round_weight(self, w: torch.Tensor) -> torch.Tensor:
        p = weight_qparams(w, self.bits, self.signed, self.per_channel)
        shape = (-1,) + (1,) * (w.dim() - 1)
        scale, zero = p.scale.view(shape).to(w.device), p.zero_point.view(shape).to(w.device)
        return ((quantize(w.detach().float(), scale, zero, self.bits, self.signed) - zero) * scale).to(w.dtype)

    @property
    def needs_range(self) -> bool:
        return True

    def round_activation(self, x: torch.Tensor, lo: float, hi: float) -> torch.Tensor:
        p = activation_qparams(lo, hi, self.bits, self.signed)
        scale, zero = p.scale.to(x.device), p.zero_point.to(x.device)
        return ((quantize(x, scale, zero, self.bits, self.signed) - zero) * scale).to(x.dtype)


_MINIFLOAT = re.compile(r"e(\d+)m(\d+)(_pt|_raw)?(_ftz)?(_inf)?")
_FIXED = re.compile(r"(u?)int(\d+)(_pt)?")
_SCALING: dict[str | None, Scaling] = {None: "channel", "_pt": "tensor", "_raw": "none"}


def parse_format(name: str) -> NumberFormat:
    """``fp32``, ``fp16``, ``bf16``, ``fp8_e4m3``, ``fp8_e5m2``, ``e<E>m<M>[_pt|_raw][_ftz][_inf]`` or
    ``[u]int<b>[_pt]`` (per tensor) -> a format."""
    if name == "fp32":
        return Float32()
    if name == "fp16":
        return MiniFloat(5, 10, name="fp16")
    if name == "bf16":
        return MiniFloat(8, 7, name="bf16")
    if name == "fp8_e4m3":  # OCP E4M3FN, saturating conversion, per-tensor scale
        return MiniFloat(4, 3, finite_only=True, scaling="tensor", name=name)
    if name == "fp8_e5m2":  # OCP E5M2 (IEEE-like), saturating conversion, per-tensor scale
        return MiniFloat(5, 2, scaling="tensor", name=name)
    m = _MINIFLOAT.fullmatch(name)
    if m:
        return MiniFloat(
            int(m.group(1)),
            int(m.group(2)),
            subnormals=not m.group(4),
            saturate=not m.group(5),
            scaling=_SCALING[m.group(3)],
            name=name,
        )
    m = _FIXED.fullmatch(name)
    if m:
        return FixedPoint(int(m.group(2)), signed=not m.group(1), per_channel=not m.group(3), name=name)
    raise ConfigError(f"Unknown number format {name!r}; use one of {FORMAT_EXAMPLES}.")
