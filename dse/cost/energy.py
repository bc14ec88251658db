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
- Memory energy per 64-bit access [H14]: SRAM 8 KB 10 pJ, 32 KB 20 pJ, 1 MB 100 pJ;
  DRAM 1.3-2.6 nJ (1.3 nJ by default, the low end). Weights are read once per
  batch of ``batch`` images, activations are read and written once per image.

[H14] M. Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, 45 nm, 0.9 V. Presets: ``conf/hardware/*.yaml``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import torch.nn as nn

from dse.assignment import Assignment, LayerConfig, targetable_layers
from dse.cost.macs import LayerShape
from dse.exceptions import ConfigError
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
        memory_pj_per_64bit: energy of one 64-bit access per memory level [H14].
        weight_memory: level the weights are read from.
        activation_memory: level activations are read from and written to.
        batch: images that share one read of the weights.
    """

    name: str = "horowitz_45nm"
    fp32_mul_pj: float = 3.7
    fp32_add_pj: float = 0.9
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
        if config.decimals is None:
            return _FP32_BITS
        return decimal_bits(float(module.weight.detach().abs().max()), config.decimals)

    def layer_energy(self, shape: LayerShape, weight_bits: int) -> LayerEnergy:
        mul = self.fp32_mul_pj * min(1.0, weight_bits / _FP32_MANTISSA_BITS)
        weight_mem = self.memory_pj_per_64bit[self.weight_memory]
        act_mem = self.memory_pj_per_64bit[self.activation_memory]
        return LayerEnergy(
            name=shape.name,
            weight_bits=weight_bits,
            multiply_pj=shape.macs * mul,
            add_pj=shape.macs * self.fp32_add_pj,
            weight_memory_pj=shape.weight_numel * weight_bits / 64 * weight_mem / self.batch,
            activation_memory_pj=(shape.input_numel + shape.output_numel) * _FP32_BITS / 64 * act_mem,
        )

    def estimate(
        self, model: nn.Module, shapes: Mapping[str, LayerShape], assignment: Assignment
    ) -> dict[str, LayerEnergy]:
        """Energy of every Conv2d/Linear layer of ``model`` under ``assignment``."""
        layers = targetable_layers(model)
        return {
            name: self.layer_energy(shape, self.weight_bits(layers[name], assignment.get(name, LayerConfig())))
            for name, shape in shapes.items()
        }
