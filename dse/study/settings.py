"""The settings of a study's loop (the ``study`` config group, as the command built them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from dse.exceptions import ConfigError
from dse.objectives import DEPLOYED_METRICS, MEASURED_TIME_METRICS, MetricBound, Objective

__all__ = ["StudySettings"]


@dataclass(frozen=True)
class StudySettings:
    """What the loop needs besides the study itself (the ``study`` config group).

    Attributes:
        n_trials: target number of COMPLETE trials for the whole study (>= 1).
        objectives: optimised metrics, in the study's direction order.
        max_accuracy_drop: feasibility constraint (fraction in [0, 1], e.g. 0.01), or None.
        max_duplicate_streak: stop after this many duplicate proposals in a row.
        max_failure_streak: stop after this many failed trials in a row (a broken setup, not bad luck).
        measure_time: measure inference time (needed if it is an objective).
        seed_uniform: start with the uniform assignments (every parameter at one choice, for each choice).
        constraints: bounds on other metrics (``study.constraints``); a trial outside them is infeasible.
    """

    n_trials: int
    objectives: Sequence[Objective]
    max_accuracy_drop: float | None = None
    max_duplicate_streak: int = 50
    max_failure_streak: int = 5
    measure_time: bool = False
    seed_uniform: bool = False
    constraints: Sequence[MetricBound] = ()

    @property
    def deploys(self) -> bool:
        """Whether trials are exported and timed on ONNX Runtime (an objective or constraint needs it)."""
        used = {o.name for o in self.objectives} | {b.metric for b in self.constraints}
        return bool(used & set(DEPLOYED_METRICS))

    def __post_init__(self) -> None:
        if isinstance(self.n_trials, bool) or not isinstance(self.n_trials, int) or self.n_trials < 1:
            raise ConfigError(
                f"study.n_trials={self.n_trials!r}: the budget is the number of COMPLETE trials the study should "
                "hold, a whole number >= 1 (e.g. study.n_trials=20)."
            )
        if self.max_accuracy_drop is not None and not 0.0 <= self.max_accuracy_drop <= 1.0:
            raise ConfigError(
                f"study.max_accuracy_drop={self.max_accuracy_drop!r} is a fraction of accuracy in [0, 1] "
                "(0.05 = 5 points), or null for no constraint."
            )
        for name in ("max_duplicate_streak", "max_failure_streak"):
            if getattr(self, name) < 1:
                raise ConfigError(f"study.{name}={getattr(self, name)!r} must be >= 1.")
        if not self.measure_time and any(o.name in MEASURED_TIME_METRICS for o in self.objectives):
            raise ConfigError(
                "study.measure_time=false, but an objective is a measured time; enable it or drop that objective."
            )
        if not self.measure_time and any(b.metric in MEASURED_TIME_METRICS for b in self.constraints):
            raise ConfigError(
                "study.measure_time=false, but a constraint bounds a measured time; enable it or drop that constraint."
            )
        if any(b.metric == "accuracy_retrained" for b in self.constraints):
            raise ConfigError(
                "study.constraints cannot bound accuracy_retrained (not every trial is retrained); "
                "use study.max_accuracy_drop, which judges the retrained accuracy when that is an objective."
            )
