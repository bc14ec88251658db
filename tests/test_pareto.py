"""The hypervolume indicator (Optuna's) on fronts whose volume is known by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from dse.tracking.pareto import hypervolume, zoomed_cost_range, zoomed_range


@pytest.mark.parametrize(
    ("points", "volume"),
    [
        ([[0.5]], 0.5),
        ([[0.5, 0.5]], 0.25),
        ([[0.2, 0.6], [0.6, 0.2]], 0.8 * 0.4 + 0.4 * 0.8 - 0.4 * 0.4),
        ([[0.2, 0.6], [0.6, 0.2], [0.7, 0.7]], 0.48),  # a dominated point adds nothing
        ([[0.5, 0.5, 0.5]], 0.125),
        ([[0.0, 0.5, 0.5], [0.5, 0.0, 0.5]], 0.25 + 0.25 - 0.125),
        ([[1.2, 0.1], [0.5, 1.0]], 0.0),  # nothing strictly inside the reference box
    ],
)
def test_hypervolume_of_fronts_known_by_hand(points: list[list[float]], volume: float) -> None:
    assert hypervolume(np.array(points)) == pytest.approx(volume, abs=1e-12)


def test_hypervolume_grows_as_points_are_added() -> None:
    rng = np.random.default_rng(0)
    points = rng.random((40, 3))
    history = [hypervolume(points[: i + 1]) for i in range(len(points))]
    assert all(b >= a for a, b in itertools.pairwise(history)) and history[-1] > history[0]


def test_the_zoomed_panel_spans_the_front_not_the_trials() -> None:
    """The flagship case: front points at 87.6-88.0% among trials down to 10% (chance)."""
    front = pd.DataFrame({"accuracy": [0.876, 0.878, 0.880], "energy_uj": [300.0, 350.0, 400.0]})
    references = pd.DataFrame({"accuracy": [0.8822, 0.10], "energy_uj": [1599.0, 100.0]})  # exact, a bad uniform
    low, high = zoomed_range(front, references, "accuracy")
    assert 0.87 < low < 0.876 and 0.8822 < high < 0.885  # the front's 0.4 points fill most of the panel
    assert (0.880 - 0.876) / (high - low) > 0.4  # on a 10-90% axis: 0.05
    assert zoomed_range(front.iloc[:0], references, "accuracy") is None


def test_the_zoomed_panel_spans_the_fronts_costs_not_the_exact_models() -> None:
    """The multiplier study's case: the front at 9.9-10.5 uJ, a competing uniform setting at 10.46 uJ, the exact
    model at 125 uJ. The cost axis spans the front and that uniform point; the failed and the dominated uniform
    ones and the exact model stay off it (the plot names the exact model)."""
    front = pd.DataFrame({"accuracy": [0.864, 0.866, 0.868], "energy_uj": [9.9, 10.2, 10.5]})
    # competing: 10.46 uJ (between front points, not dominated); dominated: 60 uJ at 86.6%; failed: 7 uJ at 10%
    uniform = pd.DataFrame({"accuracy": [0.867, 0.10, 0.866], "energy_uj": [10.46, 7.0, 60.0]})
    exact = pd.DataFrame({"accuracy": [0.87], "energy_uj": [125.0]})
    y_range = zoomed_range(front, pd.concat([uniform, exact]), "accuracy")
    low, high = zoomed_cost_range(front, uniform, "energy_uj", "accuracy", y_range)
    assert 9.7 < low < 9.9 and 10.5 < high < 10.7
    assert zoomed_cost_range(front.iloc[:0], uniform.iloc[:0], "energy_uj", "accuracy", y_range) is None
