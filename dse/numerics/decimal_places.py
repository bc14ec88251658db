"""Decimal-place weight rounding (Ow, Sheikh, Mokji 2020) and its fixed-point width.

``w' = round(w, d)`` with ties to even. The product ``w * 10**d`` is formed in
float64, where it is exact for float32 weights and d <= 9 (24-bit mantissa times
5**9 < 2**21 fits in 53 bits), so the result is the float32 nearest to the
correctly rounded decimal.
"""

from __future__ import annotations

import math

import torch

from dse.exceptions import ConfigError

__all__ = ["MAX_DECIMALS", "MIN_DECIMALS", "check_decimals", "decimal_bits", "round_to_decimals"]

MIN_DECIMALS = 1
MAX_DECIMALS = 9


def check_decimals(decimals: int) -> int:
    """Return ``decimals`` if it is an int in 1..9, else raise a ConfigError."""
    if isinstance(decimals, bool) or not isinstance(decimals, int) or not MIN_DECIMALS <= decimals <= MAX_DECIMALS:
        raise ConfigError(
            f"Decimal places must be an integer from {MIN_DECIMALS} to {MAX_DECIMALS} (or 'exact'), got {decimals!r}."
        )
    return decimals


def round_to_decimals(weight: torch.Tensor, decimals: int) -> torch.Tensor:
    """Round every element to ``decimals`` decimal places (ties to even).

    >>> round_to_decimals(torch.tensor([0.123456, -0.98765, 0.00049]), 3).tolist()
    [0.12300000339746475, -0.9879999756813049, 0.0]
    """
    scale = 10.0 ** check_decimals(decimals)
    return (torch.round(weight.double() * scale) / scale).to(weight.dtype)


def decimal_bits(max_abs: float, decimals: int) -> int:
    """Fixed-point width that holds weights rounded to ``decimals`` places.

    The rounded weights are integers k / 10**d with |k| <= round(max|w| * 10**d),
    so ``levels = 2 * round(max|w| * 10**d) + 1`` and ``bits = ceil(log2(levels))``
    (at least 1). DESIGN.md, cost model.

    >>> decimal_bits(0.5, 1), decimal_bits(0.5, 4), decimal_bits(1.27, 2)
    (4, 14, 8)
    """
    levels = 2 * round(abs(max_abs) * 10.0 ** check_decimals(decimals)) + 1
    return max(1, math.ceil(math.log2(levels)))
