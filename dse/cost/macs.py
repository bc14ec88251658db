"""Per-layer shapes and multiply-accumulate counts, measured by one forward pass.

MACs of a Conv2d: output elements x (C_in / groups) x k_h x k_w; of a Linear:
batch x in x out. Bias additions are not MACs. ``torch.utils.flop_counter``
counts 2 FLOPs per MAC for the same layers (checked in tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from dse.assignment import TargetableLayer, targetable_layers

__all__ = ["LayerShape", "layer_shapes"]


@dataclass(frozen=True)
class LayerShape:
    """What the cost model needs to know about one layer, for one input image."""

    name: str
    kind: str  # "conv", "depthwise", "pointwise", "linear"
    macs: int
    weight_numel: int
    input_numel: int
    output_numel: int


def _kind(module: nn.Module) -> str:
    if isinstance(module, nn.Linear):
        return "linear"
    assert isinstance(module, nn.Conv2d)
    if module.groups > 1 and module.groups == module.in_channels:
        return "depthwise"
    return "pointwise" if module.kernel_size == (1, 1) else "conv"


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> dict[str, LayerShape]:
    """Run one image of ``input_shape`` through ``model`` and record each Conv2d/Linear."""
    layers = targetable_layers(model)
    shapes: dict[str, LayerShape] = {}

    def hook(name: str, module: TargetableLayer) -> Callable[..., None]:
        def record(_: nn.Module, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
            weight = module.weight
            per_output = weight[0].numel()  # (C_in/groups) * kh * kw, or in_features
            shapes[name] = LayerShape(
                name=name,
                kind=_kind(module),
                macs=output.numel() * per_output,
                weight_numel=weight.numel(),
                input_numel=inputs[0].numel(),
                output_numel=output.numel(),
            )

        return record

    handles = [m.register_forward_hook(hook(n, m)) for n, m in layers.items()]
    was_training = model.training
    try:
        model.eval()
        device = next(model.parameters()).device
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {name: shapes[name] for name in layers if name in shapes}
