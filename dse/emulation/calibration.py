"""Activation ranges, measured once on the exact model over fixed calibration images."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import torch
from torch import nn

__all__ = ["calibrate_ranges"]


@torch.no_grad()
def calibrate_ranges(
    model: nn.Module, batches: Iterable[torch.Tensor], layers: Sequence[str]
) -> dict[str, tuple[float, float]]:
    """Min and max of the input of each named layer over ``batches`` (eval mode; the exact model's
    forward for the search, a retrained candidate's for :func:`dse.candidates.transform.recalibrate`)."""
    modules = dict(model.named_modules())
    ranges: dict[str, list[float]] = {}

    def hook(name: str):
        def record(_: nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0]
            lo, hi = float(x.min()), float(x.max())
            r = ranges.setdefault(name, [lo, hi])
            r[0], r[1] = min(r[0], lo), max(r[1], hi)

        return record

    # prepend: see the input before any hook of the layer's own (e.g. an activation format) clips it
    handles = [modules[n].register_forward_pre_hook(hook(n), prepend=True) for n in layers]
    was_training = model.training
    model.eval()
    try:
        for x in batches:
            model(x)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return {n: (r[0], r[1]) for n, r in ranges.items()}
