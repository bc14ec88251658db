"""The metrics a trial produces, and which of them a study optimises."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from dse.exceptions import ConfigError

__all__ = [
    "DEPLOYED_METRICS",
    "MEASURED_TIME_METRICS",
    "TRIAL_METRICS",
    "MetricBound",
    "Objective",
    "parse_bounds",
    "parse_objectives",
]

# Every metric a trial logs, with its unit; any of them can be an objective.
TRIAL_METRICS: Mapping[str, str] = {
    "accuracy": "top-1 accuracy on the search set, fraction",
    "accuracy_low": "lower end of the 95% Wilson interval of accuracy (binomial over n_images)",
    "accuracy_high": "upper end of the 95% Wilson interval of accuracy",
    "n_images": "search-set images behind accuracy (images of the search half of the test set)",
    "accuracy_top5": "top-5 accuracy on the search set, fraction",
    "accuracy_retrained": "top-1 accuracy on the search set after approximate retraining (retrain.on=each)",
    "energy_uj": "estimated energy per inference, microjoules (dse.cost.energy): the sum of the four below",
    "energy_multiply_uj": "estimated energy of the multiplies per inference, microjoules",
    "energy_accumulate_uj": "estimated energy of the additions per inference, microjoules",
    "energy_weight_memory_uj": "estimated energy of reading the weights per inference, microjoules",
    "energy_activation_memory_uj": "estimated energy of reading and writing activations per inference, microjoules",
    "energy_compute_uj": "estimated energy of the MAC array per inference (multiplies + additions), microjoules",
    "inference_time_s": "measured seconds of one pass over the search set on one thread: (candidate / exact "
    "model, batch-interleaved) x the exact model's time (dse.candidates.evaluation.Evaluator.relative_time)",
    "ms_per_image": "measured milliseconds per image (inference_time_s / images)",
    "mean_weight_bits": "MAC-weighted mean weight width of the Conv2d/Linear layers, bits",
    "modeled_latency_us": "first-order accelerator latency per inference, microseconds (dse.cost.latency)",
    "deployed_latency_ms": "ONNX Runtime on this CPU, batch 1, median ms of runs interleaved with the float32 "
    "export (dse.deployment.runtime); only for spaces whose every choice deploys",
    "deployed_speedup_vs_fp32": "float32 export's deployed_latency_ms / the candidate's (same runs)",
    "deployed_batch_latency_ms": "as deployed_latency_ms at the larger batch (deployment.batch_sizes), ms per batch",
    "deployed_batch_speedup_vs_fp32": "float32 export's deployed_batch_latency_ms / the candidate's",
}

# The metrics measured on this machine's clock (need study.measure_time).
MEASURED_TIME_METRICS = ("inference_time_s", "ms_per_image")
# The metrics of the candidate's ONNX export on ONNX Runtime (measured when an objective or constraint uses one).
DEPLOYED_METRICS = (
    "deployed_latency_ms",
    "deployed_speedup_vs_fp32",
    "deployed_batch_latency_ms",
    "deployed_batch_speedup_vs_fp32",
)


@dataclass(frozen=True)
class Objective:
    name: str
    direction: Literal["maximize", "minimize"]

    def __post_init__(self) -> None:
        if self.name not in TRIAL_METRICS:
            raise ConfigError(f"Unknown objective {self.name!r}; trials report: {', '.join(TRIAL_METRICS)}.")
        if self.direction not in ("maximize", "minimize"):
            raise ConfigError(
                f"Objective {self.name!r}: direction must be maximize or minimize, got {self.direction!r}."
            )


def parse_objectives(spec: Sequence[Mapping[str, str]]) -> list[Objective]:
    """``[{name: accuracy, direction: maximize}, ...]`` -> objectives, at least one, no repeats."""
    objectives = [Objective(str(o["name"]), o["direction"]) for o in spec]  # type: ignore[arg-type]
    if not objectives:
        raise ConfigError("study.objectives is empty; give at least one, e.g. {name: accuracy, direction: maximize}.")
    names = [o.name for o in objectives]
    if len(set(names)) != len(names):
        raise ConfigError(f"study.objectives repeats a metric: {names}.")
    return objectives


@dataclass(frozen=True)
class MetricBound:
    """A feasibility constraint on one trial metric: ``metric <= max`` and/or ``metric >= min``
    (``study.constraints``: e.g. ``{metric: energy_uj, max: 250}``). A trial outside it stays in the
    study but is never on the front."""

    metric: str
    max: float | None = None
    min: float | None = None

    def __post_init__(self) -> None:
        if self.metric not in TRIAL_METRICS:
            raise ConfigError(
                f"study.constraints: unknown metric {self.metric!r}; trials report: {', '.join(TRIAL_METRICS)}."
            )
        if self.max is None and self.min is None:
            raise ConfigError(f"study.constraints: {self.metric!r} needs a max or a min, e.g. {{max: 250}}.")
        if self.max is not None and self.min is not None and self.min > self.max:
            raise ConfigError(f"study.constraints: {self.metric!r} has min {self.min} above max {self.max}.")

    def broken(self, value: float) -> list[str]:
        """What ``value`` breaks of this bound, said for a person ([] when inside it)."""
        said = []
        if self.max is not None and value > self.max:
            said.append(f"{self.metric} = {value:.4g} above its bound {self.max:g} (study.constraints)")
        if self.min is not None and value < self.min:
            said.append(f"{self.metric} = {value:.4g} below its bound {self.min:g} (study.constraints)")
        return said

    def violations(self, value: float) -> dict[str, float]:
        """Optuna's constraint values (feasible when <= 0), by name."""
        out = {}
        if self.max is not None:
            out[f"{self.metric}_max"] = value - self.max
        if self.min is not None:
            out[f"{self.metric}_min"] = self.min - value
        return out


def parse_bounds(spec: Sequence[Mapping[str, object]]) -> list[MetricBound]:
    """``[{metric: energy_uj, max: 250}, ...]`` -> bounds, one per metric."""
    unknown = [sorted(set(b) - {"metric", "max", "min"}) for b in spec if set(b) - {"metric", "max", "min"}]
    if unknown or any("metric" not in b for b in spec):
        raise ConfigError(
            f"study.constraints entries take metric, max and min (got {list(spec)}), e.g. "
            "study.constraints='[{metric: energy_uj, max: 250}]'."
        )
    bounds = [
        MetricBound(
            str(b["metric"]),
            None if b.get("max") is None else float(b["max"]),  # type: ignore[arg-type]
            None if b.get("min") is None else float(b["min"]),  # type: ignore[arg-type]
        )
        for b in spec
    ]
    names = [b.metric for b in bounds]
    if len(set(names)) != len(names):
        raise ConfigError(f"study.constraints repeats a metric: {names}; give max and min in one entry.")
    return bounds
