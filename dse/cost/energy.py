"""First-order energy model of one inference, per layer, in picojoules.

For a layer with MACs M, weights W at b_w bits and activations A_in + A_out at b_a bits:

    E = M * (E_mul + E_add) + W * b_w / 64 * E_mem(weights) / batch
        + (A_in + A_out) * b_a / 64 * E_mem(activations)

Operands: a float format with m stored mantissa bits feeds a significand of
s = m + 1 bits into the multiplier; a b-bit integer (fixed point, a weight rounded
to d decimal places: ``decimal_bits``, or a multiplier's operand) feeds s = b bits.

- Integer x integer: E_mul = 0.2 pJ * s_w * s_a / 64 (8-bit multiply [H14]; array energy
  grows with the product of the widths: [H14]'s 32-bit 3.1 pJ / 8-bit 0.2 pJ = 15.5 ~ 16),
  times the multiplier's power ratio for an approximate circuit (EvoApprox PDK45
  synthesis, or the first-order estimate the family states); E_add = 0.1 pJ
  (32-bit integer accumulator [H14]). A circuit published only as a fraction r of a
  bfloat16 MAC (Mitch-w6) gets E_mul = r * (E_mul(bf16) + E_add(fp32)) - E_add(int32),
  so its MAC is r times this model's bfloat16 MAC.
- Any float operand: E_mul = c0 + c1 * s_w * s_a, the line through [H14]'s fp16
  (1.1 pJ, 11 x 11) and fp32 (3.7 pJ, 24 x 24) multipliers: c1 = 2.6 / 455 pJ,
  c0 = 0.41 pJ (exponent logic and normalisation that do not shrink with the
  significand). E_add = 0.9 pJ: dse accumulates in fp32 (so does its emulation).
- Memory per 64-bit access [H14]: SRAM 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ; DRAM
  1.3-2.6 nJ (1.3 nJ by default). Weights are read once per batch of ``batch``
  images; activations are read and written once per image, both at b_a bits.

[H14] M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, 45 nm, 0.9 V. Presets: ``conf/hardware/*.yaml``.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Literal

from torch import nn

from dse.assignment import Assignment, LayerConfig, TargetableLayer, targetable_layers
from dse.cost.macs import LayerShape
from dse.exceptions import ConfigError
from dse.multipliers import Multiplier, get_multiplier
from dse.numerics.decimal_places import decimal_bits
from dse.numerics.formats import FixedPoint, MiniFloat, parse_format

__all__ = ["FP32", "EnergyModel", "LayerEnergy", "Operand"]


@dataclass(frozen=True)
class Operand:
    """How one multiplier input is represented: float or integer, stored and significand widths."""

    kind: Literal["float", "int"]
    bits: int
    significand: int


FP32 = Operand("float", 32, 24)


@dataclass(frozen=True)
class LayerEnergy:
    """Energy of one layer for one inference, in pJ, split by where it goes."""

    name: str
    weight_bits: int
    activation_bits: int
    multiply_pj: float
    add_pj: float
    weight_memory_pj: float
    activation_memory_pj: float
    multiplier_delay_ns: float | None = None

    @property
    def total_pj(self) -> float:
        return self.multiply_pj + self.add_pj + self.weight_memory_pj + self.activation_memory_pj


@dataclass(frozen=True)
class EnergyModel:
    """Energy constants of a technology, and the formula above. Every constant is required.

    Args:
        name: preset name, logged with every trial.
        fp32_mul_pj, fp16_mul_pj: float multiplications [H14: 3.7, 1.1 pJ].
        fp32_add_pj: fp32 addition [H14: 0.9 pJ].
        int8_mul_pj: 8-bit integer multiplication [H14: 0.2 pJ].
        int32_add_pj: 32-bit integer addition [H14: 0.1 pJ].
        memory_pj_per_64bit: energy of one 64-bit access per memory level [H14].
        weight_memory: level the weights are read from.
        activation_memory: level activations are read from and written to.
        batch: images that share one read of the weights.
    """

    name: str | None = None
    fp32_mul_pj: float | None = None
    fp16_mul_pj: float | None = None
    fp32_add_pj: float | None = None
    int8_mul_pj: float | None = None
    int32_add_pj: float | None = None
    memory_pj_per_64bit: Mapping[str, float] | None = None
    weight_memory: str | None = None
    activation_memory: str | None = None
    batch: int = 1

    def __post_init__(self) -> None:
        missing = [f.name for f in fields(self) if getattr(self, f.name) is None]
        if missing:
            raise ConfigError(
                f"Hardware preset {self.name!r} lacks {missing}; every constant of dse/cost/energy.py must be given "
                "(see conf/hardware/horowitz_45nm.yaml for a complete preset with sources)."
            )
        assert self.memory_pj_per_64bit is not None
        for role in ("weight_memory", "activation_memory"):
            level = getattr(self, role)
            if level not in self.memory_pj_per_64bit:
                raise ConfigError(
                    f"Hardware preset {self.name!r}: {role}={level!r} is not a memory level it defines; "
                    f"known levels: {sorted(self.memory_pj_per_64bit)}. Add its pJ per 64-bit access "
                    "to memory_pj_per_64bit or pick a known level."
                )
        if self.batch < 1:
            raise ConfigError(f"Hardware preset {self.name!r}: batch must be >= 1, got {self.batch}.")

    # -- operands ---------------------------------------------------------------------
    @staticmethod
    def _format_operand(name: str) -> Operand:
        fmt = parse_format(name)
        if isinstance(fmt, MiniFloat):
            return Operand("float", fmt.bits, fmt.man_bits + 1)
        if isinstance(fmt, FixedPoint):
            return Operand("int", fmt.bits, fmt.bits)
        return FP32

    def weight_operand(self, module: TargetableLayer, config: LayerConfig) -> Operand:
        if config.multiplier is not None:
            bits = get_multiplier(config.multiplier).bits
            return Operand("int", bits, bits)
        if config.weight_format is not None:
            return self._format_operand(config.weight_format)
        if config.decimals is not None:
            bits = decimal_bits(float(module.weight.detach().abs().max()), config.decimals)
            return Operand("int", bits, min(bits, FP32.significand) if bits >= FP32.bits else bits)
        return FP32

    def activation_operand(self, config: LayerConfig) -> Operand:
        if config.multiplier is not None:
            bits = get_multiplier(config.multiplier).bits
            return Operand("int", bits, bits)
        if config.activation_format is not None:
            return self._format_operand(config.activation_format)
        return FP32

    def weight_bits(self, module: TargetableLayer, config: LayerConfig) -> int:
        """Storage width of a layer's weights under ``config``."""
        return self.weight_operand(module, config).bits

    # -- per MAC ----------------------------------------------------------------------
    def multiply_pj(self, w: Operand, a: Operand, multiplier: Multiplier | None = None) -> float:
        assert self.int8_mul_pj is not None and self.fp16_mul_pj is not None and self.fp32_mul_pj is not None
        if w.kind == "int" and a.kind == "int":
            energy = self.int8_mul_pj * w.significand * a.significand / 64
            if multiplier is not None and multiplier.mac_vs_bfloat16 is not None:
                return multiplier.mac_vs_bfloat16 * self.bfloat16_mac_pj() - self.add_pj(w, a)
            if multiplier is not None:
                ratio = multiplier.power_ratio
                if ratio is None:
                    warnings.warn(
                        f"Multiplier {multiplier.name!r} has no power figure; its energy is taken as exact.",
                        stacklevel=2,
                    )
                    ratio = 1.0
                energy *= ratio
            return energy
        c1 = (self.fp32_mul_pj - self.fp16_mul_pj) / (24 * 24 - 11 * 11)
        c0 = self.fp16_mul_pj - c1 * 11 * 11
        return c0 + c1 * min(w.significand, 24) * min(a.significand, 24)

    def bfloat16_mac_pj(self) -> float:
        """A bfloat16 multiply (8-bit significands) and its float32 accumulate: the reference of MAC-priced circuits."""
        assert self.fp32_add_pj is not None
        bf16 = Operand("float", 16, 8)
        return self.multiply_pj(bf16, bf16) + self.fp32_add_pj

    def add_pj(self, w: Operand, a: Operand) -> float:
        assert self.int32_add_pj is not None and self.fp32_add_pj is not None
        return self.int32_add_pj if w.kind == "int" and a.kind == "int" else self.fp32_add_pj

    # -- per layer --------------------------------------------------------------------
    def layer_energy(
        self, shape: LayerShape, w: Operand, a: Operand, multiplier: Multiplier | None = None
    ) -> LayerEnergy:
        assert self.memory_pj_per_64bit is not None and self.weight_memory and self.activation_memory
        weight_mem = self.memory_pj_per_64bit[self.weight_memory]
        act_mem = self.memory_pj_per_64bit[self.activation_memory]
        return LayerEnergy(
            name=shape.name,
            weight_bits=w.bits,
            activation_bits=a.bits,
            multiply_pj=shape.macs * self.multiply_pj(w, a, multiplier),
            add_pj=shape.macs * self.add_pj(w, a),
            weight_memory_pj=shape.weight_numel * w.bits / 64 * weight_mem / self.batch,
            activation_memory_pj=(shape.input_numel + shape.output_numel) * a.bits / 64 * act_mem,
            multiplier_delay_ns=multiplier.delay_ns if multiplier is not None else None,
        )

    def estimate(
        self, model: nn.Module, shapes: Mapping[str, LayerShape], assignment: Assignment
    ) -> dict[str, LayerEnergy]:
        """Energy of every layer of ``shapes`` under ``assignment``; a layer dse does not emulate (not a
        Conv1d/Conv2d/Linear: :func:`dse.cost.macs.unemulated_shapes`) runs float32 in every candidate."""
        layers = targetable_layers(model)
        result = {}
        for name, shape in shapes.items():
            if name not in layers:
                result[name] = self.layer_energy(shape, FP32, FP32)
                continue
            config = assignment.get(name, LayerConfig())
            multiplier = get_multiplier(config.multiplier) if config.multiplier else None
            w, a = self.weight_operand(layers[name], config), self.activation_operand(config)
            result[name] = self.layer_energy(shape, w, a, multiplier)
        return result
