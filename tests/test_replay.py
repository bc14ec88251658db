"""Replaying samplers against an exhaustive grid of the tiny CNN (27 assignments, evaluated for real)."""

from __future__ import annotations

import itertools

import numpy as np
import optuna
import pandas as pd
import pytest
from hydra.utils import instantiate

from dse.assignment import assignment_key
from dse.config_building import build_trained_model, candidate_evaluator
from dse.study.replay import OBJECTIVES, ORACLE, mark_true_front, replay
from dse.study.screening import ScreeningRule
from dse.tracking.pareto import hypervolume, normalized_points
from tests.conftest import compose_config

SPACE = ["space.groups=[pointwise,depthwise,first_conv]", "space.decimals=[1,2]", "data.test_subset=1000"]


@pytest.fixture(scope="module")
def grid() -> tuple:
    cfg = compose_config(["study=quickstart", *SPACE])
    model = build_trained_model(cfg.model)
    bound = instantiate(cfg.space).bind(model, dict(cfg.model.layer_groups))
    candidates = candidate_evaluator(cfg, model)
    rows = []
    names = list(bound.grid())
    for values in itertools.product(*bound.grid().values()):
        params = dict(zip(names, values, strict=True))
        assignment = bound.assignment(params)
        correct, _ = candidates.evaluator.correct(candidates.candidate(assignment))
        rows.append(
            {
                "key": assignment_key(assignment),
                "accuracy": float(correct.float().mean()),
                "energy_uj": candidates.costs(candidates.cost_table(candidates.model, assignment))["energy_uj"],
                "correct": np.packbits(correct.numpy()).tobytes().hex(),
                "n_images": len(correct),
            }
        )
    table = pd.DataFrame(rows)
    table["on_true_front"] = mark_true_front(table)
    base = table[table["key"] == assignment_key({})].iloc[0]
    reference = [0.0, 1.1 * float(base["energy_uj"])]
    true_hv = hypervolume(normalized_points(table[["accuracy", "energy_uj"]].to_numpy(), OBJECTIVES, reference))
    return bound, table, reference, true_hv


def test_given_every_point_the_replay_reaches_the_whole_front(grid: tuple) -> None:
    bound, table, reference, true_hv = grid
    run = replay(optuna.samplers.RandomSampler(seed=0), bound, table, reference, true_hv, budget=len(table))
    assert len(run.fractions) == len(table) == 27
    assert run.fractions[-1] == pytest.approx(1.0)
    assert all(b >= a for a, b in itertools.pairwise(run.fractions))
    assert run.costs[-1] == 27 * 1000  # every image of every point, nothing screened


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_screening_never_prunes_the_true_front_and_costs_less(grid: tuple, seed: int) -> None:
    bound, table, reference, true_hv = grid
    rule = ScreeningRule(OBJECTIVES, first_images=200, alpha=1e-3)
    sampler = optuna.samplers.TPESampler(seed=seed, n_startup_trials=10, multivariate=True)
    run = replay(sampler, bound, table, reference, true_hv, budget=len(table), screening=rule)
    assert run.true_front_pruned == 0
    assert run.fractions[-1] == pytest.approx(1.0)  # every true-front point was evaluated in full
    assert run.screened > 0 and run.costs[-1] < 27 * 1000  # screened points cost their first images only


def test_the_screening_oracle_stops_only_dominated_trials(grid: tuple) -> None:
    """The ceiling the benchmark reports: trials the front dominates at their final accuracy cost nothing."""
    bound, table, reference, true_hv = grid
    sampler = optuna.samplers.TPESampler(seed=0, n_startup_trials=10, multivariate=True)
    run = replay(sampler, bound, table, reference, true_hv, budget=len(table), screening=ORACLE)
    assert run.true_front_pruned == 0 and run.fractions[-1] == pytest.approx(1.0)
    assert run.screened > 0 and run.costs[-1] == 1000 * (len(table) - run.screened)
