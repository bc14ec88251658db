"""First-order energy model of one inference, per layer, in picojoules.

For a layer with MACs M, weights W (at b_w bits) and activations A_in, A_out
(at 32 bits, fp32):

    E = M * (E_mul + E_add) + W * b_w / 64 * E_mem(weights) / batch
        + (A_in + A_out) * 32 / 64 * E_mem(activations)

- Exact layers are fp32: E_mul = 3.7 pJ, E_add = 0.9 pJ [H14].
- Weights rounded to d decimals are b_w-bit fixed point (``decimal_bits``)
  multiplied into fp32 activations: the multiplier's 24x24-bit mantissa array
  shrinks to 24 x b_w, so E_mul = 3.7 pJ * min(1, b_w / 24). Array-multiplier
  energy grows with the product of the operand widths: [H14] gives 0.2 pJ for
  8x8-bit and 3.1 pJ for 32x32-bit integer multiplication (ratio 15.5 ~ 16).
  Additions stay fp32 (0.9 pJ): the activations are not narrowed.
- Layers on an approximate multiplier run b-bit integer arithmetic (b = the
  multiplier's operand width, 8 for every table shipped): E_mul = 0.2 pJ * (b/8)^2
  (8-bit integer multiply [H14], array energy ~ width^2) times the multiplier's
  power ratio to the exact circuit of the same width (EvoApprox: PDK45 synthesis;
  parametric families: the first-order estimate they state), E_add = 0.1 pJ
  (32-bit integer accumulator [H14]); weights and activations move at b bits.
- Memory energy per 64-bit access [H14]: SRAM 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ;
  DRAM 1.3-2.6 nJ (1.3 nJ by default, the low end). Weights are read once per
  batch of ``batch`` images, activations are read and written once per image.

[H14] M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, 45 nm, 0.9 V. Presets: ``conf/hardware/*.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import warnings

import torch.nn as nn

from dse.assignment import Assignment, LayerConfig, targetable_layers
from dse.cost.macs import LayerShape
from dse.exceptions import ConfigError
from dse.multipliers import Multiplier, get_multiplier
from dse.numerics.decimal_places import decimal_bits

__all__ = ["EnergyModel", "LayerEnergy"]

_FP32_BITS = 32
_FP32_MANTISSA_BITS = 24  # 23 stored + the implicit leading one


@dataclass(frozen=True)
class LayerEnergy:
    """Energy of one layer for one inference, in pJ, split by where it goes."""

    name: str
    weight_bits: int
    multiply_pj: float
    add_pj: float
    weight_memory_pj: float
    activation_memory_pj: float

    @property
    def total_pj(self) -> float:
        return self.multiply_pj + self.add_pj + self.weight_memory_pj + self.activation_memory_pj


@dataclass(frozen=True)
class EnergyModel:
    """Energy constants of a technology, and the formula above.

    Args:
        name: preset name, logged with every trial.
        fp32_mul_pj: fp32 multiplication [H14: 3.7 pJ].
        fp32_add_pj: fp32 addition [H14: 0.9 pJ].
        int8_mul_pj: 8-bit integer multiplication [H14: 0.2 pJ].
        int32_add_pj: 32-bit integer addition, the accumulator of integer layers [H14: 0.1 pJ].
        memory_pj_per_64bit: energy of one 64-bit access per memory level [H14].
        weight_memory: level the weights are read from.
        activation_memory: level activations are read from and written to.
        batch: images that share one read of the weights.
    """

    name: str = "horowitz_45nm"
    fp32_mul_pj: float = 3.7
    fp32_add_pj: float = 0.9
    int8_mul_pj: float = 0.2
    int32_add_pj: float = 0.1
    memory_pj_per_64bit: Mapping[str, float] = field(
        default_factory=lambda: {"sram_8kb": 10.0, "sram_32kb": 20.0, "sram_1mb": 100.0, "dram": 1300.0}
    )
    weight_memory: str = "dram"
    activation_memory: str = "sram_1mb"
    batch: int = 1

    def __post_init__(self) -> None:
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

    def weight_bits(self, module: nn.Module, config: LayerConfig) -> int:
        """Storage width of a layer's weights under ``config``."""
        if config.multiplier is not None:
            return get_multiplier(config.multiplier).bits
        if config.decimals is None:
            return _FP32_BITS
        return decimal_bits(float(module.weight.detach().abs().max()), config.decimals)

    def layer_energy(self, shape: LayerShape, weight_bits: int, multiplier: Multiplier | None = None) -> LayerEnergy:
        if multiplier is None:
            mul = self.fp32_mul_pj * min(1.0, weight_bits / _FP32_MANTISSA_BITS)
            add, act_bits = self.fp32_add_pj, _FP32_BITS
        else:
            ratio = multiplier.power_ratio
            if ratio is None:
                warnings.warn(f"Multiplier {multiplier.name!r} has no power figure; its energy is taken as exact.", stacklevel=2)
                ratio = 1.0
            mul = self.int8_mul_pj * (multiplier.bits / 8) ** 2 * ratio
            add, act_bits = self.int32_add_pj, multiplier.bits
        weight_mem = self.memory_pj_per_64bit[self.weight_memory]
        act_mem = self.memory_pj_per_64bit[self.activation_memory]
        return LayerEnergy(
            name=shape.name,
            weight_bits=weight_bits,
            multiply_pj=shape.macs * mul,
            add_pj=shape.macs * add,
            weight_memory_pj=shape.weight_numel * weight_bits / 64 * weight_mem / self.batch,
            activation_memory_pj=(shape.input_numel + shape.output_numel) * act_bits / 64 * act_mem,
        )

    def estimate(
        self, model: nn.Module, shapes: Mapping[str, LayerShape], assignment: Assignment
    ) -> dict[str, LayerEnergy]:
        """Energy of every Conv2d/Linear layer of ``model`` under ``assignment``."""
        layers = targetable_layers(model)
        result = {}
        for name, shape in shapes.items():
            config = assignment.get(name, LayerConfig())
            multiplier = get_multiplier(config.multiplier) if config.multiplier else None
            result[name] = self.layer_energy(shape, self.weight_bits(layers[name], config), multiplier)
        return result
