"""Decimal places of weights (paper 1: Ow, Sheikh, Mokji 2020), as a search space."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from dse.exceptions import ConfigError
from dse.numerics.decimal_places import MAX_DECIMALS, MIN_DECIMALS, check_decimals

from .space import EXACT, Knob, SearchSpace

__all__ = ["decimal_choices", "decimal_places_space", "space_with_decimals"]


def decimal_choices(decimals: object) -> tuple[int, ...]:
    """``space.decimals`` checked as given: whole numbers 1..9, never coerced (2.5 is not 2, "12" not [1, 2])."""
    example = f"e.g. space.decimals=[2,3,4] (whole numbers from {MIN_DECIMALS} to {MAX_DECIMALS})"
    if isinstance(decimals, (str, bytes)) or not isinstance(decimals, Sequence) or not len(decimals):
        raise ConfigError(f"space.decimals must be a non-empty list, {example}; got {decimals!r}.")
    for d in decimals:
        try:
            check_decimals(d)
        except ConfigError:
            raise ConfigError(f"space.decimals: {d!r} is not a number of decimal places, {example}.") from None
    return tuple(decimals)


def decimal_places_space(
    granularity: Literal["uniform", "group", "layer"] = "group",
    decimals: Sequence[int] = tuple(range(MIN_DECIMALS, MAX_DECIMALS + 1)),
    include_exact: bool = True,
    groups: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
) -> SearchSpace:
    """Each targeted unit's weights take d decimal places (d in ``decimals``) or stay exact."""
    choices = decimal_choices(decimals) + ((EXACT,) if include_exact else ())
    return SearchSpace(
        knobs=[Knob("decimals", choices)],
        granularity=granularity,
        groups=list(groups) if groups is not None else None,
        layers=list(layers) if layers is not None else None,
    )


def space_with_decimals(
    knob: Knob,
    granularity: Literal["uniform", "group", "layer"],
    decimals: Sequence[int] | None,
    groups: Sequence[str] | None,
    layers: Sequence[str] | None,
) -> SearchSpace:
    """A space of ``knob``, and with ``decimals`` a decimal-place knob beside it (applied before quantization)."""
    knobs = [knob]
    if decimals is not None:
        knobs.append(Knob("decimals", (*decimal_choices(decimals), EXACT)))
    return SearchSpace(
        knobs=knobs,
        granularity=granularity,
        groups=list(groups) if groups is not None else None,
        layers=list(layers) if layers is not None else None,
    )
