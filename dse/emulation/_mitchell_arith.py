"""Mitchell's product by arithmetic, per multiply-accumulate: no table, any device, any width.

Mitch-w (Kim et al. 2020, after Mitchell 1962), on magnitudes, signs apart: with
``a = 2^ka (1 + fa)``, ``fa`` truncated to w bits (as an integer ``Fa`` in units of
2^-(w+1), the last bit the optional bias correction) and the same for b,

    s = Fa + Fb;   M = (2^(w+1) + s) << (ka + kb)        if s < 2^(w+1)   (no carry)
                   M =  s << (ka + kb + 1)                 otherwise        (carry)
    then shifted right by w + 1 (a right shift truncates), and 0 if either operand is 0.

The per-operand parts (sign, leading-one position k, fraction F) are computed once per
activation and per weight; only the add, the carry test and the shift run per MAC. This
is the path for devices without the compiled kernel (GPUs) and for operands wider than
8 bits, whose tables the kernel does not index. It equals
:class:`dse.multipliers.MitchellMultiplier` (and so its table) bit for bit.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dse.multipliers import MitchellMultiplier

from .reference import conv_output_size

__all__ = ["MitchellProducts"]

_CHUNK_ELEMENTS = 2**21  # per-MAC temporaries of one chunk (int64): about 16 MiB each


class MitchellProducts:
    """Sums of Mitch-w products of integer operand values, by arithmetic."""

    def __init__(self, multiplier: MitchellMultiplier) -> None:
        self.w = multiplier.w
        self.bias_correction = multiplier.bias_correction
        self.signed = multiplier.signed

    def operands(self, values: torch.Tensor) -> torch.Tensor:
        """(3, *values.shape) int64: sign (0 for a zero operand), leading-one position k, fraction F."""
        v = values.long()
        magnitude = v.abs() if self.signed else v
        sign = v.sign() if self.signed else (v != 0).long()
        k = (torch.frexp(magnitude.clamp(min=1).double())[1] - 1).long()  # exact below 2^53
        frac = magnitude.clamp(min=1) - torch.bitwise_left_shift(torch.ones_like(k), k)
        kept = torch.where(
            k > self.w,
            torch.bitwise_right_shift(frac, (k - self.w).clamp(min=0)),
            torch.bitwise_left_shift(frac, (self.w - k).clamp(min=0)),
        )
        fraction = torch.bitwise_left_shift(kept, 1)
        if self.bias_correction:
            fraction = fraction + (k > self.w).long()
        return torch.stack([sign, k, fraction])

    def _products(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mitchell products of broadcast operand parts ``a``, ``b`` (3, ...) -> int64 (...)."""
        bits = self.w + 1
        one = 1 << bits
        s = a[2] + b[2]
        carry = (s >= one).long()
        mantissa = torch.where(carry.bool(), s, s + one)
        exponent = a[1] + b[1] + carry - bits
        product = torch.where(
            exponent >= 0,
            torch.bitwise_left_shift(mantissa, exponent.clamp(min=0)),
            torch.bitwise_right_shift(mantissa, (-exponent).clamp(min=0)),
        )
        return a[0] * b[0] * product

    def linear(self, x_val: torch.Tensor, w_val: torch.Tensor) -> torch.Tensor:
        """(N, O) int64 sums of Mitchell products over the K inputs."""
        xa, wb = self.operands(x_val), self.operands(w_val)  # (3, N, K), (3, O, K)
        n, o, k = x_val.shape[0], w_val.shape[0], x_val.shape[1]
        out = torch.empty(n, o, dtype=torch.int64, device=x_val.device)
        step = max(1, _CHUNK_ELEMENTS // max(1, o * k))
        for lo in range(0, n, step):
            out[lo : lo + step] = self._products(xa[:, lo : lo + step, None, :], wb[:, None, :, :]).sum(dim=-1)
        return out

    def conv2d(
        self, x_val: torch.Tensor, w_val: torch.Tensor, stride: tuple[int, int], dilation: tuple[int, int], groups: int
    ) -> torch.Tensor:
        """(N, O, H', W') int64 sums of Mitchell products for a conv over an already padded input."""
        n, c, h, w = x_val.shape
        o, cg, kh, kw = w_val.shape
        og, kg = o // groups, cg * kh * kw
        parts = self.operands(x_val).double().view(3 * n, c, h, w)  # |values| < 2^53: unfold stays exact
        cols = F.unfold(parts, (kh, kw), dilation=dilation, stride=stride).long()  # (3N, C*kh*kw, L)
        length = cols.shape[-1]
        cols = cols.view(3, n, groups, kg, length)
        wb = self.operands(w_val).view(3, groups, og, kg)
        out = torch.empty(n, groups, og, length, dtype=torch.int64, device=x_val.device)
        step = max(1, _CHUNK_ELEMENTS // max(1, og * kg * length))
        for g in range(groups):
            for lo in range(0, n, step):
                a = cols[:, lo : lo + step, g, None, :, :]  # (3, n', 1, Kg, L)
                b = wb[:, g, None, :, :, None]  # (3, 1, Og, Kg, 1)
                out[lo : lo + step, g] = self._products(a, b).sum(dim=2)  # over Kg
        return out.view(n, o, *conv_output_size((h, w), (kh, kw), stride, dilation))
