"""First-order accelerator latency of one inference, per layer (a model, never a measurement).

    t_l = MACs_l / (PE_l * f) + (W_l * b_w + (A_in + A_out) * b_a) / 8 / bandwidth

- PE_l: MAC units working on layer l. With ``iso_area`` the silicon budget of
  ``pe_count`` fp32 MAC units is kept, and a narrower multiplier fits more units in
  it: PE_l = pe_count * E_mul(fp32) / E_mul(l), taking multiplier area proportional
  to its energy (first order: both track the partial-product array). This is how
  narrow formats buy speed in Hill et al. (2017).
- f: ``clock_ghz``, lowered to 1 / delay of the slowest chosen multiplier whose
  delay is known (EvoApprox reports PDK45 delays) when that is the tighter limit.
- Compute and memory do not overlap (a sum, not a roofline max): pessimistic, stated.

The measured wall-clock time of the emulation is reported beside it (``inference_time_s``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from dse.assignment import Assignment
from dse.cost.energy import LayerEnergy
from dse.cost.macs import LayerShape
from dse.exceptions import ConfigError

__all__ = ["LatencyModel"]


@dataclass(frozen=True)
class LatencyModel:
    """An accelerator: ``pe_count`` fp32 MAC units at ``clock_ghz``, ``memory_bandwidth_gbps`` GB/s."""

    name: str = "accelerator"
    pe_count: int = 256
    clock_ghz: float = 1.0
    memory_bandwidth_gbps: float = 25.6
    iso_area: bool = True
    fp32_mul_pj: float = 3.7

    def __post_init__(self) -> None:
        for field_name in ("pe_count", "clock_ghz", "memory_bandwidth_gbps", "fp32_mul_pj"):
            if not getattr(self, field_name) > 0:
                raise ConfigError(
                    f"Latency preset {self.name!r}: {field_name} must be > 0, got {getattr(self, field_name)}."
                )

    def clock_hz(self, energies: Mapping[str, LayerEnergy]) -> float:
        delays = [e.multiplier_delay_ns for e in energies.values() if e.multiplier_delay_ns]
        limit = min([self.clock_ghz] + [1.0 / d for d in delays])
        return limit * 1e9

    def estimate(
        self,
        shapes: Mapping[str, LayerShape],
        energies: Mapping[str, LayerEnergy],
        assignment: Assignment | None = None,
    ) -> dict[str, float]:
        """Seconds per layer for one inference."""
        f = self.clock_hz(energies)
        out = {}
        for name, shape in shapes.items():
            e = energies[name]
            pes = float(self.pe_count)
            if self.iso_area and shape.macs:
                pes *= self.fp32_mul_pj / (e.multiply_pj / shape.macs)
            compute = shape.macs / (pes * f)
            traffic_bytes = (
                shape.weight_numel * e.weight_bits + (shape.input_numel + shape.output_numel) * e.activation_bits
            ) / 8
            out[name] = compute + traffic_bytes / (self.memory_bandwidth_gbps * 1e9)
        return out
