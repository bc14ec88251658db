"""Per-layer assignments, and applying one to a copy of a model.

An assignment maps a layer's qualified name (``features.3.conv.1.0``) to a
:class:`LayerConfig`. :func:`apply_assignment` deep-copies the model and changes
only the named layers' weights; every other tensor stays bit-identical.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn

from dse.exceptions import SearchSpaceError
from dse.multipliers import get_multiplier
from dse.numerics.decimal_places import check_decimals, round_to_decimals
from dse.numerics.formats import NumberFormat, parse_format

__all__ = ["LayerConfig", "Assignment", "TARGETABLE_TYPES", "targetable_layers", "apply_assignment", "assignment_key"]

# Layers whose weights (and, later, products) dse can change.
TARGETABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.Linear)


@dataclass(frozen=True)
class LayerConfig:
    """What one layer runs with; every field's default is exact fp32.

    Attributes:
        decimals: decimal places of the weights (1..9), or None for exact.
        multiplier: name of the multiplier the layer's products use (weights and
            activations quantized to its operand width), or None for float32.
        weight_format, activation_format: number formats (``dse.numerics.formats``:
            fp16, bf16, e4m3, int8, ...) the weights / the layer's input take, or None (fp32).
    """

    decimals: int | None = None
    multiplier: str | None = None
    weight_format: str | None = None
    activation_format: str | None = None

    def __post_init__(self) -> None:
        if self.decimals is not None:
            check_decimals(self.decimals)
        if self.multiplier is not None:
            get_multiplier(self.multiplier)  # unknown names fail here, listing the known ones
            if self.weight_format or self.activation_format:
                raise SearchSpaceError(
                    f"A layer cannot take multiplier {self.multiplier!r} and number formats "
                    f"({self.weight_format}, {self.activation_format}) at once: the multiplier fixes its operand format."
                )
        for fmt in (self.weight_format, self.activation_format):
            if fmt is not None:
                parse_format(fmt)

    @property
    def is_exact(self) -> bool:
        return self == LayerConfig()

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


Assignment = Mapping[str, LayerConfig]


class RoundInput:
    """Forward pre-hook: the layer's input takes a number format (over a frozen range)."""

    def __init__(self, fmt: NumberFormat, lo: float, hi: float) -> None:
        self.fmt, self.lo, self.hi = fmt, lo, hi

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (self.fmt.round_activation(inputs[0], self.lo, self.hi), *inputs[1:])


def targetable_layers(model: nn.Module) -> dict[str, nn.Module]:
    """Conv2d and Linear layers of ``model`` by qualified name, in forward-definition order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, TARGETABLE_TYPES)}


def apply_assignment(
    model: nn.Module,
    assignment: Assignment,
    activation_ranges: Mapping[str, tuple[float, float]] | None = None,
    path: str = "auto",
) -> nn.Module:
    """A deep copy of ``model`` with each named layer transformed by its config.

    Weights are rounded first (``decimals``); a layer with a ``multiplier`` is then
    replaced by its emulated twin, quantizing its input over ``activation_ranges[name]``
    (calibrated once on the exact model: :func:`dse.emulation.calibrate_ranges`).
    """
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
            weight = new_layers[name].weight
            if config.decimals is not None:
                weight.copy_(round_to_decimals(weight, config.decimals))
            if config.weight_format is not None:
                weight.copy_(parse_format(config.weight_format).round_weight(weight))
    for name, config in assignment.items():
        if config.activation_format is not None:
            fmt = parse_format(config.activation_format)
            lo, hi = (activation_ranges or {}).get(name, (math.nan, math.nan))
            if fmt.name.startswith(("int", "uint")) and not (math.isfinite(lo) and math.isfinite(hi)):
                raise SearchSpaceError(
                    f"Layer {name!r} takes activation format {fmt.name!r}, which scales by the calibrated range, "
                    "but no range was given; pass activation_ranges from dse.emulation.calibrate_ranges."
                )
            new_layers[name].register_forward_pre_hook(RoundInput(fmt, lo, hi))
    for name, config in assignment.items():
        if config.multiplier is None:
            continue
        from dse.emulation import approximate_layer  # emulation imports this module

        if activation_ranges is None or name not in activation_ranges:
            raise SearchSpaceError(
                f"Layer {name!r} takes multiplier {config.multiplier!r} but has no calibrated activation range; "
                "pass activation_ranges from dse.emulation.calibrate_ranges(model, batches, layers)."
            )
        layer = approximate_layer(new_layers[name], config.multiplier, path=path, name=name)  # type: ignore[arg-type]
        layer.set_activation_range(*activation_ranges[name])  # type: ignore[operator]
        parent_name, _, child = name.rpartition(".")
        setattr(result.get_submodule(parent_name) if parent_name else result, child, layer)
    return result


def assignment_key(assignment: Assignment) -> str:
    """A canonical string for an assignment: equal keys mean identical models."""
    parts = [
        f"{name}=" + ",".join(f"{k}:{v}" for k, v in cfg.as_dict().items() if v is not None)
        for name, cfg in sorted(assignment.items())
        if not cfg.is_exact
    ]
    return ";".join(parts) or "exact"
