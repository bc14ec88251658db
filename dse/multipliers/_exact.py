"""The exact n x n multiplier: the reference every approximate one is measured against."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._base import Multiplier, check_bits

__all__ = ["ExactMultiplier"]


@dataclass(frozen=True, repr=False)
class ExactMultiplier(Multiplier):
    """The exact product a * b."""

    bits: int = 8
    signed: bool = True
    name: str = field(default="")
    power_ratio: float | None = 1.0
    power_source: str = "exact (reference)"

    def __post_init__(self) -> None:
        check_bits("exact", self.bits)
        if not self.name:
            object.__setattr__(self, "name", f"exact_{'s' if self.signed else 'u'}{self.bits}")

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.asarray(a, dtype=np.int64) * np.asarray(b, dtype=np.int64)
