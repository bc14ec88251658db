"""Decimal places of weights (paper 1: Ow, Sheikh, Mokji 2020), as a search space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from dse.numerics.decimal_places import MAX_DECIMALS, MIN_DECIMALS

from .space import EXACT, Knob, SearchSpace

__all__ = ["decimal_places_space"]


def decimal_places_space(
    granularity: Literal["uniform", "group", "layer"] = "group",
    decimals: Sequence[int] = tuple(range(MIN_DECIMALS, MAX_DECIMALS + 1)),
    include_exact: bool = True,
    groups: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
) -> SearchSpace:
    """Each targeted unit's weights take d decimal places (d in ``decimals``) or stay exact."""
    choices = tuple(int(d) for d in decimals) + ((EXACT,) if include_exact else ())
    return SearchSpace(
        knobs=[Knob("decimals", choices)],
        granularity=granularity,
        groups=list(groups) if groups is not None else None,
        layers=list(layers) if layers is not None else None,
    )
