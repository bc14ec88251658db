"""Applying an assignment to a copy of a model: rounded weights, formatted inputs, emulated layers.

:func:`apply_assignment` deep-copies the model and changes only the named
layers; every other tensor stays bit-identical.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import torch
from torch import nn
from torch.nn.utils import parametrize

from dse.assignment import Assignment, check_layer_names, targetable_layers
from dse.emulation import EmulationPath, approximate_layer, calibrate_ranges
from dse.emulation.emulated import EmulatedLayer
from dse.exceptions import SearchSpaceError
from dse.numerics.decimal_places import round_to_decimals
from dse.numerics.formats import NumberFormat, parse_format

__all__ = ["RoundInput", "RoundWeight", "apply_assignment", "recalibrate"]


class _RoundingStraightThrough(torch.autograd.Function):
    """Forward: ``rounded`` exactly (so training sees the evaluation's numbers bit for bit);
    backward: the identity to ``x`` (the straight-through estimator of a rounding)."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, rounded: torch.Tensor) -> torch.Tensor:
        return rounded

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        return grad, None


def _straight_through(x: torch.Tensor, rounding: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
    if not torch.is_grad_enabled() or not x.requires_grad:
        return rounding(x)
    with torch.no_grad():
        rounded = rounding(x.detach())
    return _RoundingStraightThrough.apply(x, rounded)


class RoundInput:
    """Forward pre-hook: the layer's input takes a number format (over a frozen range);
    straight-through under autograd."""

    def __init__(self, fmt: NumberFormat, lo: float, hi: float) -> None:
        self.fmt, self.lo, self.hi = fmt, lo, hi

    def __call__(self, module: nn.Module, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (_straight_through(inputs[0], lambda x: self.fmt.round_activation(x, self.lo, self.hi)), *inputs[1:])


class RoundWeight(nn.Module):
    """A weight parametrization: decimal places, then a number format, re-applied at every forward
    so retraining stays on the assignment's grid; straight-through gradient to the latent weight."""

    def __init__(self, decimals: int | None, fmt: NumberFormat | None) -> None:
        super().__init__()
        self.decimals, self.fmt = decimals, fmt

    def _round(self, weight: torch.Tensor) -> torch.Tensor:
        if self.decimals is not None:
            weight = round_to_decimals(weight, self.decimals)
        if self.fmt is not None:
            weight = self.fmt.round_weight(weight)
        return weight

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        return _straight_through(weight, self._round)


def apply_assignment(
    model: nn.Module,
    assignment: Assignment,
    activation_ranges: Mapping[str, tuple[float, float]] | None = None,
    path: EmulationPath = "auto",
    per_channel: bool = True,
    trainable: bool = False,
) -> nn.Module:
    """A deep copy of ``model`` with each named layer transformed by its config.

    Weights are rounded first (``decimals``); a layer with a ``multiplier`` is then
    replaced by its emulated twin, quantizing its input over ``activation_ranges[name]``
    (calibrated once on the exact model: :func:`dse.emulation.calibrate_ranges`), on
    emulation ``path`` with per-output-channel (else per-tensor) weight scales.

    ``trainable``: decimal places and weight formats become parametrizations re-applied at
    every forward (:class:`RoundWeight`), so retraining keeps the weights on the assignment's
    grid; the forward's values are the same as without it.
    """
    check_layer_names(model, assignment)
    result = copy.deepcopy(model)
    new_layers = targetable_layers(result)
    roundings = {
        name: RoundWeight(config.decimals, parse_format(config.weight_format) if config.weight_format else None)
        for name, config in assignment.items()
        if config.decimals is not None or config.weight_format is not None
    }
    if not trainable:  # rounded once, in place
        with torch.no_grad():
            for name, rounding in roundings.items():
                new_layers[name].weight.copy_(rounding(new_layers[name].weight))
    for name, config in assignment.items():
        if config.activation_format is not None:
            fmt = parse_format(config.activation_format)
            lo, hi = (activation_ranges or {}).get(name, (math.nan, math.nan))
            if fmt.needs_range and not (math.isfinite(lo) and math.isfinite(hi)):
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
    if trainable:  # re-applied at every forward, on the final (possibly emulated) layers
        final_layers = targetable_layers(result)
        for name, rounding in roundings.items():
            parametrize.register_parametrization(final_layers[name], "weight", rounding)
    return result


def recalibrate(net: nn.Module, batches: Iterable[torch.Tensor]) -> dict[str, tuple[float, float]]:
    """Re-measure the activation range of every quantized input of a candidate (emulated layers and
    activation formats) on its own forward over ``batches``, and set it; returns the new ranges.

    Retraining keeps the calibrated ranges frozen; this is the alternative it is measured against.
    """
    quantized = {
        name: m
        for name, m in net.named_modules()
        if isinstance(m, EmulatedLayer) or any(isinstance(h, RoundInput) for h in m._forward_pre_hooks.values())
    }
    ranges = calibrate_ranges(net, batches, list(quantized))
    for name, (lo, hi) in ranges.items():
        module = quantized[name]
        if isinstance(module, EmulatedLayer):
            module.set_activation_range(lo, hi)
        for hook in module._forward_pre_hooks.values():
            if isinstance(hook, RoundInput) and math.isfinite(hook.lo):
                hook.lo, hook.hi = lo, hi
    return ranges
