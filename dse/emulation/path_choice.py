"""Which emulation path a layer takes, chosen once at construction from its multiplier and shape.

The compiled kernel (CPU, any table of at most 256 x 256 entries) unless a circuit needs no lookup;
otherwise the PyTorch path: Mitchell's product by arithmetic (no table), the separable path when the
table's error is low-rank (fused into one lookup + one conv for signed tables), else weight-specific
tables. ``reference`` is the oracle. Every path gives the same bits.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import Literal

import numpy as np
import torch

from dse.exceptions import ConfigError
from dse.multipliers import MitchellMultiplier, Multiplier, get_multiplier, operand_values

from ._fused import FusedSeparable
from ._kernel import KernelTables, load_kernel
from ._mitchell_arith import MitchellProducts
from ._separable import SeparableProducts
from ._tables import TableProducts

__all__ = ["PATHS", "EmulationPath", "EmulationPlan", "plan_emulation"]

EmulationPath = Literal["auto", "reference", "separable", "table", "kernel", "arithmetic"]
PATHS = ("auto", "reference", "separable", "table", "kernel", "arithmetic")


@dataclass
class EmulationPlan:
    """The multiplier and the path objects one layer emulates it with (``path``: what it reports)."""

    multiplier: Multiplier
    path: str
    torch_path: str  # the PyTorch path, for devices the kernel does not run on
    lut: torch.Tensor
    arithmetic: MitchellProducts | None
    separable: SeparableProducts | None
    fused: FusedSeparable | None
    tables: TableProducts | None
    kernel: ModuleType | None
    kernel_tables: KernelTables | None


def plan_emulation(
    multiplier: Multiplier | str,
    path: EmulationPath,
    name: str,
    bits: int | None,
    signed: bool | None,
    terms_per_output: int,
) -> EmulationPlan:
    """The plan of layer ``name`` (for messages), whose outputs each sum ``terms_per_output`` products;
    ``bits``/``signed``, when given, must match the multiplier's operands (else a ConfigError)."""
    mult = get_multiplier(multiplier) if isinstance(multiplier, str) else multiplier
    if path not in PATHS:
        raise ConfigError(f"Layer {name!r}: unknown emulation path {path!r}; choose one of {list(PATHS)}.")
    if bits is not None and bits != mult.bits:
        raise ConfigError(
            f"Layer {name!r} is quantized to {bits} bits, but multiplier {mult.name!r} "
            f"takes {mult.bits}-bit operands. "
            f"Quantize the layer to {mult.bits} bits or choose a {bits}-bit multiplier."
        )
    if signed is not None and signed != mult.signed:
        want, have = ("signed" if signed else "unsigned"), ("signed" if mult.signed else "unsigned")
        raise ConfigError(
            f"Layer {name!r} feeds {want} operands to multiplier {mult.name!r}, whose table is {have}. "
            f"Use a {want} table (e.g. {'mul8s_*' if signed else 'mul8u_*'}) or {have} quantization."
        )
    if path == "arithmetic" and not isinstance(mult, MitchellMultiplier):
        raise ConfigError(
            f"Layer {name!r}: path 'arithmetic' computes Mitchell's product; {mult.name!r} is not a Mitchell "
            "multiplier. Use path 'auto', 'kernel', 'separable' or 'table'."
        )
    values = operand_values(mult.bits, mult.signed)
    table = mult.table()
    # The PyTorch path (any device): Mitchell by arithmetic (no table), separable when the
    # table's error is low-rank, else weight-specific tables.
    torch_path = path if path in ("reference", "separable", "table", "arithmetic") else None
    if torch_path is None:
        if isinstance(mult, MitchellMultiplier):
            torch_path = "arithmetic"
        else:
            torch_path = "separable" if SeparableProducts.usable(table, values) else "table"
    arithmetic = MitchellProducts(mult) if torch_path == "arithmetic" and isinstance(mult, MitchellMultiplier) else None
    lut = torch.from_numpy(np.array(table, dtype=np.int64))  # a writable copy
    separable = SeparableProducts(table, values) if torch_path == "separable" else None
    # signed tables (zero point 0): one lookup + one conv, when the sums fit float32
    fused = FusedSeparable(separable, values, table) if separable is not None and mult.signed else None
    if fused is not None and not fused.fits(terms_per_output):
        fused = None
    tables = TableProducts(lut) if torch_path == "table" else None
    # The compiled kernel (CPU): auto takes it unless the table needs no lookup at all
    # (a circuit ignoring activation LSBs: one floor and an ordinary conv is faster).
    no_lookup = fused is not None and fused.shift is not None
    kernel: ModuleType | None = None
    kernel_tables: KernelTables | None = None
    if path == "kernel" or (path == "auto" and not no_lookup and len(values) <= 256):
        candidate = KernelTables(table, mult.signed)
        module = load_kernel() if len(values) <= 256 and candidate.fits(terms_per_output) else None
        if module is not None:
            kernel, kernel_tables = module, candidate
    chosen = "kernel" if kernel is not None else torch_path
    return EmulationPlan(mult, chosen, torch_path, lut, arithmetic, separable, fused, tables, kernel, kernel_tables)
