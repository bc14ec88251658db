"""Multipliers given as third-party 8x8 tables (EvoApprox layout: ``luts.npz`` + ``metrics.csv``)."""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dse.exceptions import ConfigError

from ._base import Multiplier, check_bits, operand_values

__all__ = ["EVOAPPROX_DIR", "LutMultiplier", "load_lut_library", "table_signedness"]

_DECLARE = (
    "Declare it in a metrics.csv beside the table file, columns name,signedness (signed: operands indexed by "
    "their two's-complement byte, value & 0xFF; unsigned: 0..2^bits-1)."
)

EVOAPPROX_DIR = Path(__file__).resolve().parent / "data"


@dataclass(frozen=True, repr=False, eq=False)
class LutMultiplier(Multiplier):
    """A multiplier defined by its table ``lut[a, b]`` (A = activation, B = weight).

    Args:
        name: circuit name.
        lut: integer array of shape (2^bits, 2^bits); signed tables are indexed by
            the operand's two's-complement bit pattern.
        signed: operand signedness.
        metrics: the library's reported metrics (power, area, delay, ...), as strings.
        exact_power_mw: power of the exact multiplier of the same library, width and
            signedness; the power ratio is ``metrics['lib_power_mW'] / exact_power_mw``.
    """

    name: str = ""
    lut: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    signed: bool = True
    metrics: dict[str, str] = field(default_factory=dict)
    exact_power_mw: float | None = None
    power_source: str = "library synthesis (EvoApprox PDK45)"

    def __post_init__(self) -> None:
        lut = np.asarray(self.lut)
        if lut.ndim != 2 or lut.shape[0] != lut.shape[1] or lut.shape[0] & (lut.shape[0] - 1) or lut.shape[0] < 4:
            raise ConfigError(
                f"Multiplier table {self.name!r} has shape {lut.shape}; it must be square with a power-of-two side "
                "(256 x 256 for 8-bit operands)."
            )
        if not np.issubdtype(lut.dtype, np.integer):
            nan = int(np.isnan(lut).sum()) if np.issubdtype(lut.dtype, np.floating) else 0
            where = (
                f", {nan} NaN entries (first at {tuple(int(i) for i in np.argwhere(np.isnan(lut))[0])})" if nan else ""
            )
            raise ConfigError(
                f"Multiplier table {self.name!r} has dtype {lut.dtype}{where}; it must hold integers: the circuit's "
                "output for every operand pair (save it as int32, e.g. np.savez(path, name=lut.astype(np.int32)))."
            )
        bits = int(lut.shape[0]).bit_length() - 1
        check_bits(self.name, bits)
        # A product of two b-bit operands needs 2b bits (+1 for a sign); the exact sums assume it.
        limit = 2 ** (2 * bits + 1)
        if lut.size and np.abs(lut.astype(np.int64)).max() >= limit:
            a, b = (int(i) for i in np.unravel_index(np.abs(lut.astype(np.int64)).argmax(), lut.shape))
            raise ConfigError(
                f"Multiplier table {self.name!r}: entry lut[{a}, {b}] = {int(lut[a, b])} is out of range for "
                f"{bits}-bit operands (|entry| < 2^{2 * bits + 1} = {limit}); emulation's exact integer sums rely "
                "on that bound. Check the table's scaling and operand width."
            )
        table = lut.astype(np.int64)
        table.setflags(write=False)
        object.__setattr__(self, "lut", table)
        object.__setattr__(self, "bits", bits)
        power = self.metrics.get("lib_power_mW")
        if power and self.exact_power_mw:
            object.__setattr__(self, "power_ratio", float(power) / self.exact_power_mw)
        if self.metrics.get("lib_delay_ns"):
            object.__setattr__(self, "delay_ns", float(self.metrics["lib_delay_ns"]))
        if self.metrics.get("lib_area_um2"):
            object.__setattr__(self, "area_um2", float(self.metrics["lib_area_um2"]))

    def table(self) -> np.ndarray:
        return self.lut

    def multiply(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        mask = 2**self.bits - 1
        return self.lut[np.asarray(a, dtype=np.int64) & mask, np.asarray(b, dtype=np.int64) & mask]


def load_lut_library(npz: str | Path, metrics_csv: str | Path | None = None) -> dict[str, LutMultiplier]:
    """All tables of an EvoApprox-layout library, with metrics and power ratios attached.

    Signedness comes from the ``signedness`` column, else from the table's own values
    (:func:`table_signedness`), never from its name. The exact circuit of each signedness (zero error)
    is the power reference.
    """
    npz, rows = Path(npz), {}
    if not npz.is_file():
        raise ConfigError(f"Multiplier table file {str(npz)!r} does not exist.")
    if metrics_csv is not None and Path(metrics_csv).is_file():
        with open(metrics_csv, newline="") as f:
            rows = {r["name"]: r for r in csv.DictReader(f)}
    with np.load(npz) as data:
        tables = {k: data[k] for k in data.files}
    result: dict[str, LutMultiplier] = {}
    signed_of = {k: table_signedness(k, lut, rows.get(k, {}).get("signedness") or None) for k, lut in tables.items()}
    exact_power: dict[bool, float] = {}
    for k, lut in tables.items():
        v = operand_values(int(lut.shape[0]).bit_length() - 1, signed_of[k]) if lut.ndim == 2 else None
        is_exact = v is not None and lut.shape == (len(v), len(v)) and np.array_equal(lut, np.outer(v, v))
        if is_exact and rows.get(k, {}).get("lib_power_mW"):
            exact_power[signed_of[k]] = float(rows[k]["lib_power_mW"])
    for k, lut in tables.items():
        result[k] = LutMultiplier(
            name=k, lut=lut, signed=signed_of[k], metrics=rows.get(k, {}), exact_power_mw=exact_power.get(signed_of[k])
        )
    return result


def _relative_error(lut: np.ndarray, signed: bool) -> float:
    """Mean |table - exact product| / mean |exact product|, the table read with ``signed`` operands."""
    values = operand_values(int(lut.shape[0]).bit_length() - 1, signed)
    exact = np.outer(values, values).astype(np.float64)
    return float(np.abs(lut.astype(np.float64) - exact).mean() / np.abs(exact).mean())


def table_signedness(name: str, lut: np.ndarray, declared: str | None = None) -> bool:
    """Whether table ``name`` multiplies signed operands: as ``declared`` (``signed``/``unsigned``) if given,
    else the reading whose products the values follow (an approximate circuit is near one and far from the
    other); a table that fits neither reading clearly is refused with how to declare it."""
    lut = np.asarray(lut)
    square = lut.ndim == 2 and lut.shape[0] == lut.shape[1] >= 4 and not lut.shape[0] & (lut.shape[0] - 1)
    if not square or not np.issubdtype(lut.dtype, np.integer):
        return declared == "signed"  # LutMultiplier refuses shape and dtype, with its own message
    if declared is not None and declared not in ("signed", "unsigned"):
        raise ConfigError(f"Multiplier table {name!r}: signedness {declared!r} is neither signed nor unsigned.")
    error = {True: _relative_error(lut, True), False: _relative_error(lut, False)}
    best = min(error, key=lambda signed: error[signed])
    clear = error[best] < 0.75 and error[not best] > 1.5 * error[best]  # the coarsest shipped: 0.49 vs 1.0
    readings = f"mean relative error {error[True]:.3g} read as signed, {error[False]:.3g} as unsigned"
    if declared is not None:
        if clear and (declared == "signed") != best:
            raise ConfigError(
                f"Multiplier table {name!r} is declared {declared}, but its values follow "
                f"{'signed' if best else 'unsigned'} products ({readings}). Fix its signedness in metrics.csv."
            )
        return declared == "signed"
    if not clear:
        raise ConfigError(
            f"Multiplier table {name!r}: its signedness cannot be told from its values ({readings}). {_DECLARE}"
        )
    return best
