"""A fast training forward for emulated layers: the exact quantized layer plus the multiplier's error, modeled.

The bit-exact forward of some multipliers is slow to train with (Mitchell's arithmetic and
unsigned high-rank tables off the compiled kernel, any table on a device without it). For
them retraining can use an error model instead, as TorchApprox and agn-approx do, but fitted
to the layer rather than assumed: per output channel ``c``,

    y_c = (1 + gain_c) * acc_c + offset_c + std_c * N(0, 1) + bias_c

where ``acc`` is the exact product sum at the same quantized operands (one float conv) and
``gain``, ``offset``, ``std`` are the least-squares fit of the emulated sums' error
``approx - acc`` against ``acc`` on a real batch of the layer's own inputs, plus the
residual's standard deviation. The gain carries a multiplier's relative bias (Mitchell
always underestimates, by about 4% of each product), the offset a constant one (a table
that is off by a fixed amount), the noise the rest. Weights drift while training, so
:func:`fit_error_models` is re-run every few steps (``training.retraining_module.ErrorModelRefit``).

Only the training forward changes: evaluation (no autograd) is always the bit-exact
emulation, so every accuracy dse reports stays exact.
"""

from __future__ import annotations

import torch
from torch import nn

from .emulated import EmulatedLayer
from .error_stats import NoisePool

__all__ = ["error_model_layers", "fit_error_models", "use_error_model"]


def error_model_layers(net: nn.Module) -> dict[str, EmulatedLayer]:
    """The emulated layers of ``net`` that train through the error model."""

    modules = net.named_modules()
    return {n: m for n, m in modules if isinstance(m, EmulatedLayer) and m.training_forward == "error_model"}


def use_error_model(net: nn.Module, which: str) -> list[str]:
    """Choose each emulated layer's training forward; returns the layers on the error model.

    ``which``: ``bit_exact`` (none), ``error_model`` (all), or ``auto`` (those whose
    bit-exact forward is slow to train with: off the compiled kernel and not a cheap
    separable/fused table, i.e. on the ``arithmetic``, ``table`` or ``reference`` path).
    """

    if which not in ("bit_exact", "error_model", "auto"):
        raise ValueError(f"training forward must be bit_exact, error_model or auto, got {which!r}.")
    chosen = []
    noise = NoisePool()  # one pool for the whole network
    for name, m in net.named_modules():
        if not isinstance(m, EmulatedLayer):
            continue
        slow = m.path in ("arithmetic", "table", "reference")
        m.training_forward = "error_model" if which == "error_model" or (which == "auto" and slow) else "bit_exact"
        m.noise = noise
        if m.training_forward == "error_model":
            chosen.append(name)
    return chosen


@torch.no_grad()
def fit_error_models(net: nn.Module, x: torch.Tensor) -> int:
    """Fit every error-model layer of ``net`` on one batch, in eval mode (the bit-exact forward
    runs, so each layer sees the inputs the approximate network really gives it). Returns how many."""
    layers = error_model_layers(net)
    if not layers:
        return 0
    was_training = net.training
    for m in layers.values():
        m._fitting = True
        m.noise.refresh()
    net.eval()
    try:
        net(x)
    finally:
        net.train(was_training)
        for m in layers.values():
            m._fitting = False
    missing = [n for n, m in layers.items() if m.error_stats is None]
    if missing:
        raise RuntimeError(f"Error model not fitted for {missing}: they were not reached by the forward pass.")
    return len(layers)
