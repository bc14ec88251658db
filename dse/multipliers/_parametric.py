"""Multipliers written here from their published definitions.

Power ratios of these families are first-order *estimates* (counted cells of
the datapath relative to an n x n array multiplier), not synthesis results;
``power_source`` says so and the energy model logs it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dse.exceptions import ConfigError

from ._base import Multiplier, sign_magnitude

__all__ = ["ExactMultiplier", "MitchellMultiplier", "TruncatedMultiplier", "DrumMultiplier"]


def _check_bits(name: str, bits: int) -> None:
    if not 2 <= bits <= 32:
        raise ConfigError(f"{name}: operand width must be 2..32 bits, got {bits}.")


def _leading_one(a: np.ndarray) -> np.ndarray:
    """Position of the most significant 1 of each positive integer (floor(log2 a)); -1 for 0."""
    a = np.asarray(a, dtype=np.int64)
    k = np.full(a.shape, -1, dtype=np.int64)
    for bit in range(63):
        k = np.where((a >> bit) > 0, bit, k)
    return k


@dataclass(frozen=True, repr=False)
class ExactMultiplier(Multiplier):
    """The exact product a * b."""

    bits: int = 8
    signed: bool = True
    name: str = field(default="")
    power_ratio: float | None = 1.0
    power_source: str = "exact (reference)"

    def __post_init__(self) -> None:
        _check_bits("exact", self.bits)
        if not self.name:
            object.__setattr__(self, "name", f"exact_{'s' if self.signed else 'u'}{self.bits}")

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.int64) * np.asarray(b, dtype=np.int64)


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
    power_source: str = "first-order estimate: 2 leading-one encoders + (log2 n + w)-bit adder + antilog shifter vs n^2 array cells"

    def __post_init__(self) -> None:
        _check_bits("mitchell", self.bits)
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

        k1, k2 = _leading_one(a), _leading_one(b)
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


@dataclass(frozen=True, repr=False)
class TruncatedMultiplier(Multiplier):
    """Broken-array / truncated multiplier: partial-product bits in columns < ``t`` are dropped.

    Mahdiani et al., "Bio-inspired imprecise computational blocks...", IEEE TCAS-I
    57(4) 2010 (vertical break level t). product = sum over a_i b_j 2^(i+j) with
    i + j >= t, on magnitudes; signs separately. Power estimate: kept cells / n^2.

    >>> int(TruncatedMultiplier(t=4).multiply(np.array(15), np.array(15)))
    176
    """

    t: int = 4
    bits: int = 8
    signed: bool = True
    name: str = field(default="")
    power_source: str = "first-order estimate: kept partial-product cells / n^2 (array multiplier)"

    def __post_init__(self) -> None:
        _check_bits("truncated", self.bits)
        if not 0 <= self.t <= 2 * self.bits - 1:
            raise ConfigError(f"truncated: t (dropped columns) must be 0..{2 * self.bits - 1}, got {self.t}.")
        if not self.name:
            object.__setattr__(self, "name", f"truncated_t{self.t}_{'s' if self.signed else 'u'}{self.bits}")
        n = self.bits
        kept = sum(1 for i in range(n) for j in range(n) if i + j >= self.t)
        object.__setattr__(self, "power_ratio", kept / n**2)

    def _unsigned(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
        total = np.zeros(np.broadcast(a, b).shape, dtype=np.int64)
        for i in range(self.bits):
            ai = (a >> i) & 1
            for j in range(max(0, self.t - i), self.bits):
                total += (ai & (b >> j) & 1) << (i + j)
        return total

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sign_magnitude(self._unsigned, a, b) if self.signed else self._unsigned(a, b)


@dataclass(frozen=True, repr=False)
class DrumMultiplier(Multiplier):
    """DRUM-k: dynamic-range unbiased multiplier (Hashemi, Bahar, Reda, ICCAD 2015).

    An operand with more than k significant bits keeps the k bits from its leading
    one down, with the lowest kept bit forced to 1 (unbiasing), and is shifted back;
    the two k-bit values are multiplied exactly. Signs separately. Power estimate:
    a k x k core plus two leading-one detectors and shifters (n log2 n cells each).

    >>> int(DrumMultiplier(k=4).multiply(np.array(200), np.array(3)))
    624
    """

    k: int = 6
    bits: int = 8
    signed: bool = True
    name: str = field(default="")
    power_source: str = "first-order estimate: (k^2 + 2 n log2 n) / n^2 cells"

    def __post_init__(self) -> None:
        _check_bits("drum", self.bits)
        if not 2 <= self.k <= self.bits:
            raise ConfigError(f"DRUM-k: k must be 2..{self.bits}, got {self.k}.")
        if not self.name:
            object.__setattr__(self, "name", f"drum_k{self.k}_{'s' if self.signed else 'u'}{self.bits}")
        n = self.bits
        object.__setattr__(self, "power_ratio", min(1.0, (self.k**2 + 2 * n * math.log2(n)) / n**2))

    def _approximate(self, v: np.ndarray) -> np.ndarray:
        p = _leading_one(v)
        shift = np.maximum(p - self.k + 1, 0)
        return np.where(p >= self.k, (((v >> shift) | 1) << shift), v)

    def _unsigned(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._approximate(np.asarray(a, dtype=np.int64)) * self._approximate(np.asarray(b, dtype=np.int64))

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sign_magnitude(self._unsigned, a, b) if self.signed else self._unsigned(a, b)
