"""The cost model: MACs from layer shapes, estimated energy, first-order accelerator latency."""

from .energy import FP32, EnergyModel, LayerEnergy, Operand
from .latency import LatencyModel
from .macs import LayerShape, layer_shapes

__all__ = ["FP32", "EnergyModel", "LatencyModel", "LayerEnergy", "LayerShape", "Operand", "layer_shapes"]
