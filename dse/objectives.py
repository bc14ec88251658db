"""The metrics a trial produces, and which of them a study optimises."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from dse.exceptions import ConfigError

__all__ = ["MEASURED_TIME_METRICS", "TRIAL_METRICS", "Objective", "parse_objectives"]

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
}

# The metrics measured on this machine's clock (need study.measure_time).
MEASURED_TIME_METRICS = ("inference_time_s", "ms_per_image")


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
