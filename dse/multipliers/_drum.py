"""DRUM-k: the dynamic-range unbiased multiplier.

Its power ratio is a first-order *estimate* (counted cells of the datapath relative
to an n x n array multiplier), not a synthesis result; ``power_source`` says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from dse.exceptions import ConfigError

from ._base import Multiplier, check_bits, leading_one, sign_magnitude

__all__ = ["DrumMultiplier"]


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
        check_bits("drum", self.bits)
        if not 2 <= self.k <= self.bits:
            raise ConfigError(f"DRUM-k: k must be 2..{self.bits}, got {self.k}.")
        if not self.name:
            object.__setattr__(self, "name", f"drum_k{self.k}_{'s' if self.signed else 'u'}{self.bits}")
        n = self.bits
        object.__setattr__(self, "power_ratio", min(1.0, (self.k**2 + 2 * n * math.log2(n)) / n**2))

    def _approximate(self, v: np.ndarray) -> np.ndarray:
        p = leading_one(v)
        shift = np.maximum(p - self.k + 1, 0)
        return np.where(p >= self.k, (((v >> shift) | 1) << shift), v)

    def _unsigned(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return self._approximate(np.asarray(a, dtype=np.int64)) * self._approximate(np.asarray(b, dtype=np.int64))

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return sign_magnitude(self._unsigned, a, b) if self.signed else self._unsigned(a, b)
