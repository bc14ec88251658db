"""Broken-array (truncated) multipliers: low partial-product columns dropped.

Its power ratio is a first-order *estimate* (counted cells of the datapath relative
to an n x n array multiplier), not a synthesis result; ``power_source`` says so.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dse.exceptions import ConfigError

from ._base import Multiplier, check_bits, sign_magnitude

__all__ = ["TruncatedMultiplier"]


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
        check_bits("truncated", self.bits)
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
