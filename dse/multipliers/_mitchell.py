"""Mitchell's logarithmic multiplier with w-bit fraction truncation (Mitch-w).

Its power ratio is a first-order *estimate* (counted cells of the datapath relative
to an n x n array multiplier), not a synthesis result; ``power_source`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dse.exceptions import ConfigError

from ._base import Multiplier, check_bits, leading_one, sign_magnitude

__all__ = ["MitchellMultiplier"]


@dataclass(frozen=True, repr=False)
class MitchellMultiplier(Multiplier):
    """Mitchell's logarithmic multiplier with w-bit fraction truncation ("Mitch-w").

    Kim et al., "The Effects of Approximate Multiplication on Convolutional Neural
    Networks" (2020), after J. N. Mitchell, IRE Trans. Electron. Comput. 1962:
    a = 2^k1 (1 + x1): the leading-one position k1 and the fraction x1 after it,
    truncated to its ``w`` most significant bits (with ``bias_correction`` a 1 is
    appended below the kept bits when bits were dropped, as in the hardware
    versions). The logs are added; the antilog is 2^(k1+k2) (1 + x1 + x2) if
    x1 + x2 < 1, else 2^(k1+k2+1) (x1 + x2), truncated to an integer. A zero
    operand gives 0; signs are handled separately (sign-magnitude).

    >>> m = MitchellMultiplier(w=6)
    >>> int(m.multiply(np.array(3), np.array(3))), int(m.multiply(np.array(-100), np.array(27)))
    (8, -2560)
    """

    w: int = 6
    bits: int = 8
    signed: bool = True
    bias_correction: bool = False
    name: str = field(default="")
    power_source: str = (
        "first-order estimate: 2 leading-one encoders + (log2 n + w)-bit adder + antilog shifter vs n^2 array cells"
    )

    def __post_init__(self) -> None:
        check_bits("mitchell", self.bits)
        if not 1 <= self.w <= 31:
            raise ConfigError(f"Mitch-w: w (kept fraction bits) must be 1..31, got {self.w}.")
        if not self.name:
            suffix = "_bc" if self.bias_correction else ""
            object.__setattr__(self, "name", f"mitchell_w{self.w}{suffix}_{'s' if self.signed else 'u'}{self.bits}")
        n = self.bits
        cells = 2 * n * math.log2(n) + (math.log2(n) + self.w) + 2 * n * math.log2(2 * n)
        object.__setattr__(self, "power_ratio", min(1.0, cells / n**2))

    def _unsigned(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.broadcast_arrays(np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64))
        w = self.w
        F = w + 1  # fixed-point fraction bits (one more for the bias-correction bit)

        def fraction(v: np.ndarray, k: np.ndarray) -> np.ndarray:
            kk = np.maximum(k, 0)
            frac = v - (np.int64(1) << kk)  # bits below the leading one (k bits)
            kept = np.where(kk > w, frac >> np.maximum(kk - w, 0), frac << np.maximum(w - kk, 0))  # w bits
            fx = kept << 1
            if self.bias_correction:
                fx = fx + (kk > w).astype(np.int64)
            return fx  # fraction x in units of 2^-F

        k1, k2 = leading_one(a), leading_one(b)
        s = fraction(a, k1) + fraction(b, k2)
        one = np.int64(1) << F
        ksum = np.maximum(k1, 0) + np.maximum(k2, 0)
        small = s < one
        mant = np.where(small, one + s, s)  # in units of 2^-F
        exp = np.where(small, ksum, ksum + 1) - F
        product = np.where(exp >= 0, mant << np.maximum(exp, 0), mant >> np.maximum(-exp, 0))
        return np.where((a == 0) | (b == 0), 0, product)

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sign_magnitude(self._unsigned, a, b) if self.signed else self._unsigned(a, b)
