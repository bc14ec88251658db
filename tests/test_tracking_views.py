"""What a person finds in MLflow after a search: tags, tables, curves and plots that match the study."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import mlflow
import numpy as np
import pytest
from optuna.trial import TrialState

from dse.objectives import Objective
from dse.search import end_of_search_message, run_search
from dse.tracking.mlflow_tracker import MlflowTracker
from dse.tracking.pareto import hypervolume, normalized_points
from tests.conftest import FAST, compose_config

pytestmark = pytest.mark.slow
SEARCH = ["study=quickstart", "study.measure_time=false", "tracking.plot_every=1", *FAST]
OBJECTIVES = "study.objectives=[{name: accuracy, direction: maximize}, {name: energy_uj, direction: minimize}]"


def _check(workdir: Path, n_trials: int) -> None:
    result = run_search(compose_config([*SEARCH, OBJECTIVES, f"study.n_trials={n_trials}"]))
    study, parent = result.study, result.parent_run_id
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    front = {t.number for t in study.best_trials}
    complete = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(complete) == n_trials
    for t in complete:  # every trial's run is tagged as the front is now
        assert client.get_run(t.user_attrs["mlflow_run_id"]).data.tags["pareto"] == str(t.number in front).lower()
    # the front as a table the UI renders, equal to the study's
    local = Path(client.download_artifacts(parent, "pareto/pareto_front_table.json", str(workdir / "dl")))
    table = json.loads(local.read_text())
    assert sorted(row[table["columns"].index("trial")] for row in table["data"]) == sorted(front)
    # one hypervolume point per complete trial, never decreasing, the last equal to the indicator's value
    history = sorted(client.get_metric_history(parent, "hypervolume"), key=lambda m: m.step)
    assert [m.step for m in history][-1] == n_trials
    values = [m.value for m in history]
    assert all(b >= a - 1e-12 for a, b in itertools.pairwise(values))
    objectives = [Objective("accuracy", "maximize"), Objective("energy_uj", "minimize")]
    points = normalized_points(
        np.array([t.values for t in study.best_trials]), objectives, study.user_attrs["hypervolume_reference"]
    )
    assert values[-1] == pytest.approx(hypervolume(points))
    names = {a.path for a in client.list_artifacts(parent, "pareto")}  # type: ignore[arg-type]
    assert {"pareto/pareto_front.html", "pareto/pareto_front.png", "pareto/pareto_assignments.png"} <= names
    # the end of the search says what it found and where to look
    tracker = MlflowTracker(f"sqlite:///{workdir}/mlruns/mlflow.db")
    tracker.parent_run_id = parent
    message = end_of_search_message(study, result.front, tracker)
    rows = [line for line in message.splitlines() if line.strip().split(" ")[0].isdigit()]
    assert sorted(int(r.split()[0]) for r in rows) == sorted(front)
    for t in study.best_trials:  # one format a column: 87.00 beside 87.85, never 87 beside 87.85
        assert f"{100 * t.user_attrs['accuracy']:.2f}" in message and f"{t.user_attrs['energy_uj']:.2f}" in message
    assert f"mlflow ui --backend-store-uri sqlite:///{workdir}/mlruns/mlflow.db" in message
    assert f"/runs/{parent}" in message and "pareto_front.html" in message
    summary = Path(client.download_artifacts(parent, "README.md", str(workdir / "dl"))).read_text()
    assert f"Pareto front: {len(front)} trials" in summary and "Best accuracy at each energy budget" in summary


def test_tags_tables_and_curves_follow_the_study_as_it_grows(workdir: Path) -> None:
    _check(workdir, 3)
    _check(workdir, 6)  # resumed: more trials, the front may change, every tag follows
