"""What every recovery test asserts at the end of a search that workers were killed in."""

from __future__ import annotations

import io
import json
from collections import Counter
from contextlib import redirect_stdout
from pathlib import Path

import mlflow
import optuna
import pandas as pd
from optuna.trial import TrialState

from dse.status import main as status_main
from dse.study.storage import create_storage, retried_trial


def dse_status(args: list[str]) -> tuple[int, str]:
    """``python -m dse.status <args>`` in this process: exit code and what it printed."""
    out = io.StringIO()
    with redirect_stdout(out):
        code = status_main(args)
    return code, out.getvalue()


def check_study_ended_cleanly(workdir: Path, url: str, args: list[str], budget: int) -> None:
    """Exactly ``budget`` COMPLETE trials, no assignment twice, nothing RUNNING in Optuna or MLflow, one parent
    run, killed runs linked to their retries, the front artifact equal to ``study.best_trials``, dse.status agreeing."""
    study = optuna.load_study(study_name="quickstart", storage=create_storage(url, heartbeat_interval=None))
    trials = study.get_trials()
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    assert len(complete) == budget
    keys = [t.user_attrs["assignment_key"] for t in complete]
    assert len(set(keys)) == len(keys), Counter(keys).most_common(3)
    assert not [t.number for t in trials if t.state == TrialState.RUNNING]
    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("dse").experiment_id], max_results=5000)
    assert not [r.info.run_id for r in runs if r.info.status == "RUNNING"]
    parents = [r for r in runs if r.data.tags.get("dse_role") == "parent"]
    assert len(parents) == 1
    # every complete trial has its finished run; a killed trial's run is KILLED and linked to its retry
    trial_runs = [r for r in runs if r.data.tags.get("dse_role") == "trial"]
    finished = {int(r.data.tags["dse_trial"]) for r in trial_runs if r.info.status == "FINISHED"}
    assert {t.number for t in complete} <= finished
    by_number = {t.number: t for t in trials}
    for run in trial_runs:
        retry = by_number[int(run.data.tags["dse_trial"])]
        if retried_trial(retry) is not None:  # a retry's run names the trial it re-runs, and that trial's run names it
            original = by_number[int(run.data.tags["dse_retry_of"])]
            assert original.number == retried_trial(retry) and original.state == TrialState.FAIL
            if "mlflow_run_id" in original.user_attrs:
                tags = client.get_run(original.user_attrs["mlflow_run_id"]).data.tags
                assert tags["dse_retried_by"] == run.data.tags["dse_trial"]
    # the front on the parent run is the study's front
    path = client.download_artifacts(parents[0].info.run_id, "pareto/pareto_front.csv", str(workdir))
    assert sorted(pd.read_csv(path)["trial"]) == sorted(t.number for t in study.best_trials)
    code, text = dse_status([*args, "--json"])
    after = json.loads(text)
    assert code == 0 and after["complete"] == budget and after["states"].get("RUNNING", 0) == 0
    assert after["front_size"] == len(study.best_trials) and after["hypervolume"] > 0
