"""Ctrl-C and SIGTERM mid-trial stop a search cleanly; a second Ctrl-C exits at once."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

from dse.study.storage import create_storage, retried_trial
from tests.conftest import needs_cifar10, run_module

pytestmark = [pytest.mark.slow, needs_cifar10]

# Trials long enough for a signal sent 0.3 s into one to land inside it: timed passes (off by default) make them so.
ARGS = [
    "study=quickstart",
    "study.n_trials=8",
    "data.test_subset=1000",
    "study.measure_time=true",
    "evaluation.timing_repeats=3",
]


def _start(workdir: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "dse.search", *ARGS],
        cwd=workdir,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _wait_for_trial(workdir: Path, proc: subprocess.Popen, number: int) -> optuna.Study:
    """Wait until trial ``number`` of this worker is being evaluated (its MLflow run exists)."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        assert proc.poll() is None, proc.communicate()[0][-3000:]
        if (workdir / "mlruns/optuna.db").exists():
            try:
                study = optuna.load_study(
                    study_name="quickstart",
                    storage=create_storage(f"sqlite:///{workdir}/mlruns/optuna.db", heartbeat_interval=None),
                )
                running = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
                if any(t.number >= number and "mlflow_run_id" in t.user_attrs for t in running):
                    return study
            except KeyError:
                pass
        time.sleep(0.05)
    raise AssertionError(f"trial {number} never started")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_a_signal_mid_trial_records_it_closes_the_runs_and_the_rerun_resumes(
    workdir: Path, signum: int, code: int
) -> None:
    proc = _start(workdir)
    study = _wait_for_trial(workdir, proc, 2)
    time.sleep(0.3)  # inside the evaluation
    proc.send_signal(signum)
    out = proc.communicate(timeout=120)[0]
    assert proc.returncode == code, out[-3000:]
    assert "Traceback" not in out
    name = signal.Signals(signum).name
    last = [line for line in out.splitlines() if "Interrupted by" in line]
    assert len(last) == 1 and f"Interrupted by {name}:" in last[0] and "Re-run the same command to resume" in last[0]
    trials = study.get_trials()
    stopped = [t for t in trials if t.user_attrs.get("interrupted") == name]
    assert len(stopped) == 1 and stopped[0].state == TrialState.FAIL
    retry = [t for t in trials if retried_trial(t) == stopped[0].number]
    assert len(retry) == 1 and retry[0].state == TrialState.WAITING
    assert not [t for t in trials if t.state == TrialState.RUNNING]
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("dse").experiment_id])
    assert not [r for r in runs if r.info.status == "RUNNING"]
    assert client.get_run(stopped[0].user_attrs["mlflow_run_id"]).info.status == "KILLED"
    complete = len(study.get_trials(states=(TrialState.COMPLETE,)))
    assert f"{complete}/8 trials complete" in last[0]
    # re-running finishes the budget; the interrupted assignment is evaluated by its retry
    rerun = run_module(workdir, "dse.search", *ARGS)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    after = {t.number: t for t in study.get_trials()}
    assert after[retry[0].number].state == TrialState.COMPLETE
    assert after[retry[0].number].user_attrs["assignment_key"] == stopped[0].user_attrs["assignment_key"]
    assert len(study.get_trials(states=(TrialState.COMPLETE,))) == 8
    tags = client.get_run(stopped[0].user_attrs["mlflow_run_id"]).data.tags
    assert tags["dse_retried_by"] == str(retry[0].number)


def test_a_second_ctrl_c_exits_at_once(workdir: Path) -> None:
    proc = _start(workdir)
    _wait_for_trial(workdir, proc, 1)
    proc.send_signal(signal.SIGINT)
    time.sleep(0.3)  # the clean stop has begun (closing runs, drawing the front: seconds)
    assert proc.poll() is None, "the clean stop ended before the second Ctrl-C: nothing was tested"
    start = time.monotonic()
    proc.send_signal(signal.SIGINT)
    proc.communicate(timeout=60)
    assert time.monotonic() - start < 3
    assert proc.returncode == -signal.SIGINT  # the default action: killed by the signal, no more clean-up
