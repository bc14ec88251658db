"""Two workers join one study through a real PostgreSQL server started on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dse.study.storage import create_storage

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def postgres() -> Iterator[dict[str, str]]:
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        pytest.skip("PostgreSQL server binaries not installed (.ci/run installs them)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        no_user = subprocess.run(["id", "postgres"], capture_output=True, check=False).returncode
        if not shutil.which("runuser") or no_user:
            pytest.skip("running as root without a 'postgres' user to own the cluster")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="dse-pg-"))  # pytest's tmp_path is 0700: the postgres user could not enter
    root.chmod(0o755)
    data = root / "pg"
    data.mkdir()
    if as_user:
        shutil.chown(data, "postgres")
    port = _free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "dse"], check=True, capture_output=True)
    subprocess.run(
        [
            *as_user,
            pg_ctl,
            "-D",
            str(data),
            "-l",
            str(data / "log"),
            "-w",
            "-o",
            f"-p {port} -k {data} -c listen_addresses=127.0.0.1",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=port, user="dse", dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE dse")
        con.close()
        yield {
            "DSE_PG_HOST": "127.0.0.1",
            "DSE_PG_PORT": str(port),
            "DSE_PG_USER": "dse",
            "DSE_PG_PASSWORD": "",
            "DSE_PG_DB": "dse",
        }
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)


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
    assert 8 <= len(done) <= 9  # a worker may finish one trial already under way when the other reaches the budget
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
