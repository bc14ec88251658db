"""Number formats of weights and activations per layer (paper 3: Hill et al. 2017)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from .space import EXACT, Knob, SearchSpace

__all__ = ["formats_space"]


def formats_space(
    weight_formats: Sequence[str],
    activation_formats: Sequence[str] | None = None,
    granularity: Literal["uniform", "group", "layer"] = "group",
    groups: Sequence[str] | None = None,
    layers: Sequence[str] | None = None,
) -> SearchSpace:
    """Each unit's weights take one of ``weight_formats`` (or stay fp32); activations likewise.

    Names: ``dse.numerics.formats.parse_format`` (fp16, bf16, e4m3, e5m2, e<E>m<M>, int8, int4, ...).
    """
    knobs = [Knob("weight_format", (*tuple(weight_formats), EXACT))]
    if activation_formats:
        knobs.append(Knob("activation_format", (*tuple(activation_formats), EXACT)))
    return SearchSpace(
        knobs=knobs,
        granularity=granularity,
        groups=list(groups) if groups is not None else None,
        layers=list(layers) if layers is not None else None,
    )
