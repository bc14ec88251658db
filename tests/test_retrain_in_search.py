"""Retraining inside the search (retrain.enabled): the front before and after, resumed without repeats."""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pytest

from dse.exceptions import ConfigError
from dse.search import run_search
from dse.study.runner import BASELINE_KEY
from dse.study.search_retraining import retrained_accuracy, retrained_front
from tests.conftest import CIFAR10_NPZ, FAST, compose_config, needs_cifar10

pytestmark = [pytest.mark.slow, needs_cifar10]
RETRAIN = [
    "retrain.enabled=true",
    "data@retrain.data=cifar10_npz",
    f"retrain.data.path={CIFAR10_NPZ}",
    "retrain.data.train_subset=300",
    "retrain.data.val_size=200",
    "retrain.epochs=1",
    "retrain.lr=0.002",
]
SEARCH = ["study=quickstart", "study.n_trials=4", "study.measure_time=false", *FAST]
OBJECTIVES = "study.objectives=[{name: accuracy, direction: maximize}, {name: energy_uj, direction: minimize}]"


def _retrain_runs(workdir: Path) -> list:
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("dse").experiment_id
    return client.search_runs([experiment], filter_string="tags.dse_role = 'retrain'")


def test_the_front_is_retrained_after_the_budget_and_never_twice(workdir: Path) -> None:
    overrides = [*SEARCH, OBJECTIVES, *RETRAIN, "retrain.on=front"]
    result = run_search(compose_config(overrides))
    study = result.study
    approximate = [t for t in study.best_trials if t.user_attrs["assignment_key"] != BASELINE_KEY]
    retrained = [t for t in study.best_trials if retrained_accuracy(study, t) is not None]
    assert {t.number for t in approximate} <= {t.number for t in retrained}
    runs = _retrain_runs(workdir)
    assert len(runs) == len(approximate) >= 1
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    for run in runs:  # nested under the study, linked to its trial, finished, the trial run knows the result
        assert run.info.status == "FINISHED"
        assert run.data.tags["mlflow.parentRunId"] == result.parent_run_id
        trial = study.trials[int(run.data.tags["dse_trial"])]
        assert run.data.tags["dse_trial_run_id"] == trial.user_attrs["mlflow_run_id"]
        assert run.data.metrics["accuracy_before"] == pytest.approx(trial.user_attrs["accuracy"])
        trial_run = client.get_run(trial.user_attrs["mlflow_run_id"])
        assert trial_run.data.metrics["accuracy_retrained"] == pytest.approx(retrained_accuracy(study, trial))
    artifacts = {a.path for a in client.list_artifacts(result.parent_run_id, "pareto")}  # type: ignore[arg-type]
    assert {"pareto/pareto_front_retrained.csv", "pareto/pareto_front_retrained.png"} <= artifacts
    table = retrained_front(study)
    assert len(table) == len(approximate) + 1  # and the exact baseline, unchanged
    assert table["pareto_after"].any()

    # Re-running the finished study retrains nothing; a result lost between the end of training and
    # its storage in the study (a kill at that moment) is taken back from the retraining's own folder.
    lost = approximate[0]
    value = retrained_accuracy(study, lost)
    study.set_user_attr(f"retrain/{lost.number}", None)
    again = run_search(compose_config(overrides)).study
    assert len(_retrain_runs(workdir)) == len(runs)
    assert retrained_accuracy(again, again.trials[lost.number]) == value


def test_each_trial_can_be_judged_by_its_accuracy_after_retraining(workdir: Path) -> None:
    objectives = (
        "study.objectives=[{name: accuracy_retrained, direction: maximize}, {name: energy_uj, direction: minimize}]"
    )
    study = run_search(compose_config([*SEARCH, "study.n_trials=3", objectives, *RETRAIN, "retrain.on=each"])).study
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 3
    for t in complete:
        if t.user_attrs["assignment_key"] == BASELINE_KEY:  # the exact model is not retrained: judged as it is
            assert "accuracy_retrained" not in t.user_attrs
            assert t.values[0] == pytest.approx(t.user_attrs["accuracy"])
        else:
            assert t.values[0] == pytest.approx(t.user_attrs["accuracy_retrained"])
            assert t.user_attrs["retrain_forward"] == "bit_exact"  # decimal places: nothing emulated
    assert len(_retrain_runs(workdir)) == 2


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            [
                "study.objectives=[{name: accuracy_retrained, direction: maximize}]",
                "retrain.enabled=true",
                "retrain.on=front",
            ],
            "set retrain.enabled=true retrain.on=each",
        ),
        (["study.objectives=[{name: accuracy_retrained, direction: maximize}]"], "retrained as it runs"),
        ([OBJECTIVES, "retrain.enabled=true", "retrain.on=later"], "retrain.on='later': choose front"),
    ],
)
def test_impossible_retraining_requests_fail_before_anything_runs(
    workdir: Path, overrides: list[str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        run_search(compose_config([*SEARCH, *overrides]))
    assert not (workdir / "mlruns").exists()
