"""The multiplier library: exact, parametric families, and third-party tables, by name.

Names: ``exact_s8`` / ``exact_u8``; ``mitchell_w{w}[_bc]_{s|u}{bits}``;
``truncated_t{t}_{s|u}{bits}``; ``drum_k{k}_{s|u}{bits}``; every EvoApprox circuit
shipped with dse (``mul8s_1KV9`` ...); and ``path/to/luts.npz:circuit`` for a
table of your own (a ``metrics.csv`` beside it is read if present).

The registry is filled once at import; :func:`register_multiplier` raises on a
duplicate name.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

from dse.exceptions import ConfigError

from ._base import ErrorStats, Multiplier, operand_values
from ._lut import EVOAPPROX_DIR, LutMultiplier, load_lut_library
from ._parametric import DrumMultiplier, ExactMultiplier, MitchellMultiplier, TruncatedMultiplier

__all__ = [
    "Multiplier", "ErrorStats", "ExactMultiplier", "MitchellMultiplier", "TruncatedMultiplier", "DrumMultiplier",
    "LutMultiplier", "load_lut_library", "register_multiplier", "get_multiplier", "list_multipliers", "operand_values",
]

_FACTORIES: dict[str, Callable[[], Multiplier]] = {}
_PARAMETRIC = re.compile(r"(exact|mitchell_w(\d+)(_bc)?|truncated_t(\d+)|drum_k(\d+))_([su])(\d+)")


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


@lru_cache(maxsize=None)
def get_multiplier(name: str) -> Multiplier:
    """The multiplier called ``name`` (cached: tables are built once per process)."""
    if name in _FACTORIES:
        return _FACTORIES[name]()
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
        "mitchell_w<w>[_bc]_<s|u><bits>, truncated_t<t>_<s|u><bits>, drum_k<k>_<s|u><bits>; "
        "or path/to/luts.npz:<circuit> for your own table (dse.multipliers.list_multipliers())."
    )


def _register_builtins() -> None:
    for signed in (True, False):
        for bits in (8,):
            tag = f"{'s' if signed else 'u'}{bits}"
            register_multiplier(f"exact_{tag}", lambda s=signed, b=bits: ExactMultiplier(bits=b, signed=s))
            for w in (2, 3, 4, 5, 6, 7):
                register_multiplier(f"mitchell_w{w}_{tag}", lambda w=w, s=signed, b=bits: MitchellMultiplier(w=w, bits=b, signed=s))
            for t in (2, 4, 6, 8):
                register_multiplier(f"truncated_t{t}_{tag}", lambda t=t, s=signed, b=bits: TruncatedMultiplier(t=t, bits=b, signed=s))
            for k in (3, 4, 5, 6):
                register_multiplier(f"drum_k{k}_{tag}", lambda k=k, s=signed, b=bits: DrumMultiplier(k=k, bits=b, signed=s))
    library = load_lut_library(EVOAPPROX_DIR / "evoapprox_luts.npz", EVOAPPROX_DIR / "evoapprox_metrics.csv")
    for name, mult in library.items():
        register_multiplier(name, lambda m=mult: m)


_register_builtins()
