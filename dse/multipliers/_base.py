"""The multiplier contract: an n-bit x n-bit function, and the full table it implies.

A multiplier is data to the emulator: whatever its definition, emulation only
uses :meth:`Multiplier.table`, an int64 array ``lut[a, b]`` over every operand
pair, indexed by the operand's bit pattern (two's complement for signed ones,
like EvoApprox). Operand A is the activation, operand B the weight.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from dse.exceptions import ConfigError
from dse.numerics.quantization import qrange

__all__ = [
    "MAX_TABLE_BITS",
    "ErrorStats",
    "Multiplier",
    "check_bits",
    "leading_one",
    "operand_values",
    "sign_magnitude",
]

# Emulation builds the full 2^b x 2^b table; 12 bits is 16 M entries (128 MiB of int64).
MAX_TABLE_BITS = 12


def operand_values(bits: int, signed: bool) -> np.ndarray:
    """The operand value of every table index: 0..2^b-1, or two's complement for signed."""
    idx = np.arange(2**bits, dtype=np.int64)
    return np.where(idx >= 2 ** (bits - 1), idx - 2**bits, idx) if signed else idx


def check_bits(name: str, bits: int) -> None:
    """Reject operand widths emulation cannot take, at construction (not at the first trial)."""
    if not 2 <= bits <= MAX_TABLE_BITS:
        raise ConfigError(
            f"{name}: operand width must be 2..{MAX_TABLE_BITS} bits (emulation builds the full 2^b x 2^b table), "
            f"got {bits}; 8-bit operands are the usual choice (names ending in _s8 / _u8)."
        )


def leading_one(a: np.ndarray) -> np.ndarray:
    """Position of the most significant 1 of each positive integer (floor(log2 a)); -1 for 0.

    >>> leading_one(np.array([0, 1, 2, 3, 255])).tolist()
    [-1, 0, 1, 1, 7]
    """
    a = np.asarray(a, dtype=np.int64)
    k = np.full(a.shape, -1, dtype=np.int64)
    for bit in range(63):
        k = np.where((a >> bit) > 0, bit, k)
    return k


def sign_magnitude(unsigned_fn, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Signed product from an unsigned magnitude multiplier (sign handled separately)."""
    return np.sign(a) * np.sign(b) * unsigned_fn(np.abs(a), np.abs(b))


@dataclass(frozen=True)
class ErrorStats:
    """Error of a multiplier over all operand pairs with equal weight (err = approx - exact).

    mre_pct excludes the pairs whose exact product is 0, as EvoApprox does.
    """

    mae: float
    wce: int
    mre_pct: float
    bias: float
    err_std: float
    error_probability_pct: float


class Multiplier(abc.ABC):
    """An approximate (or exact) ``bits`` x ``bits`` multiplier.

    Subclasses implement :meth:`multiply` on int64 operand values; the table,
    its error statistics and its exactness follow from it.

    Attributes:
        name: registry name.
        bits: operand width.
        signed: two's-complement operands (else unsigned).
        power_ratio: power relative to the exact multiplier of the same width and
            signedness, or None if unknown; ``power_source`` says where it comes from.
        mac_vs_bfloat16: where a paper prices the circuit's whole MAC (multiply and its
            fixed-point accumulate) against a bfloat16 MAC (bfloat16 multiply, float32
            accumulate), that fraction; the energy model converts it with its own
            bfloat16 MAC, so the figure is used as published, not re-derived.
        delay_ns, area_um2: synthesis results where known (EvoApprox: PDK45).
    """

    name: str
    bits: int = 8
    signed: bool = True
    power_ratio: float | None = None
    power_source: str = "unknown"
    mac_vs_bfloat16: float | None = None
    delay_ns: float | None = None
    area_um2: float | None = None

    @abc.abstractmethod
    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """Products of int64 operand values ``a`` and ``b`` (broadcasting)."""

    @cached_property
    def _table(self) -> np.ndarray:
        check_bits(self.name, self.bits)
        v = operand_values(self.bits, self.signed)
        lut = np.asarray(self.multiply(v[:, None], v[None, :]), dtype=np.int64)
        lut.setflags(write=False)
        return lut

    def table(self) -> np.ndarray:
        """int64 ``lut[a_index, b_index]`` (read-only), operand A = activation, B = weight."""
        return self._table

    def error_table(self) -> np.ndarray:
        v = operand_values(self.bits, self.signed)
        return self.table() - np.outer(v, v)

    @property
    def is_exact(self) -> bool:
        return not np.any(self.error_table())

    def error_stats(self) -> ErrorStats:
        v = operand_values(self.bits, self.signed)
        exact = np.outer(v, v)
        err = self.table() - exact
        nonzero = exact != 0
        return ErrorStats(
            mae=float(np.abs(err).mean()),
            wce=int(np.abs(err).max()),
            mre_pct=float(100 * (np.abs(err[nonzero]) / np.abs(exact[nonzero])).mean()),
            bias=float(err.mean()),
            err_std=float(err.std()),
            error_probability_pct=float(100 * (err != 0).mean()),
        )

    @property
    def operand_range(self) -> tuple[int, int]:
        return qrange(self.bits, self.signed)

    def __repr__(self) -> str:
        kind = "signed" if self.signed else "unsigned"
        return f"{type(self).__name__}({self.name!r}, {self.bits}-bit {kind})"
