"""Approximate accumulation: a multiplier's products summed by an adder without its ``t`` lowest bits.

An accumulator whose ``t`` least significant bits are cut off (a truncated adder, the simplest approximate
adder) adds each product with those bits dropped: its running sum's low bits stay zero, so the sum it
returns is the sum of the products each truncated (two's complement: rounded toward minus infinity to a
multiple of 2^t). That makes approximate accumulation a table like any multiplier's, ``floor(p / 2^t) * 2^t``
for every product ``p`` of the base multiplier, emulated bit-exactly by the same paths. Paper 2 (Kim et al.)
argues that multiplications may be approximated while additions must stay exact: this is how dse tests it.

The narrower adder's saving is not priced: the energy is the base multiplier's (an upper bound).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from dse.exceptions import ConfigError

from ._base import Multiplier

__all__ = ["TruncatedAccumulation"]


@dataclass(frozen=True, repr=False)
class TruncatedAccumulation(Multiplier):
    """``base``'s products with their ``t`` low bits dropped before an exact sum; named ``<base>_acct<t>``.

    >>> from dse.multipliers import get_multiplier
    >>> m = get_multiplier("exact_s8_acct4")
    >>> int(m.multiply(np.array(5), np.array(7))), int(m.multiply(np.array(-5), np.array(7)))
    (32, -48)
    """

    base: Multiplier = field(default=None)  # type: ignore[assignment]
    t: int = 4
    name: str = field(default="")
    power_source: str = field(default="")

    def __post_init__(self) -> None:
        if self.base is None:
            raise ConfigError("Truncated accumulation needs the multiplier whose products it sums.")
        if not 0 <= self.t < 2 * self.base.bits:
            raise ConfigError(
                f"{self.base.name}_acct{self.t}: t (dropped accumulator bits) must be 0..{2 * self.base.bits - 1}."
            )
        object.__setattr__(self, "name", self.name or f"{self.base.name}_acct{self.t}")
        object.__setattr__(self, "bits", self.base.bits)
        object.__setattr__(self, "signed", self.base.signed)
        object.__setattr__(self, "power_ratio", self.base.power_ratio)
        object.__setattr__(self, "mac_vs_bfloat16", self.base.mac_vs_bfloat16)
        object.__setattr__(
            self, "power_source", f"{self.base.power_source} (the narrower accumulator's saving is not priced)"
        )

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        products = np.asarray(self.base.multiply(a, b), dtype=np.int64)
        return (products >> self.t) << self.t  # arithmetic shift: floor toward minus infinity
