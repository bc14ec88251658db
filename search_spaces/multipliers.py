"""Approximate multipliers per layer (papers 2 and 4), optionally with decimal places."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .decimal_places import decimal_choices
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
    knobs = [Knob("multiplier", tuple(multipliers) + ((EXACT,) if include_exact else ()))]
    if decimals is not None:
        knobs.append(Knob("decimals", (*decimal_choices(decimals), EXACT)))
    return SearchSpace(
        knobs=knobs,
        granularity=granularity,
        groups=list(groups) if groups is not None else None,
        layers=list(layers) if layers is not None else None,
    )
