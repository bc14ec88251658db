"""Applying an assignment to a copy of a model: rounded weights, formatted inputs, emulated layers.

:func:`apply_assignment` deep-copies the model and changes only the named
layers; every other tensor stays bit-identical.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping

import torch
from torch import nn

from dse.assignment import Assignment, targetable_layers
from dse.emulation import EmulationPath, approximate_layer
from dse.exceptions import SearchSpaceError
from dse.numerics.decimal_places import round_to_decimals
from dse.numerics.formats import NumberFormat, parse_format

__all__ = ["RoundInput", "apply_assignment"]


class RoundInput:
    """Forward pre-hook: the layer's input takes a number format (over a frozen range)."""

    def __init__(self, fmt: NumberFormat, lo: float, hi: float) -> None:
        self.fmt, self.lo, self.hi = fmt, lo, hi

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (self.fmt.round_activation(inputs[0], self.lo, self.hi), *inputs[1:])


def apply_assignment(
    model: nn.Module,
    assignment: Assignment,
    activation_ranges: Mapping[str, tuple[float, float]] | None = None,
    path: EmulationPath = "auto",
    per_channel: bool = True,
) -> nn.Module:
    """A deep copy of ``model`` with each named layer transformed by its config.

    Weights are rounded first (``decimals``); a layer with a ``multiplier`` is then
    replaced by its emulated twin, quantizing its input over ``activation_ranges[name]``
    (calibrated once on the exact model: :func:`dse.emulation.calibrate_ranges`), on
    emulation ``path`` with per-output-channel (else per-tensor) weight scales.
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
        if activation_ranges is None or name not in activation_ranges:
            raise SearchSpaceError(
                f"Layer {name!r} takes multiplier {config.multiplier!r} but has no calibrated activation range; "
                "pass activation_ranges from dse.emulation.calibrate_ranges(model, batches, layers)."
            )
        layer = approximate_layer(new_layers[name], config.multiplier, path=path, per_channel=per_channel, name=name)
        layer.set_activation_range(*activation_ranges[name])
        parent_name, _, child = name.rpartition(".")
        setattr(result.get_submodule(parent_name) if parent_name else result, child, layer)
    return result
