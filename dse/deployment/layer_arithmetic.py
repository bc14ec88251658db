"""How each layer of a candidate runs on a standard runtime: the numbers dse emulates, as ONNX can hold them.

For every layer of an assignment, :func:`deployment_plan` computes what the ONNX graph needs so that it
computes what dse's emulation computes: the weight as stored (integer codes, float16/bfloat16 values,
or float32) with its scales and zero points, and the rounding of the layer's input (QuantizeLinear /
DequantizeLinear, or a Cast pair). The numbers come from the same functions the emulation calls
(:mod:`dse.numerics`), so they are the emulation's, not a re-derivation.

A layer *deploys* when a runtime executes its arithmetic: integer formats and exact multipliers (integer
operands, exact products), float16/bfloat16, float32. Decimal places and approximate multipliers are
*emulated only*: the ONNX graph holds the rounded weights in float32 (decimal places: what dse computes) or
the multiplier's integer operands with exact products (the circuit's errors are not in it), and says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal, cast

import numpy as np
import torch
from onnx import TensorProto
from torch import nn

from dse.assignment import Assignment, LayerConfig, layer_kind, targetable_layers
from dse.exceptions import ConfigError
from dse.multipliers import get_multiplier
from dse.numerics.decimal_places import round_to_decimals
from dse.numerics.formats import FixedPoint, Float32, MiniFloat, NumberFormat, parse_format
from dse.numerics.quantization import QuantParams, activation_qparams, qrange, quantize, weight_qparams

__all__ = ["DEPLOYABLE_FORMATS", "LayerDeployment", "TensorRounding", "deployment_plan", "undeployable_layers"]

DEPLOYABLE_FORMATS = "fp32, fp16, bf16, [u]int2..[u]int16 (per channel or _pt)"
# IEEE/OCP types ONNX has, by dse format name (other eXmY minifloats have no ONNX type)
_FLOAT_TYPES = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
# ONNX has float8 types, but ONNX Runtime's CPU optimiser changes a float8 QDQ graph's results (measured:
# logits off by 15 on the tiny CNN with every optimisation, 0.3 with the basic ones): not exported
_FLOAT8 = ("fp8_e4m3", "fp8_e5m2")
Runtime = Literal["onnx", "emulated_only"]


@dataclass(frozen=True)
class TensorRounding:
    """How one tensor is rounded in the graph.

    ``quantize``: QuantizeLinear -> DequantizeLinear into ``onnx_type`` with ``scale`` and ``zero_point``;
    ``cast``: Cast to ``onnx_type`` and back. ``clip``: float bounds (an integer narrower than its 8/16-bit
    container saturates after dequantizing; float16 saturates before its Cast).
    ``axis``: the per-channel axis of a weight's scales.
    """

    how: Literal["quantize", "cast"]
    format: str
    bits: int
    onnx_type: int
    scale: np.ndarray
    zero_point: np.ndarray
    clip: tuple[float, float] | None = None
    axis: int | None = None

    def as_record(self) -> dict[str, object]:
        """The manifest's view: format, width, how, scales and zero points as plain lists."""
        return {
            "format": self.format,
            "bits": self.bits,
            "onnx_type": TensorProto.DataType.Name(self.onnx_type),
            "rounding": self.how,
            "granularity": "channel" if self.axis is not None else "tensor",
            "scale": np.atleast_1d(self.scale).astype(float).tolist(),
            "zero_point": np.atleast_1d(self.zero_point.astype(np.float64)).tolist(),
            "clip": list(self.clip) if self.clip else None,
        }


@dataclass(frozen=True)
class LayerDeployment:
    """One layer as the ONNX graph holds it.

    ``stored``: the weight's values as stored (integer codes, float16/bfloat16 values, or float32);
    ``weight``: the weight the layer computes with (float32, after every rounding): ``stored`` through
    ``weight_rounding``'s DequantizeLinear/Cast, or ``stored`` itself.
    """

    name: str
    kind: str
    config: LayerConfig
    runtime: Runtime
    note: str
    weight: np.ndarray
    stored: np.ndarray
    weight_rounding: TensorRounding | None
    input_rounding: TensorRounding | None
    input_range: tuple[float, float] | None


def _container(bits: int, signed: bool, what: str) -> int:
    if bits <= 8:
        return TensorProto.INT8 if signed else TensorProto.UINT8
    if bits <= 16:
        return TensorProto.INT16 if signed else TensorProto.UINT16
    raise _Undeployable(f"{what} is {bits}-bit: ONNX quantizes to 8 or 16 bits at most")


class _Undeployable(Exception):
    """A layer's arithmetic that ONNX cannot express (collected, then refused together)."""


def _integer_weight(w: torch.Tensor, bits: int, signed: bool, per_channel: bool, name: str) -> tuple:
    p: QuantParams = weight_qparams(w, bits, signed, per_channel)
    shape = (-1,) + (1,) * (w.dim() - 1)
    scale, zero = p.scale.view(shape), p.zero_point.view(shape)
    codes = quantize(w.detach().float(), scale, zero, bits, signed)
    real = ((codes - zero) * scale).numpy()  # what the emulation computes with (FixedPoint.round_weight)
    onnx_type = _container(bits, signed, f"{name}'s weight")
    dtype = np.dtype(TensorProto.DataType.Name(onnx_type).lower())
    granular = per_channel and w.dim() > 1
    rounding = TensorRounding(
        "quantize",
        f"{'int' if signed else 'uint'}{bits}",
        bits,
        onnx_type,
        p.scale.numpy() if granular else p.scale.numpy().reshape(()),
        (p.zero_point.numpy() if granular else p.zero_point.numpy().reshape(())).astype(dtype),
        axis=0 if granular else None,
    )
    return real, codes.numpy().astype(dtype), rounding


def _integer_input(lo: float, hi: float, bits: int, signed: bool, name: str) -> TensorRounding:
    p = activation_qparams(lo, hi, bits, signed)
    onnx_type = _container(bits, signed, f"{name}'s input")
    dtype = np.dtype(TensorProto.DataType.Name(onnx_type).lower())
    scale, zero = float(p.scale.item()), float(p.zero_point.item())
    qlo, qhi = qrange(bits, signed)
    container_bits = 8 if bits <= 8 else 16
    # narrower than its container: the b-bit range's saturation, a Clip after dequantizing (dse.deployment.onnx_graph)
    clip = None if bits == container_bits else ((qlo - zero) * scale, (qhi - zero) * scale)
    fmt = f"{'int' if signed else 'uint'}{bits}"
    return TensorRounding(
        "quantize", fmt, bits, onnx_type, np.array(scale, np.float32), np.array(zero).astype(dtype), clip
    )


def _float_weight(w: torch.Tensor, fmt: MiniFloat) -> tuple:
    real = fmt.round_weight(w).numpy()  # fp16/bf16 are unscaled: stored as computed with
    return real, real, TensorRounding("cast", fmt.name, fmt.bits, _FLOAT_TYPES[fmt.name], np.ones(()), np.zeros(()))


def _float_input(fmt: MiniFloat) -> TensorRounding:
    top = fmt.max_finite  # a Cast rounds to nearest even but overflows to inf where dse saturates: clip first
    return TensorRounding("cast", fmt.name, fmt.bits, _FLOAT_TYPES[fmt.name], np.ones(()), np.zeros(()), (-top, top))


def _check_float(fmt: NumberFormat, what: str) -> MiniFloat:
    if fmt.name in _FLOAT8:
        raise _Undeployable(
            f"{what} is {fmt.name}: ONNX Runtime's CPU optimiser changes what a float8 QDQ graph computes"
        )
    if not isinstance(fmt, MiniFloat) or fmt.name not in _FLOAT_TYPES:  # (fp16, bf16: unscaled)
        raise _Undeployable(f"{what} is {fmt.name}, which no ONNX type holds (ONNX has {', '.join(_FLOAT_TYPES)})")
    return fmt


def _layer(
    name: str, module: nn.Module, config: LayerConfig, act_range: tuple[float, float] | None, per_channel: bool
) -> LayerDeployment:
    w = cast(torch.Tensor, module.weight).detach().float().cpu()
    if config.decimals is not None:
        w = round_to_decimals(w, config.decimals)
    lo, hi = act_range if act_range is not None else (math.nan, math.nan)
    stored, weight_rounding, input_rounding = w.numpy(), None, None
    runtime: Runtime = "onnx"
    notes = []
    if config.multiplier is not None:
        m = get_multiplier(config.multiplier)
        real, stored, weight_rounding = _integer_weight(w, m.bits, m.signed, per_channel, name)
        input_rounding = _integer_input(lo, hi, m.bits, m.signed, name)
        if not m.is_exact:
            runtime = "emulated_only"
            notes.append(
                f"approximate multiplier {m.name}: the graph multiplies its {m.bits}-bit operands exactly, "
                "so the circuit's errors (and dse's accuracy for it) are not in the ONNX model"
            )
        w = torch.from_numpy(real)
    if config.weight_format is not None:
        fmt = parse_format(config.weight_format)
        if isinstance(fmt, FixedPoint):
            real, stored, weight_rounding = _integer_weight(w, fmt.bits, fmt.signed, fmt.per_channel, name)
        elif not isinstance(fmt, Float32):
            real, stored, weight_rounding = _float_weight(w, _check_float(fmt, f"{name}'s weight format"))
        else:
            real = stored
        w = torch.from_numpy(np.asarray(real))
    if config.activation_format is not None:
        fmt = parse_format(config.activation_format)
        if isinstance(fmt, FixedPoint):
            input_rounding = _integer_input(lo, hi, fmt.bits, fmt.signed, name)
        elif not isinstance(fmt, Float32):
            input_rounding = _float_input(_check_float(fmt, f"{name}'s activation format"))
    if config.decimals is not None:
        runtime = "emulated_only"
        notes.append(
            f"weights rounded to {config.decimals} decimal places, stored and computed in float32: the graph "
            "gives dse's accuracy; the saving assumes a decimal datapath no standard runtime has"
        )
    if runtime == "onnx":
        notes.append("runs as dse emulates it" if weight_rounding or input_rounding else "float32")
    return LayerDeployment(
        name,
        layer_kind(module),
        config,
        runtime,
        "; ".join(notes),
        w.numpy().astype(np.float32),
        np.asarray(stored),
        weight_rounding,
        input_rounding,
        act_range if input_rounding is not None else None,
    )


def deployment_plan(
    model: nn.Module,
    assignment: Assignment,
    activation_ranges: Mapping[str, tuple[float, float]] | None,
    per_channel: bool = True,
) -> dict[str, LayerDeployment]:
    """Every layer of ``assignment`` as the ONNX graph holds it (layers not in it stay float32).

    ``activation_ranges``: the calibrated input ranges the emulation used (a candidate's own), needed by
    every layer whose input is quantized. Raises ConfigError naming every layer whose arithmetic ONNX cannot
    express (a minifloat without an ONNX type, an integer wider than 16 bits).
    """
    layers = targetable_layers(model)
    plan, problems = {}, []
    for name, config in assignment.items():
        try:
            rng = (activation_ranges or {}).get(name)
            plan[name] = _layer(name, layers[name], config, rng, per_channel)
        except _Undeployable as exc:
            problems.append(str(exc))
    if problems:
        raise ConfigError(
            f"ONNX cannot express {len(problems)} layer(s): {'; '.join(problems[:5])}"
            f"{' ...' if len(problems) > 5 else ''}. Formats that deploy: {DEPLOYABLE_FORMATS}; search a space "
            "of those to export (conf/space/formats_group.yaml lists them), or keep the layer in dse."
        )
    return plan


def undeployable_layers(plan: Mapping[str, LayerDeployment]) -> list[str]:
    """The layers a standard runtime cannot run as dse emulates them (decimal places, approximate multipliers)."""
    return [name for name, layer in plan.items() if layer.runtime != "onnx"]
