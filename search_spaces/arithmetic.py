"""Whole arithmetics per layer: a number format or an approximate multiplier, in one parameter (papers 2-4
on one front), so a group's choice between int6 and an 8-bit approximate circuit is the search's to make."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .decimal_places import space_with_decimals
from .space import ARITHMETIC, EXACT, Knob, SearchSpace

__all__ = ["arithmetic_space"]


def arithmetic_space(
    choices: Sequence[str],
    granularity: Literal["uniform", "group", "layer"] = "group",
    include_exact: bool = True,
    decimals: Sequence[int] | None = None,
    groups: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
) -> SearchSpace:
    """Each unit runs one of ``choices``: a multiplier name (``mul8s_1KV9``, ``mitchell_w6_s8``: weights and
    activations at its operand width) or number formats (``int6``: weights and activations; ``int4/int8``:
    weights / activations), or stays float32 (``include_exact``). With ``decimals``, a decimal-place knob too.
    """
    return space_with_decimals(
        Knob(ARITHMETIC, tuple(choices) + ((EXACT,) if include_exact else ())), granularity, decimals, groups, layers
    )
