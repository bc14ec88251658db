"""Approximate multipliers per layer (papers 2 and 4), optionally with decimal places."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .decimal_places import space_with_decimals
from .space import EXACT, Knob, SearchSpace

__all__ = ["multiplier_space"]


def multiplier_space(
    multipliers: Sequence[str],
    granularity: Literal["uniform", "group", "layer"] = "group",
    include_exact: bool = True,
    decimals: Sequence[int] | None = None,
    groups: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
) -> SearchSpace:
    """Each unit takes one of ``multipliers`` (names of ``dse.multipliers``) or stays float32.

    With ``decimals``, each unit also gets a decimal-place knob (applied before quantization).
    """
    return space_with_decimals(
        Knob("multiplier", tuple(multipliers) + ((EXACT,) if include_exact else ())),
        granularity,
        decimals,
        groups,
        layers,
    )
