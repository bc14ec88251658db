"""Per-layer shapes and multiply-accumulate counts, measured by one forward pass.

MACs of a convolution: output elements x (C_in / groups) x kernel elements (transposed: input elements
x (C_out / groups) x kernel elements); of a Linear: batch x in x out; of a recurrent layer: per step,
layer and direction, gates x hidden x (input + hidden) (+ hidden x proj for a projected LSTM); of
multi-head attention: the four projections and the two L_q x L_k x E products. Bias additions are not
MACs. ``torch.utils.flop_counter`` counts 2 FLOPs per MAC for the layers it sees (checked in tests).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from dse.assignment import layer_kind, targetable_layers, unemulated_layers
from dse.emulation.recurrent import UnrolledRecurrent

__all__ = ["RECURRENT_GATES", "LayerShape", "layer_shapes", "unemulated_shapes", "warn_unemulated"]


RECURRENT_GATES = "recurrent_gates"  # kind of a recurrent layer's element-wise gate arithmetic (float32)


@dataclass(frozen=True)
class LayerShape:
    """What the cost model needs to know about one layer, for one input image."""

    name: str
    kind: str  # dse.assignment.layer_kind; an unemulated layer: its class name (GRU, Conv3d, ...)
    macs: int
    weight_numel: int
    input_numel: int
    output_numel: int


def _first_tensor(value: Any) -> torch.Tensor:
    while isinstance(value, (tuple, list)):
        value = value[0]
    assert isinstance(value, torch.Tensor)
    return value


def _recurrent_macs(module: nn.RNNBase, output: torch.Tensor) -> int:
    gates = {"LSTM": 4, "GRU": 3}.get(module.mode, 1)
    directions = 2 if module.bidirectional else 1
    out_size = module.proj_size or module.hidden_size
    steps = output.numel() // (directions * out_size)  # batch x sequence length
    per_step = 0
    for layer in range(module.num_layers):
        inputs = module.input_size if layer == 0 else out_size * directions
        per_direction = gates * module.hidden_size * (inputs + out_size)
        if module.proj_size:
            per_direction += module.hidden_size * module.proj_size
        per_step += directions * per_direction
    return steps * per_step


def _attention_macs(module: nn.MultiheadAttention, inputs: tuple[torch.Tensor, ...]) -> int:
    query, key = inputs[0], inputs[1]
    batch = 1 if query.dim() == 2 else query.shape[0 if module.batch_first else 1]
    q_tokens, k_tokens = query.numel() // module.embed_dim, key.numel() // module.kdim  # batch x length
    e = module.embed_dim
    projections = q_tokens * e * e + k_tokens * (module.kdim + module.vdim) * e + q_tokens * e * e
    return projections + 2 * (q_tokens * k_tokens // batch) * e


def _macs(module: nn.Module, inputs: tuple[Any, ...], output: torch.Tensor) -> int:
    if isinstance(module, nn.RNNBase):
        return _recurrent_macs(module, output)
    if isinstance(module, nn.MultiheadAttention):
        return _attention_macs(module, inputs)
    weight = module.weight
    assert isinstance(weight, torch.Tensor)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        return _first_tensor(inputs).numel() * weight[0].numel()
    return output.numel() * weight[0].numel()  # (C_in/groups) * kernel elements, or in_features


def _gates_shape(name: str, module: UnrolledRecurrent, output: torch.Tensor) -> LayerShape:
    """The element-wise gate arithmetic of an unrolled recurrent layer (float32 in every candidate): its products
    as MACs, the gate pre-activations it reads (input and hidden products) and the states it writes."""
    steps = output.numel() // (module.directions * (module.proj_size or module.hidden_size))  # batch x time
    per_step = module.num_layers * module.directions * module.hidden_size
    states = 2 if module.mode == "LSTM" else 1  # h (and an LSTM's cell c)
    reads = steps * per_step * 2 * module.gates  # the input's and the state's products, every gate
    return LayerShape(name, RECURRENT_GATES, module.elementwise_products(steps), 0, reads, steps * per_step * states)


def _weight_numel(module: nn.Module) -> int:
    """A conv's or linear's weight (biases are not priced: a folded BatchNorm's shift stays free); every
    parameter of a layer dse does not emulate (a GRU's gates and biases)."""
    weight = getattr(module, "weight", None)
    if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)) and isinstance(weight, torch.Tensor):
        return weight.numel()
    return sum(p.numel() for p in module.parameters())


def _record(
    modules: dict[str, nn.Module], model: nn.Module, input_shape: tuple[int, ...], kind: Callable[[nn.Module], str]
) -> dict[str, LayerShape]:
    shapes: dict[str, LayerShape] = {}

    def hook(name: str, module: nn.Module) -> Callable[..., None]:
        def record(_: nn.Module, inputs: tuple[Any, ...], output: Any) -> None:
            out = _first_tensor(output)
            if isinstance(module, UnrolledRecurrent):  # its matrices are Linears of their own: here, the gates
                shape = _gates_shape(name, module, out)
            else:
                shape = LayerShape(
                    name,
                    kind(module),
                    _macs(module, inputs, out),
                    _weight_numel(module),
                    _first_tensor(inputs).numel(),
                    out.numel(),
                )
            before = shapes.get(name)  # a layer called once per time step: its calls add up
            if before is not None:
                shape = replace(
                    shape,
                    macs=shape.macs + before.macs,
                    input_numel=shape.input_numel + before.input_numel,
                    output_numel=shape.output_numel + before.output_numel,
                )
            shapes[name] = shape

        return record

    handles = [m.register_forward_hook(hook(n, m)) for n, m in modules.items()]
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
    return {name: shapes[name] for name in modules if name in shapes}


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> dict[str, LayerShape]:
    """Run one image of ``input_shape`` through ``model`` and record each Conv1d/Conv2d/Linear."""
    return _record(dict(targetable_layers(model)), model, input_shape, layer_kind)


def unemulated_shapes(model: nn.Module, input_shape: tuple[int, ...] = (3, 32, 32)) -> dict[str, LayerShape]:
    """The same record for what dse cannot emulate (:func:`dse.assignment.unemulated_layers`), and the
    element-wise gate arithmetic of each unrolled recurrent layer (its matrices are in :func:`layer_shapes`)."""
    modules = {
        **unemulated_layers(model),
        **{n: m for n, m in model.named_modules() if isinstance(m, UnrolledRecurrent)},
    }
    return _record(modules, model, input_shape, lambda m: type(m).__name__)


def warn_unemulated(searched: Mapping[str, LayerShape], unemulated: Mapping[str, LayerShape]) -> None:
    """Name the layers no assignment changes, with their share of the model's MACs: a search over the rest
    cannot move that share, and the user must know before reading a front."""
    total = sum(s.macs for s in searched.values()) + sum(s.macs for s in unemulated.values())
    # an unrolled recurrent layer's gate arithmetic is no layer: its matrices are searched, its element-wise
    # products stay float32 (priced so, listed in the cost table as recurrent_gates)
    unemulated = {n: s for n, s in unemulated.items() if s.kind != RECURRENT_GATES}
    if not unemulated:
        return
    listed = ", ".join(f"{n} ({s.kind}, {100 * s.macs / max(total, 1):.1f}% of MACs)" for n, s in unemulated.items())
    warnings.warn(
        f"dse does not emulate {len(unemulated)} layer(s): {listed}. They run float32 in every candidate and are "
        "priced as float32 layers; only Conv1d, Conv2d and Linear layers take decimal places, formats or multipliers "
        "(a GRU, LSTM or RNN does once unrolled: dse.emulation.unroll_recurrent, which every model a config builds "
        "goes through).",
        stacklevel=2,
    )
