"""Emulating approximate multipliers in Conv2d/Linear layers, bit-exactly.

- :mod:`.reference`: unfold + one lookup per product (the oracle);
- :mod:`._separable`: exact conv + integer low-rank error convolutions (fast, low-rank tables);
- :mod:`._fused`: the same factors as one lookup (or a floor) + one conv (signed tables);
- :mod:`._exact_sums`: integer sums kept exact in floating point;
- :mod:`._tables`: weight-specific lookup tables (any table);
- :mod:`.path_choice`: which of them a layer takes, chosen once;
- :mod:`.emulated`: what every emulated layer shares (quantization, calibration, the paths' dispatch);
- :mod:`.layers`: the drop-in ``ApproxConv2d`` / ``ApproxLinear``;
- :mod:`.recurrent`: GRU / LSTM / RNN unrolled into one Linear per weight matrix, so each takes a multiplier;
- :mod:`.calibration`: activation ranges measured once;
- :mod:`.error_stats`, :mod:`.error_model`: a fitted error model, an optional fast training forward.
"""

from .calibration import calibrate_ranges
from .emulated import EmulatedLayer
from .error_model import fit_error_models, use_error_model
from .error_stats import LayerErrorModel
from .layers import ApproxConv1d, ApproxConv2d, ApproxLinear, EmulationPath, approximate_layer, training_memory_format
from .recurrent import UnrolledRecurrent, bounded_state_ranges, unroll_recurrent
from .reference import lut_conv2d_reference, lut_linear_reference

__all__ = [
    "ApproxConv1d",
    "ApproxConv2d",
    "ApproxLinear",
    "EmulatedLayer",
    "EmulationPath",
    "LayerErrorModel",
    "UnrolledRecurrent",
    "approximate_layer",
    "bounded_state_ranges",
    "calibrate_ranges",
    "fit_error_models",
    "lut_conv2d_reference",
    "lut_linear_reference",
    "training_memory_format",
    "unroll_recurrent",
    "use_error_model",
]
