"""Study storages: dead workers' trials are failed and retried, even before their first heartbeat."""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dse.exceptions import ConfigError
from dse.study.storage import create_storage, describe_storage, has_heartbeat


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0, 1)


def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_retried(tmp_path: Path) -> None:
    storage = create_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=1, grace_period=1)
    assert has_heartbeat(storage)
    study = optuna.create_study(storage=storage, study_name="s")
    # what a worker leaves when it dies inside study.ask() (sampling), before the heartbeat thread starts
    dead = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    dead_too = study.ask()  # no parameters at all: killed before any suggest
    time.sleep(2.2)
    fresh = study.ask()  # a live trial of another worker that has not beaten yet either
    optuna.storages.fail_stale_trials(study)
    states = {t.number: t.state for t in study.get_trials()}
    assert states[dead.number] == TrialState.FAIL and states[dead_too.number] == TrialState.FAIL
    assert states[fresh.number] == TrialState.RUNNING  # younger than the grace period: left alone
    retries = [t for t in study.get_trials(states=(TrialState.WAITING,))]
    assert sorted(t.system_attrs["failed_trial"] for t in retries) == [dead.number, dead_too.number]
    assert next(t for t in retries if t.system_attrs["failed_trial"] == dead.number).params == {"x": dead.params["x"]}


def test_a_beating_trial_is_never_failed(tmp_path: Path) -> None:
    storage = create_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    start = datetime.datetime.now()
    while datetime.datetime.now() - start < datetime.timedelta(seconds=2.5):
        storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
        time.sleep(0.3)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.RUNNING


def test_journal_storage_has_no_heartbeat(tmp_path: Path) -> None:
    assert not has_heartbeat(create_storage(f"journal:///{tmp_path}/j.log", heartbeat_interval=None))


def test_bad_urls_and_passwords_in_messages() -> None:
    with pytest.raises(ConfigError, match="is not a database URL"):
        create_storage("mlruns/optuna.db")
    assert (
        describe_storage("postgresql+psycopg2://dse:secret@db:5432/dse") == "postgresql+psycopg2://dse:***@db:5432/dse"
    )
