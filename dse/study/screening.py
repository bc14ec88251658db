"""Multi-fidelity screening: stop a trial early when even an optimistic accuracy cannot reach the front.

A candidate is first evaluated on the first ``first_images`` images of the search set (its
costs, from the cost model, are known exactly before any image). With ``c`` of those ``m``
right, the one-sided Clopper-Pearson bound at confidence ``1 - alpha``,

    p_up = max { p : P(X <= c | X ~ Binomial(m, p)) >= alpha },

is the highest per-image accuracy still plausible; the accuracy on the whole set of ``N``
images is then at most ``(c + (N - m) p_up) / N`` (the ``m`` seen images are known). If some
trial of the current front is at least as good as that optimistic candidate in every
objective and better in one (or the bound is below the feasibility limit
``baseline - max_accuracy_drop``), the candidate cannot be on the final front unless its
remaining images are far better than its first ones: the trial ends PRUNED with its partial
accuracy, the bound and the reason. Otherwise it is evaluated on the full set.

Optuna's pruners handle one objective; this rule is dse's own. It needs every objective other
than accuracy to be known without evaluating (energy, modeled latency, weight bits): with a
measured time or another accuracy among the objectives, screening refuses to run.

``alpha`` is a per-trial risk under the assumption that the first ``m`` images are a random
sample of the search set. They are: the evaluator goes through the set in a seeded shuffle
(``evaluation.order_seed``), since the shipped subset and CIFAR-10's test files are class-major
and their first images are a few classes (a candidate that is worse on those classes was once
pruned from the true front that way). Sampling without replacement from the finite set makes
the binomial bound conservative. ``benchmarks/search_efficiency.py`` measures on an exhaustive
grid that no point of the true front is pruned.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from scipy import stats

from dse.candidates.evaluator import ENERGY_COMPONENTS
from dse.exceptions import ConfigError
from dse.objectives import Objective

__all__ = ["ScreeningDecision", "ScreeningRule", "binomial_cdf", "clopper_pearson_upper", "dominates"]

# objectives known before any image is evaluated (the cost model's)
_DETERMINISTIC = ("energy_uj", *ENERGY_COMPONENTS, "energy_compute_uj", "modeled_latency_us", "mean_weight_bits")


def binomial_cdf(c: int, n: int, p: float) -> float:
    """P(X <= c) for X ~ Binomial(n, p) (scipy)."""
    return float(stats.binom.cdf(c, n, p))


def clopper_pearson_upper(c: int, n: int, alpha: float) -> float:
    """One-sided exact (Clopper-Pearson) upper confidence bound, at confidence ``1 - alpha``, on a binomial
    proportion after ``c`` successes in ``n`` trials (scipy's ``binomtest``)."""
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}.")
    test = stats.binomtest(c, n, alternative="less")
    return float(test.proportion_ci(confidence_level=1 - alpha, method="exact").high)


@dataclass(frozen=True)
class ScreeningDecision:
    prune: bool
    partial_accuracy: float
    upper_bound: float  # optimistic accuracy on the whole set
    images_seen: int
    reason: str


@dataclass(frozen=True)
class ScreeningRule:
    """When to stop a trial after its first images.

    Attributes:
        objectives: the study's (accuracy plus cost-model metrics only).
        first_images: images evaluated before deciding (a prefix of the search set).
        alpha: per-trial risk of the optimistic bound (0.001: a 99.9% one-sided bound).
        min_accuracy: the feasibility limit (baseline - max_accuracy_drop), or None.
    """

    objectives: Sequence[Objective]
    first_images: int = 500
    alpha: float = 1e-3
    min_accuracy: float | None = None

    def __post_init__(self) -> None:
        others = [o.name for o in self.objectives if o.name != "accuracy"]
        unknown = [n for n in others if n not in _DETERMINISTIC]
        if "accuracy" not in [o.name for o in self.objectives] or unknown:
            raise ConfigError(
                f"screening needs top-1 accuracy as an objective and every other objective known from the cost "
                f"model ({', '.join(_DETERMINISTIC)}); this study also optimises {unknown or 'no accuracy'}. "
                "Set screening.enabled=false or drop those objectives."
            )
        if self.first_images < 1:
            raise ConfigError(f"screening.first_images must be >= 1, got {self.first_images}.")
        if not 0 < self.alpha < 1:
            raise ConfigError(f"screening.alpha must be in (0, 1), got {self.alpha}.")

    def decide(
        self, correct: int, seen: int, total: int, costs: dict[str, float], front: Sequence[Sequence[float]]
    ) -> ScreeningDecision:
        """``correct`` of the first ``seen`` of ``total`` images; ``costs`` the candidate's other objectives;
        ``front`` the objective vectors (study order) of the current front's trials."""
        partial = correct / seen
        if seen >= total:
            return ScreeningDecision(False, partial, partial, seen, "evaluated in full")
        p_up = clopper_pearson_upper(correct, seen, self.alpha)
        bound = (correct + (total - seen) * p_up) / total
        if self.min_accuracy is not None and bound < self.min_accuracy:
            return ScreeningDecision(
                True,
                partial,
                bound,
                seen,
                f"optimistic accuracy {bound:.4f} < feasibility limit {self.min_accuracy:.4f}",
            )
        optimistic = [bound if o.name == "accuracy" else costs[o.name] for o in self.objectives]
        for member in front:
            if dominates(member, optimistic, self.objectives):
                return ScreeningDecision(
                    True,
                    partial,
                    bound,
                    seen,
                    f"even at accuracy {bound:.4f} dominated by a front trial {list(member)}",
                )
        return ScreeningDecision(False, partial, bound, seen, "may reach the front")


def dominates(a: Sequence[float], b: Sequence[float], objectives: Sequence[Objective]) -> bool:
    """Whether objective vector ``a`` is at least as good as ``b`` in every objective and better in one."""
    better = False
    for x, y, o in zip(a, b, objectives, strict=True):
        if o.direction == "maximize":
            x, y = -x, -y
        if x > y:
            return False
        better |= x < y
    return better
