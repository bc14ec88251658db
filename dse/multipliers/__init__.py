"""The multiplier library: exact, parametric families, and third-party tables, by name.

Names: ``exact_s8`` / ``exact_u8``; ``mitchell_w{w}[_bc]_{s|u}{bits}``;
``truncated_t{t}_{s|u}{bits}``; ``drum_k{k}_{s|u}{bits}``; every EvoApprox circuit
shipped with dse (``mul8s_1KV9`` ...); and ``path/to/luts.npz:circuit`` for a
table of your own (a ``metrics.csv`` beside it is read if present). Any of them
with ``_acct{t}`` appended sums its products in an accumulator without its t low
bits (approximate accumulation, ``mitchell_w6_s8_acct6``).

The registry is filled once at import; :func:`register_multiplier` raises on a
duplicate name.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from functools import cache
from pathlib import Path

from dse.exceptions import ConfigError

from ._base import ErrorStats, Multiplier, operand_values
from ._drum import DrumMultiplier
from ._exact import ExactMultiplier
from ._lut import EVOAPPROX_DIR, LutMultiplier, load_lut_library
from ._mitchell import MitchellMultiplier
from ._truncated import TruncatedMultiplier
from ._truncated_accumulation import TruncatedAccumulation

__all__ = [
    "DrumMultiplier",
    "ErrorStats",
    "ExactMultiplier",
    "LutMultiplier",
    "MitchellMultiplier",
    "Multiplier",
    "TruncatedAccumulation",
    "TruncatedMultiplier",
    "get_multiplier",
    "list_multipliers",
    "load_lut_library",
    "operand_values",
    "register_multiplier",
]

_FACTORIES: dict[str, Callable[[], Multiplier]] = {}
_PARAMETRIC = re.compile(r"(exact|mitchell_w(\d+)(_bc)?|truncated_t(\d+)|drum_k(\d+))_([su])(\d+)")
_ACCUMULATION = re.compile(r"(.+)_acct(\d+)")  # any multiplier, its products summed without t low bits


def register_multiplier(name: str, factory: Callable[[], Multiplier]) -> None:
    """Make ``factory()`` available as ``get_multiplier(name)``."""
    if name in _FACTORIES:
        raise ValueError(f"A multiplier named {name!r} is already registered.")
    _FACTORIES[name] = factory


def list_multipliers() -> list[str]:
    """Registered names (parametric families accept other parameters too, e.g. mitchell_w5_s8)."""
    return sorted(_FACTORIES)


def _parse_parametric(name: str) -> Multiplier | None:
    m = _PARAMETRIC.fullmatch(name)
    if m is None:
        return None
    signed, bits = m.group(6) == "s", int(m.group(7))
    if m.group(1) == "exact":
        return ExactMultiplier(bits=bits, signed=signed)
    if m.group(2):
        return MitchellMultiplier(w=int(m.group(2)), bits=bits, signed=signed, bias_correction=bool(m.group(3)))
    if m.group(4):
        return TruncatedMultiplier(t=int(m.group(4)), bits=bits, signed=signed)
    return DrumMultiplier(k=int(m.group(5)), bits=bits, signed=signed)


@cache
def get_multiplier(name: str) -> Multiplier:
    """The multiplier called ``name`` (cached: tables are built once per process)."""
    if name in _FACTORIES:
        return _FACTORIES[name]()
    accumulation = _ACCUMULATION.fullmatch(name)
    if accumulation is not None:
        return TruncatedAccumulation(base=get_multiplier(accumulation.group(1)), t=int(accumulation.group(2)))
    parametric = _parse_parametric(name)
    if parametric is not None:
        return parametric
    if ":" in name:
        path, circuit = name.rsplit(":", 1)
        library = load_lut_library(path, Path(path).with_name("metrics.csv"))
        if circuit not in library:
            raise ConfigError(f"Table file {path!r} has no circuit {circuit!r}; it has {sorted(library)}.")
        return library[circuit]
    raise ConfigError(
        f"Unknown multiplier {name!r}; known: {', '.join(list_multipliers())}; parametric families: "
        "mitchell_w<w>[_bc]_<s|u><bits>, truncated_t<t>_<s|u><bits>, drum_k<k>_<s|u><bits>; any of them with "
        "_acct<t> appended (products summed without their t low bits); "
        "or path/to/luts.npz:<circuit> for your own table (dse.multipliers.list_multipliers())."
    )


def _register_builtins() -> None:
    # The listed parameters of each family; the name grammar accepts any other (mitchell_w5_s8).
    for tag in ("s8", "u8"):
        names = [f"exact_{tag}"]
        names += [f"mitchell_w{w}_{tag}" for w in (2, 3, 4, 5, 6, 7)]
        names += [f"truncated_t{t}_{tag}" for t in (2, 4, 6, 8)]
        names += [f"drum_k{k}_{tag}" for k in (3, 4, 5, 6)]
        for name in names:
            register_multiplier(name, functools.partial(_parse_parametric_or_fail, name))
    library = load_lut_library(EVOAPPROX_DIR / "evoapprox_luts.npz", EVOAPPROX_DIR / "evoapprox_metrics.csv")
    for name, mult in library.items():
        register_multiplier(name, functools.partial(_identity, mult))


def _identity(multiplier: Multiplier) -> Multiplier:
    return multiplier


def _parse_parametric_or_fail(name: str) -> Multiplier:
    multiplier = _parse_parametric(name)
    if multiplier is None:
        raise ConfigError(f"{name!r} is not a parametric multiplier name.")
    return multiplier


_register_builtins()
