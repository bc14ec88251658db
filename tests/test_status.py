"""``python -m dse.status``: the numbers it reports come from the study, and a missing study lists the others."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import optuna
import pytest

from dse.assignment import BASELINE_KEY
from dse.status import format_status, study_status
from dse.study.storage import create_storage
from tests.study_checks import dse_status


def _study(tmp_path: Path) -> optuna.Study:
    study = optuna.create_study(
        study_name="s", storage=create_storage(f"sqlite:///{tmp_path}/optuna.db"), directions=["maximize", "minimize"]
    )
    study.set_user_attr("objectives", ["accuracy", "energy_uj"])
    study.set_user_attr("n_trials", 10)
    study.set_user_attr("hypervolume_reference", [0.0, 2.0])

    def work(trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr("worker", f"node{trial.number % 2}:100{trial.number % 2}")
        if trial.number % 2:
            trial.set_user_attr("scheduler_job", "77_1")
        time.sleep(0.2)
        x = trial.suggest_float("x", 0, 1)
        return x, 1.0 + x  # a trade-off: every point is on the front

    study.optimize(work, n_trials=5)
    return study


def test_status_counts_front_rate_and_workers(tmp_path: Path) -> None:
    study = _study(tmp_path)
    running = study.ask()
    running.set_user_attr("worker", "node0:1000")
    status = study_status(study, "sqlite:///optuna.db")
    assert status.complete == 5 and status.budget == 10
    assert status.states == {"COMPLETE": 5, "RUNNING": 1}
    assert status.front_size == 5
    # accuracy x in [0,1], energy 1+x against the reference (0 accuracy, 2 uJ): area under the staircase, > 0
    assert status.hypervolume is not None and 0.0 < status.hypervolume < 1.0
    assert status.trials_per_hour is not None and 3600 / 0.2 / 3 < status.trials_per_hour < 3600 / 0.2 * 1.05
    assert status.eta_s is not None and 5 * 0.2 * 0.95 < status.eta_s < 5 * 0.2 * 3
    workers = {w.worker: w for w in status.workers}
    assert workers["node0:1000"].running_trial == running.number and workers["node0:1000"].complete == 3
    assert workers["node1:1001"].scheduler_job == "77_1" and workers["node1:1001"].complete == 2
    text = format_status(status)
    assert "complete: 5/10" in text and "SLURM job 77_1" in text and f"running trial {running.number}" in text


def test_status_command_json_and_a_missing_study(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _study(tmp_path)
    monkeypatch.chdir(tmp_path)
    code, text = dse_status([f"storage.url=sqlite:///{tmp_path}/optuna.db", "study.name=s", "--json"])
    assert code == 0 and json.loads(text)["complete"] == 5
    with caplog.at_level(logging.ERROR):
        code, _ = dse_status([f"storage.url=sqlite:///{tmp_path}/optuna.db", "study.name=nope"])
    assert code == 2 and "No study 'nope'" in caplog.text and "Studies there: s." in caplog.text


def test_a_corrupt_store_gets_the_searchs_own_message_not_a_hydra_traceback(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The same clear line as ``dse.search`` gives ("file is not a database"), exit 2; the file is left as it was."""
    bad = tmp_path / "optuna.db"
    bad.write_bytes(b"not a database, " * 64)
    with caplog.at_level(logging.ERROR):
        code, printed = dse_status([f"storage.url=sqlite:///{bad}"])
    assert code == 2 and printed == ""
    assert f"Cannot open the study storage sqlite:///{bad}: file is not a database" in caplog.text
    assert "InstantiationException" not in caplog.text and "Traceback" not in caplog.text
    assert bad.read_bytes() == b"not a database, " * 64


def test_the_hypervolume_is_measured_even_when_no_worker_stored_its_reference() -> None:
    """A worker killed between its baseline trial's completion and its next front refresh stores no reference
    (seen in CI with 3 workers killed at random); status takes it from the baseline trial, as workers do."""
    study = optuna.create_study(directions=["maximize", "minimize"])
    study.set_user_attr("objectives", ["accuracy", "energy_uj"])
    for key, values in ((BASELINE_KEY, [0.9, 10.0]), ("features.0.0=decimals:2", [0.8, 5.0])):
        trial = optuna.trial.create_trial(values=values, user_attrs={"assignment_key": key})
        study.add_trial(trial)
    status = study_status(study, "in memory")
    assert "hypervolume_reference" not in study.user_attrs  # a reader stores nothing
    # reference (0, 11): the front {(0.9, 10), (0.8, 5)} covers 0.9 x 1 + 0.8 x 5 of the 1 x 11 box
    assert status.hypervolume == pytest.approx((0.9 * 1 + 0.8 * 5) / 11)
