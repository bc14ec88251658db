"""The README's cluster recipe on a real SLURM: a job array of workers on one study, one task cancelled
mid-trial and requeued, through Hydra's submitit launcher (one-node cluster started by the ``slurm`` fixture)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dse.study.storage import create_storage, retried_trial
from tests.conftest import needs_cifar10
from tests.study_checks import check_study_ended_cleanly

pytestmark = [pytest.mark.slow, needs_cifar10]

# Enough work left for the requeued task: a quickstart trial takes about 0.5 s here and a requeued task
# about 15 s to come back and start (its imports), so a budget of 40 was sometimes finished by task 0 alone
# before task 1 returned (seen in CI: task 1 back at 35/40, nothing left to do).
BUDGET = 100
ARGS = [
    "study=quickstart",
    f"study.n_trials={BUDGET}",
    "data.test_subset=600",
    "evaluation.timing_repeats=1",
    "storage.heartbeat_interval=1",
    "storage.grace_period=4",
]
# the launcher config users get (conf/hydra/launcher/slurm.yaml), sized for this 2-core test node
LAUNCHER = [
    "hydra/launcher=slurm",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.mem_gb=3",
    "hydra.launcher.timeout_min=30",
]


def _slurm(env: dict[str, str], *args: str) -> str:
    return subprocess.run(list(args), env=env, capture_output=True, text=True, check=True).stdout.strip()


@pytest.mark.parametrize("storage", ["journal", "postgres"])
def test_a_job_array_finishes_the_budget_after_a_task_is_cancelled_mid_trial_and_requeued(
    storage: str, workdir: Path, slurm: dict[str, str], request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ, **slurm}
    if storage == "postgres":
        server = request.getfixturevalue("postgres")
        env.update(server)
        for name, value in server.items():
            monkeypatch.setenv(name, value)
        url = "postgresql+psycopg2://dse:@127.0.0.1:{}/dse".format(server["DSE_PG_PORT"])
    else:
        url = f"journal:///{workdir}/mlruns/optuna.journal"
    args = [*ARGS, f"storage={storage}"]
    log = workdir / "launcher.log"
    with open(log, "w") as out:
        launcher = subprocess.Popen(
            [sys.executable, "-m", "dse.search", "--multirun", *args, *LAUNCHER, "+worker=range(0,2)"],
            cwd=workdir,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        reader = create_storage(url, heartbeat_interval=None)
        victim, trial_number = None, None
        deadline = time.monotonic() + 300
        while victim is None:  # the first trial that array task 1 is evaluating
            assert time.monotonic() < deadline and launcher.poll() is None, log.read_text()[-3000:]
            try:
                study = optuna.load_study(study_name="quickstart", storage=reader)
            except KeyError:
                time.sleep(0.5)
                continue
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                if str(t.user_attrs.get("scheduler_job", "")).endswith("_1") and "mlflow_run_id" in t.user_attrs:
                    victim, trial_number = str(t.user_attrs["scheduler_job"]), t.number
            time.sleep(0.1)
        _slurm(env, "scancel", victim)  # SIGTERM to the task, then SIGKILL after KillWait
        deadline = time.monotonic() + 60
        while _slurm(env, "squeue", "-h", "-j", victim, "-o", "%T") not in ("CANCELLED", ""):
            assert time.monotonic() < deadline, "the cancelled task never ended"
            time.sleep(0.5)
        _slurm(env, "scontrol", "requeue", victim)
        _slurm(env, "scontrol", "update", f"JobId={victim}", "StartTime=now")  # no requeue delay in a test
        assert launcher.wait(timeout=900) == 0, log.read_text()[-4000:]
    finally:
        if launcher.poll() is None:
            launcher.kill()
    study = optuna.load_study(study_name="quickstart", storage=reader)
    stopped = study.trials[trial_number]
    # SIGTERM stopped the trial cleanly: recorded as interrupted, and its assignment evaluated by a retry
    assert stopped.state == TrialState.FAIL and stopped.user_attrs.get("interrupted") == "SIGTERM"
    retries = [t for t in study.trials if retried_trial(t) == trial_number]
    assert len(retries) == 1
    # evaluated exactly once: by its retry, or by another worker's trial that proposed it first (then the
    # retry is PRUNED as its duplicate)
    key = stopped.user_attrs["assignment_key"]
    done = [t for t in study.trials if t.state == TrialState.COMPLETE and t.user_attrs["assignment_key"] == key]
    assert len(done) == 1
    assert retries[0].state == TrialState.COMPLETE or retries[0].user_attrs.get("duplicate_of") == done[0].number
    # both array tasks worked, each with the one CPU SLURM gave it, and the requeued task came back
    jobs = {t.user_attrs.get("scheduler_job") for t in study.trials if t.state == TrialState.COMPLETE}
    assert {j.rsplit("_", 1)[1] for j in jobs if j} == {"0", "1"}
    assert {t.user_attrs.get("torch_threads") for t in study.trials if t.state == TrialState.COMPLETE} == {1}
    assert any(
        t.user_attrs.get("scheduler_job") == victim and t.number > trial_number and t.state == TrialState.COMPLETE
        for t in study.trials
    ), "the requeued task never completed a trial"
    check_study_ended_cleanly(workdir, url, args, BUDGET)
