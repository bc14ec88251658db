"""Number representations of weights and activations: decimal places, formats, integer quantization."""

from .decimal_places import MAX_DECIMALS, MIN_DECIMALS, check_decimals, decimal_bits, round_to_decimals
from .formats import FORMAT_EXAMPLES, FixedPoint, Float32, MiniFloat, NumberFormat, parse_format
from .quantization import QuantParams, activation_qparams, qrange, quantize, weight_qparams

__all__ = [
    "FORMAT_EXAMPLES",
    "MAX_DECIMALS",
    "MIN_DECIMALS",
    "FixedPoint",
    "Float32",
    "MiniFloat",
    "NumberFormat",
    "QuantParams",
    "activation_qparams",
    "check_decimals",
    "decimal_bits",
    "parse_format",
    "qrange",
    "quantize",
    "round_to_decimals",
    "weight_qparams",
]
