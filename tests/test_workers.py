"""What a worker learns about itself from its scheduler (its index among workers launched together, its threads),
and several workers of one study started on this machine by one command (study.local_workers)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from optuna.trial import TrialState

from dse.code_version import git_commit
from dse.config_building import hydra_job_number
from dse.config_paths import CONFIG_DIR
from dse.study.storage import create_storage
from dse.worker.process import allocated_threads, worker_index
from tests.conftest import run_module


def test_worker_index_from_a_job_array_then_hydra_then_zero(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    assert hydra_job_number() is None and worker_index(hydra_job_number()) == 0
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        HydraConfig.instance().set_config(compose("config", [], return_hydra_config=True))
        assert worker_index(hydra_job_number()) == 0  # a single run: Hydra leaves job.num missing
        cfg = compose("config", ["hydra.job.num=4"], return_hydra_config=True)
        HydraConfig.instance().set_config(cfg)
        try:
            assert worker_index(hydra_job_number()) == 4  # a --multirun job of a local or submitit launcher
            monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "7")
            assert worker_index(hydra_job_number()) == 7  # the array task wins: it is what the scheduler restarts
        finally:
            HydraConfig.instance().cfg = None  # type: ignore[assignment]


def test_threads_follow_the_slurm_allocation_unless_configured(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLURM_CPUS_PER_TASK", "3")
    assert allocated_threads(None) == 3
    assert allocated_threads(2) == 2
    monkeypatch.delenv("SLURM_CPUS_PER_TASK")
    assert allocated_threads(None) is None


def test_a_local_worker_takes_its_index_from_the_command_that_started_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SLURM_ARRAY_TASK_ID", raising=False)
    monkeypatch.setenv("DSE_WORKER_INDEX", "1")
    assert worker_index(None) == 1 and worker_index(3) == 1
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "5")
    assert worker_index(None) == 5


@pytest.mark.slow
def test_local_workers_share_one_study_and_worker_0_waits_for_them(tmp_path: Path) -> None:
    """study.local_workers=2 over a journal file: two processes of one thread evaluate the study's trials, the
    budget is met exactly, one MLflow parent run holds every trial, and the command ends after both."""
    run = run_module(
        tmp_path,
        "dse.search",
        "study=quickstart",
        "storage=journal",
        "study.local_workers=2",
        "study.n_trials=24",
        "data.test_subset=2000",  # about 1.5 s a trial on one thread: worker 1 (seconds to start) joins early
        "hydra.run.dir=run",
    )
    assert run.returncode == 0, run.stderr[-3000:]
    study = optuna.load_study(
        study_name="quickstart", storage=create_storage(f"journal:///{tmp_path}/mlruns/optuna.journal")
    )
    complete = study.get_trials(states=[TrialState.COMPLETE])
    assert len(complete) == 24 and not study.get_trials(states=[TrialState.RUNNING])
    workers = {t.user_attrs["worker"] for t in complete}
    assert len(workers) == 2, workers  # both evaluated trials
    assert {t.user_attrs["torch_threads"] for t in complete} == {1}
    assert {t.user_attrs["code_commit"] for t in complete} == {git_commit()}  # the code each trial ran
    assert "Done: 24 complete trials" in (tmp_path / "run" / "worker1" / "worker.log").read_text()
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path}/mlruns/mlflow.db")
    experiment = client.get_experiment_by_name("dse").experiment_id
    parents = client.search_runs([experiment], "tags.dse_role = 'parent'")
    assert len(parents) == 1
    assert len(client.search_runs([experiment], f"tags.mlflow.parentRunId = '{parents[0].info.run_id}'")) >= 24


def test_local_workers_on_sqlite_are_refused_before_anything_is_created(tmp_path: Path) -> None:
    run = run_module(tmp_path, "dse.search", "study=quickstart", "study.local_workers=2")
    assert run.returncode == 2
    assert "a SQLite storage does not take: add storage=journal" in run.stdout + run.stderr
    assert not (tmp_path / "mlruns" / "optuna.db").exists()


@pytest.mark.slow
def test_a_sigterm_to_worker_0_stops_both_cleanly_and_the_same_command_resumes(tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "dse.search",
        "study=quickstart",
        "storage=journal",
        "study.local_workers=2",
        "study.n_trials=40",
        "data.test_subset=2000",
        "tracking=none",
        "hydra.run.dir=run",
    ]
    first = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    log = tmp_path / "run" / "worker1" / "worker.log"
    deadline = time.monotonic() + 240
    while "quickstart:" not in (log.read_text() if log.exists() else "") and time.monotonic() < deadline:
        time.sleep(0.5)  # until worker 1 evaluates: the signal must reach a running pair
    first.send_signal(signal.SIGTERM)
    said, _ = first.communicate(timeout=300)
    assert first.returncode == 143, said[-3000:]
    assert "Interrupted by SIGTERM" in log.read_text()  # passed on, and worker 1 stopped cleanly too
    storage = create_storage(f"journal:///{tmp_path}/mlruns/optuna.journal")
    stopped = optuna.load_study(study_name="quickstart", storage=storage)
    assert not stopped.get_trials(states=[TrialState.RUNNING])  # nothing left for a heartbeat to find
    assert len(stopped.get_trials(states=[TrialState.COMPLETE])) < 40
    again = subprocess.run(args, cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False)
    assert again.returncode == 0, again.stderr[-3000:]
    resumed = optuna.load_study(study_name="quickstart", storage=storage)
    assert len(resumed.get_trials(states=[TrialState.COMPLETE])) == 40
