"""Per-layer assignments, and applying one to a copy of a model.

An assignment maps a layer's qualified name (``features.3.conv.1.0``) to a
:class:`LayerConfig`. :func:`apply_assignment` deep-copies the model and changes
only the named layers' weights; every other tensor stays bit-identical.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from dse.exceptions import SearchSpaceError
from dse.numerics.decimal_places import check_decimals, round_to_decimals

__all__ = ["LayerConfig", "Assignment", "TARGETABLE_TYPES", "targetable_layers", "apply_assignment", "assignment_key"]

# Layers whose weights (and, later, products) dse can change.
TARGETABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerConfig:
    """What one layer runs with; every field's default is exact fp32.

    Attributes:
        decimals: decimal places of the weights (1..9), or None for exact.
    """

    decimals: int | None = None

    def __post_init__(self) -> None:
        if self.decimals is not None:
            check_decimals(self.decimals)

    @property
    def is_exact(self) -> bool:
        return self == LayerConfig()

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


Assignment = Mapping[str, LayerConfig]


def targetable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d and Linear layers of ``model`` by qualified name, in forward-definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, TARGETABLE_TYPES)}


def apply_assignment(model: nn.Module, assignment: Assignment) -> nn.Module:
    """A deep copy of ``model`` with each named layer transformed by its config."""
    layers = targetable_layers(model)
    unknown = sorted(set(assignment) - set(layers))
    if unknown:
        raise SearchSpaceError(
            f"Assignment names layers the model lacks: {unknown[:5]}. Conv2d/Linear layers of "
            f"{type(model).__name__}: {list(layers)[:8]}... (see dse.assignment.targetable_layers)."
        )
    result = copy.deepcopy(model)
    new_layers = targetable_layers(result)
    with torch.no_grad():
        for name, config in assignment.items():
            if config.decimals is not None:
                weight = new_layers[name].weight
                weight.copy_(round_to_decimals(weight, config.decimals))
    return result


def assignment_key(assignment: Assignment) -> str:
    """A canonical string for an assignment: equal keys mean identical models."""
    parts = [f"{name}={cfg.decimals}" for name, cfg in sorted(assignment.items()) if not cfg.is_exact]
    return ";".join(parts) or "exact"
