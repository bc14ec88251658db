"""Replaying a sampler against an exhaustively evaluated grid: how fast it finds the true front.

Each point of the grid (a table with the assignment ``key``, ``accuracy``, ``energy_uj``, the
per-image correctness ``correct`` as packed hex bits, ``n_images`` and ``on_true_front``) was
evaluated once (``dse.candidates.evaluation_cache``). A sampler then runs as dse runs it, every evaluation
looked up instead of computed: the all-exact baseline first, repeats pruned and not counted,
optionally the uniform assignments first (``study.seed_uniform``) and screening
(:mod:`dse.study.screening`) decided on each point's recorded first images, exactly as the
search would. ``benchmarks/search_efficiency.py`` drives it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import optuna
import pandas as pd

from dse.assignment import BASELINE_KEY, assignment_key
from dse.objectives import Objective
from dse.search_spaces import BoundSpace
from dse.study.screening import ScreeningRule, dominates
from dse.study.trial_policy import KEY_ATTR, SCREENED_ATTR, TrialPolicy, enqueue_starting_points
from dse.tracking.pareto import hypervolume, non_dominated, normalized_points

__all__ = [
    "OBJECTIVES",
    "ORACLE",
    "Lookup",
    "Replay",
    "cost_to",
    "hypervolume_history",
    "mark_true_front",
    "replay",
    "trials_to",
    "unpack_correct",
]

OBJECTIVES = [Objective("accuracy", "maximize"), Objective("energy_uj", "minimize")]

# an assignment's evaluation from its key and params: accuracy, energy_uj, n_images, and for
# screening the packed per-image ``correct`` bits and ``on_true_front``
Lookup = Callable[[str, Mapping[str, Any]], Mapping[str, Any]]

# screening's ceiling: prune, at no cost, every trial that the front at that moment dominates at its
# *final* accuracy. No rule that stops dominated trials can save more than this oracle.
ORACLE: Literal["oracle"] = "oracle"


def mark_true_front(table: pd.DataFrame) -> pd.Series:
    """Whether each grid point is non-dominated in (accuracy up, energy down)."""
    return pd.Series(non_dominated(table["accuracy"], table["energy_uj"]), index=table.index)


@dataclass
class Replay:
    """One sampler run against the grid: after each new evaluation, its cost so far (images
    evaluated) and the hypervolume fraction of the true front found; true-front points screened out."""

    costs: list[int] = field(default_factory=list)
    fractions: list[float] = field(default_factory=list)
    points: list[tuple[float, float]] = field(default_factory=list)  # (accuracy, energy) in evaluation order
    true_front_pruned: int = 0
    screened: int = 0
    spent: int = 0  # images evaluated by the whole run (screened trials included)


def replay(
    sampler: optuna.samplers.BaseSampler,
    bound: BoundSpace,
    table: pd.DataFrame | Lookup,
    reference: list[float],
    true_hv: float,
    budget: int,
    screening: ScreeningRule | Literal["oracle"] | None = None,
    seed_uniform: bool = False,
) -> Replay:
    """Run ``sampler`` as dse runs it, every evaluation looked up in the grid (screening replayed on
    each point's recorded per-image correctness: the same decision the search would take).

    ``table`` may also be a :data:`Lookup` (a cached evaluation, for a space too large to
    enumerate): pass ``true_hv=1`` when the front to compare with is not known yet and compute
    the fractions later from ``points`` (:func:`hypervolume_history`).
    """
    lookup = _lookup_in(table) if isinstance(table, pd.DataFrame) else table
    seen: dict[str, tuple[float, float]] = {}  # complete evaluations
    evaluated: set[str] = set()  # complete or screened out: never evaluated again
    result, spent = Replay(), 0
    study = optuna.create_study(directions=["maximize", "minimize"], sampler=sampler)
    enqueue_starting_points(study, bound, seed_uniform, budget)  # the search's own rules (dse.study.trial_policy)
    policy = TrialPolicy(study, budget)

    def screened_out(trial: optuna.Trial, on_true_front: bool) -> None:
        trial.set_user_attr(SCREENED_ATTR, "replayed")  # evaluated: never proposed for evaluation again
        result.screened += 1
        result.true_front_pruned += int(on_true_front)
        if len(evaluated) >= budget:
            trial.study.stop()
        raise optuna.TrialPruned()

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        nonlocal spent
        params = bound.suggest(trial)
        key = assignment_key(bound.assignment(params))
        trial.set_user_attr(KEY_ATTR, key)
        policy.prune_if_duplicate(trial, key)  # as the search: a repeat is not evaluated again
        evaluated.add(key)
        row = lookup(key, params)
        if screening is not None and key != BASELINE_KEY:
            prune, cost = _screened(screening, row, study)
            if prune:
                spent += cost
                screened_out(trial, bool(row["on_true_front"]))
        spent += int(row["n_images"])  # a survivor's first images are not evaluated again
        seen[key] = (float(row["accuracy"]), float(row["energy_uj"]))
        result.points.append(seen[key])
        result.costs.append(spent)
        if len(evaluated) >= budget:
            trial.study.stop()
        return seen[key]

    study.optimize(objective, n_trials=budget * 20)  # proposals, repeats included
    result.spent = spent
    result.fractions = hypervolume_history(result.points, reference, true_hv)
    return result


def _screened(
    screening: ScreeningRule | Literal["oracle"], row: Mapping[str, Any], study: optuna.Study
) -> tuple[bool, int]:
    """Whether screening stops this grid point, and the images it evaluated to decide: the oracle at no cost
    (the current front dominates the point's final accuracy), a rule on the point's recorded first images."""
    if screening == ORACLE:
        final = [float(row["accuracy"]), float(row["energy_uj"])]
        return any(dominates(t.values, final, OBJECTIVES) for t in study.best_trials), 0
    assert isinstance(screening, ScreeningRule)
    n_images = int(row["n_images"])
    mask = unpack_correct(row["correct"], n_images)
    m = min(screening.first_images, n_images)
    front = [list(t.values) for t in study.best_trials]
    decision = screening.decide(int(mask[:m].sum()), m, n_images, {"energy_uj": float(row["energy_uj"])}, front)
    return decision.prune, m


def _lookup_in(table: pd.DataFrame) -> Lookup:
    """A grid's rows by assignment key."""
    by_key = table.set_index("key")

    def lookup(key: str, params: Mapping[str, Any]) -> Mapping[str, Any]:
        return by_key.loc[key]

    return lookup


def hypervolume_history(points: list[tuple[float, float]], reference: list[float], front_hv: float) -> list[float]:
    """After each of ``points`` (in evaluation order), the hypervolume of those so far / ``front_hv``."""
    return [
        hypervolume(normalized_points(np.array(points[: i + 1]), OBJECTIVES, reference)) / front_hv
        for i in range(len(points))
    ]


def unpack_correct(hex_bits: str, n: int) -> np.ndarray:
    """Per-image correctness from its packed hex bits."""
    return np.unpackbits(np.frombuffer(bytes.fromhex(hex_bits), dtype=np.uint8))[:n].astype(bool)


def trials_to(history: list[float], fraction: float) -> int | None:
    """Evaluations until the hypervolume fraction first reaches ``fraction`` (None: never)."""
    return next((i + 1 for i, h in enumerate(history) if h >= fraction - 1e-12), None)


def cost_to(run: Replay, fraction: float) -> int | None:
    """Images evaluated (all trials so far, screened ones included) until ``fraction`` is reached."""
    return next((c for c, h in zip(run.costs, run.fractions, strict=True) if h >= fraction - 1e-12), None)
