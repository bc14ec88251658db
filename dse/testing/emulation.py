"""Layer shapes every emulation path must handle, and a helper to run two paths on one.

Used by ``tests/test_emulation.py`` on every multiplier; a new path or a new
multiplier family gets the whole suite by adding itself to the parametrisation.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from dse.emulation import EmulationPath, approximate_layer
from dse.multipliers import Multiplier

__all__ = ["SHAPES", "ConvCase", "emulated_pair", "make_layer"]


@dataclass(frozen=True)
class ConvCase:
    name: str
    in_ch: int
    out_ch: int
    kernel: int = 3
    stride: int = 1
    padding: int = 1
    dilation: int = 1
    groups: int = 1
    linear: bool = False
    size: int = 7
    batch: int = 2


SHAPES = [
    ConvCase("regular", 5, 6),
    ConvCase("pointwise", 12, 7, kernel=1, padding=0),
    ConvCase("depthwise", 8, 8, groups=8),
    ConvCase("depthwise_strided_x2", 4, 8, stride=2, groups=4),
    ConvCase("grouped", 6, 9, groups=3),
    ConvCase("strided_padded", 3, 4, kernel=5, stride=2, padding=2, size=9),
    ConvCase("dilated", 4, 3, dilation=2, padding=2),
    ConvCase("linear", 40, 6, linear=True),
    ConvCase("batch1_odd_size", 3, 5, size=11, batch=1),
    ConvCase("odd_strided_pointwise", 7, 5, kernel=1, stride=2, padding=0, size=9, batch=3),
    # 3,000 x 9 terms: sums beyond float32's exact range (2^24), the wide accumulator's case
    ConvCase("long_accumulation", 3000, 2, size=3, batch=1),
]


def make_layer(shape: ConvCase, seed: int = 0) -> tuple[nn.Module, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    if shape.linear:
        layer: nn.Module = nn.Linear(shape.in_ch, shape.out_ch)
        x = torch.randn(shape.batch + 1, shape.in_ch, generator=gen)
    else:
        layer = nn.Conv2d(
            shape.in_ch, shape.out_ch, shape.kernel, shape.stride, shape.padding, shape.dilation, shape.groups
        )
        x = torch.randn(shape.batch, shape.in_ch, shape.size, shape.size, generator=gen)
    with torch.no_grad():
        for p in layer.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return layer, x


def emulated_pair(
    shape: ConvCase, multiplier: str | Multiplier, paths: tuple[EmulationPath, EmulationPath], seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Outputs of ``paths`` on the same layer, input and calibration."""
    layer, x = make_layer(shape, seed)
    outs = []
    for path in paths:
        approx = approximate_layer(layer, multiplier, path=path, name=shape.name)
        approx.set_activation_range(float(x.min()), float(x.max()))
        with torch.no_grad():
            outs.append(approx(x))
    return outs[0], outs[1]
