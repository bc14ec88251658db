"""A tracking store that cannot be used stops the search at once with one line that says which and what to
do: an MLflow server nobody answers at, one that accepts and never answers, a damaged ``mlflow.db``. Only a
real write race is retried."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest

from dse.exceptions import ConfigError
from dse.store_urls import is_write_race, retry_on_race
from dse.tracking.mlflow_tracker import MlflowTracker, check_server
from tests.conftest import FAST, run_module


@pytest.fixture
def closed_port() -> int:
    """A port on 127.0.0.1 nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield int(s.getsockname()[1])


def test_a_refused_server_fails_at_once_naming_the_uri_and_the_alternatives(closed_port: int) -> None:
    uri = f"http://127.0.0.1:{closed_port}"
    start = time.monotonic()
    with pytest.raises(ConfigError) as error:
        MlflowTracker(uri)
    assert time.monotonic() - start < 5  # refused: no waiting at all, no retries
    text = str(error.value)
    assert uri in text and "tracking=mlflow_local" in text and "tracking=none" in text


def test_a_server_that_never_answers_fails_after_the_timeout(silent_server: int) -> None:
    start = time.monotonic()
    with pytest.raises(ConfigError, match="timed out"):
        check_server(f"http://127.0.0.1:{silent_server}", timeout_s=1.0)
    assert time.monotonic() - start < 4  # one call, the timeout given: not MLflow's retries for minutes


@pytest.mark.slow
def test_the_search_stops_on_an_unreachable_server_with_one_line_and_exit_2(workdir: Path, closed_port: int) -> None:
    start = time.monotonic()
    run = run_module(
        workdir,
        "dse.search",
        "study=quickstart",
        "tracking=mlflow_server",
        f"tracking.tracking_uri=http://127.0.0.1:{closed_port}",
        "storage.url=sqlite:///optuna.db",
        *FAST,
        timeout=120,
    )
    elapsed = time.monotonic() - start
    assert run.returncode == 2, run.stderr[-2000:]
    log = run.stdout + run.stderr
    assert f"No MLflow tracking server answers at http://127.0.0.1:{closed_port}" in log
    assert "Another worker" not in log and "Traceback" not in log
    assert elapsed < 90, elapsed  # the process's imports and data, not minutes of retries (seconds, measured: ~12)
    assert optuna.load_study(study_name="quickstart", storage="sqlite:///optuna.db").trials == []  # nothing evaluated


@pytest.mark.slow
def test_a_damaged_mlflow_db_gets_one_clear_line_and_is_left_as_it_was(workdir: Path) -> None:
    store = workdir / "mlruns" / "mlflow.db"
    store.parent.mkdir()
    store.write_bytes(b"not a database, " * 64)
    run = run_module(workdir, "dse.search", "study=quickstart", "storage.url=sqlite:///optuna.db", *FAST, timeout=120)
    assert run.returncode == 2, run.stderr[-2000:]
    log = run.stdout + run.stderr
    assert f"Cannot use the MLflow tracking store 'sqlite:///{store}'" in log and "file is not a database" in log
    assert "Move a damaged store file aside" in log and "tracking=none" in log
    assert "Another worker" not in log and "Traceback" not in log
    assert store.read_bytes() == b"not a database, " * 64


def test_only_a_write_race_is_retried() -> None:
    calls: list[int] = []

    def refused() -> None:
        calls.append(1)
        raise ConnectionRefusedError("Connection refused")

    with pytest.raises(ConnectionRefusedError):
        retry_on_race(refused, is_write_race)
    assert len(calls) == 1

    def raced_once() -> str:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("(sqlite3.IntegrityError) UNIQUE constraint failed: tags.key, tags.run_uuid")
        return "written"

    assert retry_on_race(raced_once, is_write_race) == "written" and len(calls) == 3
    assert not is_write_race(RuntimeError("(sqlite3.DatabaseError) file is not a database"))


def _trial_runs(tracking_uri: str, parent: str) -> int:
    client = mlflow.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name("dse")
    return len(client.search_runs([experiment.experiment_id], f"tags.mlflow.parentRunId = '{parent}'"))


@pytest.mark.slow
def test_a_lost_optuna_database_starts_a_new_parent_run_and_keeps_the_old_one(workdir: Path) -> None:
    """The study's database is deleted and the search run again: the old parent run (the lost study's
    trials) is kept and retired, the new study gets its own parent; no parent holds trials of two studies."""
    args = ["study=quickstart", "storage.url=sqlite:///optuna.db", "study.n_trials=2", *FAST]
    assert run_module(workdir, "dse.search", *args).returncode == 0
    uri = f"sqlite:///{workdir}/mlruns/mlflow.db"
    first = optuna.load_study(study_name="quickstart", storage="sqlite:///optuna.db").user_attrs["mlflow_parent_run_id"]
    assert _trial_runs(uri, first) == 2
    (workdir / "optuna.db").unlink()
    run = run_module(workdir, "dse.search", *args)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "Optuna database was lost or replaced" in run.stdout + run.stderr
    second = optuna.load_study(study_name="quickstart", storage="sqlite:///optuna.db").user_attrs[
        "mlflow_parent_run_id"
    ]
    assert second != first
    assert _trial_runs(uri, first) == 2 and _trial_runs(uri, second) == 2
    client = mlflow.MlflowClient(uri)
    assert client.get_run(first).data.tags["dse_role"] == "parent_of_a_lost_study"
    assert client.get_run(second).data.tags["dse_role"] == "parent"
    assert run_module(workdir, "dse.search", *args, "study.n_trials=3").returncode == 0  # a resume keeps its parent
    resumed = optuna.load_study(study_name="quickstart", storage="sqlite:///optuna.db")
    assert resumed.user_attrs["mlflow_parent_run_id"] == second and _trial_runs(uri, second) == 3


@pytest.mark.slow
def test_a_copied_mlruns_folder_never_writes_into_the_originals_artifacts(workdir: Path) -> None:
    original, copy = workdir / "original", workdir / "copy"
    original.mkdir()
    args = ["study=quickstart", "storage.url=sqlite:///optuna.db", "study.n_trials=1", *FAST]
    assert run_module(original, "dse.search", *args).returncode == 0
    shutil.copytree(original, copy)

    def artifacts() -> dict[Path, bytes]:
        files = (original / "mlruns" / "artifacts").rglob("*")
        return {p.relative_to(original): p.read_bytes() for p in files if p.is_file()}

    before = artifacts()
    assert before  # the parent's front files and the trials' tables
    run = run_module(copy, "dse.search", *args, "study.n_trials=2")
    assert run.returncode == 2, run.stderr[-2000:]
    log = run.stdout + run.stderr
    assert f"artifacts in {original / 'mlruns' / 'artifacts'}" in log and "the store was copied or moved" in log
    assert "tracking.experiment=dse-" in log
    run = run_module(copy, "dse.search", *args, "study.n_trials=2", "tracking.experiment=dse-copy")
    assert run.returncode == 0, run.stderr[-2000:]
    assert artifacts() == before  # not one file of the original's added or rewritten
    client = mlflow.MlflowClient(f"sqlite:///{copy}/mlruns/mlflow.db")
    location = client.get_experiment_by_name("dse-copy").artifact_location
    assert location.startswith((copy / "mlruns" / "artifacts").as_uri())


def test_a_study_resumed_with_another_tracking_store_tags_the_runs_it_has_and_skips_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Seen when the report resumed a finished study from another folder: the trials' run ids point into the
    first MLflow store; tagging the front must not stop the search (it crashed on 'Run ... not found')."""
    first = MlflowTracker(f"sqlite:///{tmp_path}/first/mlflow.db")
    elsewhere = first.client.create_run(first.experiment_id).info.run_id
    second = MlflowTracker(f"sqlite:///{tmp_path}/second/mlflow.db")
    here = second.client.create_run(second.experiment_id).info.run_id
    study = optuna.create_study(directions=["maximize", "minimize"])
    for i, run_id in enumerate((elsewhere, here)):
        trial = optuna.trial.create_trial(values=[0.5 + i, 2.0 - i], user_attrs={"mlflow_run_id": run_id})
        study.add_trial(trial)
    with caplog.at_level("WARNING"):
        second.tag_pareto(study)
        second.tag_pareto(study)  # once known missing, not looked up again
    assert second.client.get_run(here).data.tags["pareto"] == "true"
    assert "pareto" not in first.client.get_run(elsewhere).data.tags
    warnings = [r for r in caplog.records if "is not in" in r.getMessage()]
    assert len(warnings) == 1 and elsewhere in warnings[0].getMessage()
