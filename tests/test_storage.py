"""Study storages: dead workers' trials are failed and retried, even before their first heartbeat."""

from __future__ import annotations

import datetime
import os
import socket
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dse.exceptions import ConfigError
from dse.study.storage import create_storage, describe_storage, has_heartbeat


def _objective(trial: optuna.Trial) -> float:
    return trial.suggest_float("x", 0, 1)


# a database's heartbeat, and a journal file's leases: the same recovery
URLS = pytest.mark.parametrize("url", ["sqlite:///{}/s.db", "journal:///{}/s.log"], ids=["sqlite", "journal"])


@URLS
def test_a_trial_killed_before_its_first_heartbeat_is_failed_and_retried(tmp_path: Path, url: str) -> None:
    storage = create_storage(url.format(tmp_path), heartbeat_interval=1, grace_period=1)
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


def test_an_enqueued_trial_killed_before_its_parameters_is_retried_with_them(tmp_path: Path) -> None:
    # The baseline is enqueued; killed before suggesting, its retry must still be the baseline (the study's
    # hypervolume reference comes from it), not a point the sampler fills in, and another queued point with
    # no suggested parameters yet must not be taken for it.
    storage = create_storage(f"sqlite:///{tmp_path}/s.db", heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="s")
    study.enqueue_trial({"x": 0.0})
    study.enqueue_trial({"x": 0.5})
    dead = study.ask()  # the first queued trial, its parameter not suggested yet
    assert dead.params == {}
    time.sleep(2.2)
    optuna.storages.fail_stale_trials(study)
    retry = next(t for t in study.get_trials(states=(TrialState.WAITING,)) if "failed_trial" in t.system_attrs)
    assert retry.system_attrs["failed_trial"] == dead.number
    study.ask()  # the other queued point
    rerun = study.ask()
    assert rerun.number == retry.number and _objective(rerun) == 0.0


@URLS
def test_a_beating_trial_is_never_failed(tmp_path: Path, url: str) -> None:
    storage = create_storage(url.format(tmp_path), heartbeat_interval=1, grace_period=1)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask()
    start = datetime.datetime.now()
    while datetime.datetime.now() - start < datetime.timedelta(seconds=2.5):
        storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
        time.sleep(0.3)
    optuna.storages.fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.RUNNING


def test_a_dead_journal_worker_s_trial_is_failed_after_its_lease_expires(tmp_path: Path) -> None:
    storage = create_storage(f"journal:///{tmp_path}/s.log", heartbeat_interval=1, grace_period=2)
    study = optuna.create_study(storage=storage, study_name="s")
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    storage.record_heartbeat(trial._trial_id)  # type: ignore[attr-defined]
    assert (tmp_path / "s.log.leases" / str(trial._trial_id)).is_file()
    optuna.storages.fail_stale_trials(study)
    assert study.trials[trial.number].state == TrialState.RUNNING  # the lease is fresh
    time.sleep(2.5)  # the worker died: no renewal
    other = create_storage(f"journal:///{tmp_path}/s.log", heartbeat_interval=1, grace_period=2)  # another worker
    optuna.storages.fail_stale_trials(optuna.load_study(study_name="s", storage=other))
    assert study.trials[trial.number].state == TrialState.FAIL
    assert not (tmp_path / "s.log.leases" / str(trial._trial_id)).exists()  # a finished trial holds no lease


def test_journal_storage_without_heartbeat_has_none(tmp_path: Path) -> None:
    assert not has_heartbeat(create_storage(f"journal:///{tmp_path}/j.log", heartbeat_interval=None))
    assert has_heartbeat(create_storage(f"journal:///{tmp_path}/k.log", heartbeat_interval=5))


def test_unwritable_journal_and_unreachable_database_fail_fast_and_clearly(tmp_path: Path) -> None:
    locked = tmp_path / "ro"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):  # root ignores permissions: a file stands where the folder should be
            (tmp_path / "file").write_text("")
            locked = tmp_path / "file" / "sub"
        with pytest.raises(ConfigError, match=r"Cannot write the study journal .* writable directory"):
            create_storage(f"journal:///{locked}/study.log")
    finally:
        (tmp_path / "ro").chmod(0o700)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.monotonic()
    with pytest.raises(ConfigError, match="Cannot open the study storage") as err:
        create_storage(f"postgresql+psycopg2://dse:hunter2@127.0.0.1:{port}/dse")
    assert time.monotonic() - start < 10
    assert "hunter2" not in str(err.value) and "dse:***@127.0.0.1" in str(err.value)
    # a one-letter password: only the URL's password field is hidden, the driver's words stay whole
    with pytest.raises(ConfigError, match="Cannot open the study storage") as err:
        create_storage(f"postgresql+psycopg2://dse:e@127.0.0.1:{port}/dse")
    assert "dse:***@127.0.0.1" in str(err.value) and "Connection refused" in str(err.value)
    assert "***" not in str(err.value).replace("dse:***@", "")


def test_bad_urls_and_passwords_in_messages() -> None:
    with pytest.raises(ConfigError, match="is not a database URL"):
        create_storage("mlruns/optuna.db")
    assert (
        describe_storage("postgresql+psycopg2://dse:secret@db:5432/dse") == "postgresql+psycopg2://dse:***@db:5432/dse"
    )
