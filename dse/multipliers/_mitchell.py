"""Mitchell's logarithmic multiplier with w-bit fraction truncation (Mitch-w).

Priced from the one published figure dse has for it: Kim et al. (TETC 2022) report that a
Mitch-w6 MAC saves up to 80% of a bfloat16 MAC's energy, so the 8-bit Mitch-w6 MAC is
taken at 20% of a bfloat16 MAC (the "up to" makes that a lower bound on its cost).
Other w and widths have no published figure: their power is unknown, and the energy
model prices them as the exact multiplier and warns (a counted-cell estimate put the
8-bit datapath above the array multiplier it replaces, so it proved nothing).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dse.exceptions import ConfigError

from ._base import Multiplier, check_bits, leading_one, sign_magnitude

__all__ = ["MITCH_W6_MAC_VS_BFLOAT16", "MitchellMultiplier"]

# M. S. Kim, A. A. Del Barrio, H. Kim, N. Bagherzadeh, "The Effects of Approximate Multiplication on
# Convolutional Neural Networks", IEEE Trans. Emerging Topics in Computing 10 (2022),
# doi:10.1109/TETC.2021.3050989 (arXiv 2020), abstract: "a MAC operation saves up to 80% of energy
# compared to the bfloat16 arithmetic" (Mitch-w6).
MITCH_W6_MAC_VS_BFLOAT16 = 0.2
_KIM2020 = (
    "published: a Mitch-w6 MAC at <= 20% of a bfloat16 MAC's energy (Kim et al., IEEE TETC 2022, "
    "doi:10.1109/TETC.2021.3050989: 'saves up to 80%'), converted with the energy model's own bfloat16 MAC"
)


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
    power_source: str = "no published figure for this w and width: priced as the exact multiplier"

    def __post_init__(self) -> None:
        check_bits("mitchell", self.bits)
        if not 1 <= self.w <= 31:
            raise ConfigError(f"Mitch-w: w (kept fraction bits) must be 1..31, got {self.w}.")
        if not self.name:
            suffix = "_bc" if self.bias_correction else ""
            object.__setattr__(self, "name", f"mitchell_w{self.w}{suffix}_{'s' if self.signed else 'u'}{self.bits}")
        if self.w == 6 and self.bits == 8:  # the configuration the published figure is for
            object.__setattr__(self, "mac_vs_bfloat16", MITCH_W6_MAC_VS_BFLOAT16)
            object.__setattr__(self, "power_source", _KIM2020)

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
