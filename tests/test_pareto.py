"""The hypervolume indicator (Optuna's) on fronts whose volume is known by hand."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from dse.tracking.pareto import hypervolume


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
