"""A trial that violates its constraint is on no front dse reports: tables, tags, plots' data, budget rows,
compare and hypervolume all leave it out, and all agree with Optuna's own ``study.best_trials``.

The study is real (Optuna 5 stores constraints as ``constraints:<name>`` system attributes); some of its
infeasible trials would dominate the feasible ones if they counted.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import optuna
import pytest

from dse.assignment import BASELINE_KEY
from dse.compare import compare_studies
from dse.objectives import Objective
from dse.optuna_internals import is_feasible
from dse.tracking.mlflow_tracker import MlflowTracker
from dse.tracking.pareto import front_hypervolume, front_table, hypervolume, normalized_points, trials_table
from dse.tracking.summary import energy_budget_table

OBJECTIVES = [Objective("accuracy", "maximize"), Objective("energy_uj", "minimize")]
BASELINE = 0.90
LIMIT = 0.05  # a trial losing more than 5 points is infeasible
# (accuracy, energy): the baseline, feasible points, and infeasible ones that beat them on energy
POINTS = [
    (0.90, 100.0),  # baseline
    (0.89, 60.0),
    (0.87, 40.0),
    (0.86, 45.0),  # dominated by (0.87, 40)
    (0.80, 10.0),  # infeasible: -10 points, cheapest of all
    (0.84, 20.0),  # infeasible: -6 points
    (0.851, 30.0),  # feasible by a hair: -4.9 points
]


def constrained_study(tracker: MlflowTracker | None = None) -> optuna.Study:
    study = optuna.create_study(directions=["maximize", "minimize"], study_name="constrained")
    for i in range(len(POINTS)):
        study.enqueue_trial({"i": i})
    if tracker is not None:
        tracker.open_parent(study, {"study": study.study_name})

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        if tracker is not None:  # a run per trial, as the search makes them
            tracker.end_trial(tracker.start_trial(trial, {}), {})
        acc, energy = POINTS[trial.suggest_int("i", 0, len(POINTS) - 1)]
        trial.set_user_attr("accuracy", acc)
        trial.set_user_attr("energy_uj", energy)
        trial.set_user_attr("assignment_key", BASELINE_KEY if trial.number == 0 else f"k{trial.number}")
        trial.set_constraint("accuracy_drop", (BASELINE - acc) - LIMIT)
        return acc, energy

    study.optimize(objective, n_trials=len(POINTS))
    return study


@pytest.fixture
def study() -> optuna.Study:
    return constrained_study()


def _infeasible(study: optuna.Study) -> set[int]:
    return {t.number for t in study.trials if any(v > 0 for v in t.constraints.values())}


def test_constraints_are_read_as_optuna_judges_them(study: optuna.Study) -> None:
    assert _infeasible(study) == {4, 5}
    assert [is_feasible(t) for t in study.trials] == [True, True, True, True, False, False, True]
    assert {t.number for t in study.best_trials} == {0, 1, 2, 6}  # Optuna's own front, feasible only


def test_tables_plots_and_budget_rows_leave_infeasible_trials_out(study: optuna.Study) -> None:
    everything = trials_table(study, OBJECTIVES)
    assert set(everything.loc[~everything["feasible"], "trial"]) == {4, 5}  # what the plots grey out
    front = front_table(study, OBJECTIVES)
    assert set(front["trial"]) == {t.number for t in study.best_trials} == {0, 1, 2, 6}
    budget = energy_budget_table(everything, baseline_energy=100.0)
    listed = {int(t) for t in budget["trial"] if t != ""}
    assert listed.isdisjoint({4, 5})
    # at 25% of the baseline's energy only infeasible trials fit: none is offered
    assert budget.iloc[1]["best top-1 (search set)"] == "none fits"


def test_hypervolume_counts_the_feasible_front_only(study: optuna.Study) -> None:
    reference = [0.0, 110.0]
    feasible = np.array([[t.values[0], t.values[1]] for t in study.best_trials])
    expected = hypervolume(normalized_points(feasible, OBJECTIVES, reference))
    assert front_hypervolume(study, OBJECTIVES, reference) == pytest.approx(expected)
    every = np.array([t.values for t in study.trials])
    assert hypervolume(normalized_points(every, OBJECTIVES, reference)) > expected  # infeasible ones would add


def test_compare_leaves_infeasible_trials_out(study: optuna.Study) -> None:
    comparison = compare_studies({"constrained": study})
    assert set(comparison.points["trial"]) == {0, 1, 2, 3, 6}
    assert set(comparison.points.loc[comparison.points["on_front"], "trial"]) == {0, 1, 2, 6}
    assert comparison.summary.iloc[0]["feasible_trials"] == 5


def test_pareto_tags_follow_the_feasible_front(tmp_path: Path) -> None:
    tracker = MlflowTracker(f"sqlite:///{tmp_path}/mlflow.db", artifact_location=str(tmp_path / "artifacts"))
    study = constrained_study(tracker)
    tracker.log_front(study, OBJECTIVES, None, len(study.trials), plots=True)
    client = mlflow.MlflowClient(tracker.tracking_uri)
    tags = {t.number: client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["pareto"] for t in study.trials}
    assert {n for n, on in tags.items() if on == "true"} == {t.number for t in study.best_trials}
