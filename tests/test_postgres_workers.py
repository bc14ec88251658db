"""Two workers join one study through a real PostgreSQL server started on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dse.study.storage import create_storage

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def test_two_workers_share_one_study(postgres: dict[str, str], workdir: Path) -> None:
    env = {**os.environ, **postgres}
    cmd = [
        sys.executable,
        "-m",
        "dse.search",
        "study=quickstart",
        "storage=postgres",
        "study.n_trials=8",
        "data.test_subset=200",
        "evaluation.timing_repeats=1",
    ]
    workers = [
        subprocess.Popen(cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for _ in range(2)
    ]
    outputs = [w.communicate(timeout=600)[0] for w in workers]
    assert all(w.returncode == 0 for w in workers), outputs[0][-2000:] + outputs[1][-2000:]
    url = "postgresql+psycopg2://dse:@127.0.0.1:{}/dse".format(postgres["DSE_PG_PORT"])
    study = optuna.load_study(study_name="quickstart", storage=create_storage(url))
    done = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(done) == 8  # exactly the budget: a worker waits while the trials running ahead of it would fill it
    keys = [t.user_attrs["assignment_key"] for t in done]
    assert len(set(keys)) == len(keys)  # no assignment evaluated twice, across workers
    assert len({t.user_attrs["worker"] for t in done}) == 2  # both workers did real work
    assert sum(k == "exact" for k in keys) == 1  # the baseline was enqueued once
    assert not study.get_trials(states=(TrialState.RUNNING,))
    # the MLflow parent run is shared too: one parent, one child per complete trial
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{workdir}/mlruns/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("dse").experiment_id])
    assert sum(r.data.tags.get("dse_role") == "parent" for r in runs) == 1
    assert sum(r.data.tags.get("dse_role") == "trial" for r in runs) == len(done)
