"""Workers SIGKILLed at random moments on every storage: the study still ends exactly right.

What a cluster does to jobs (preemption, node failures, time limits), done for real:
``python -m dse.search`` processes are killed at startup (study and MLflow parent run
being created), mid-trial and between trials (front being written, next trial being
sampled), then started again. At the end the study holds exactly the budget of COMPLETE
trials, no assignment twice, nothing left RUNNING in Optuna or MLflow, one parent run,
and the Pareto artifacts equal ``study.best_trials``. ``dse.status`` is checked before,
during and after.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from dse.study.storage import create_storage
from tests.conftest import needs_cifar10
from tests.study_checks import check_study_ended_cleanly, dse_status

pytestmark = [pytest.mark.slow, needs_cifar10]

BUDGET = 24  # per worker: enough trials that the ten kills land before the budget is complete
# trials of about a second (600 images) so kills land in every phase; heartbeats fast so dead trials free up in seconds
ARGS = [
    "study=quickstart",
    "data.test_subset=600",
    "evaluation.timing_repeats=1",
    "storage.heartbeat_interval=1",
    "storage.grace_period=4",
    "tracking.plot_every=3",
]
PHASES = ("startup", "mid-trial", "between trials")


def _spawn(workdir: Path, env: dict[str, str], args: list[str], log: Path) -> subprocess.Popen:
    with open(log, "a") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "dse.search", *args], cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT
        )


def _phase(study: optuna.Study, pid: int) -> str:
    """What worker ``pid`` is doing now, from what the storage shows."""
    mine = [t for t in study.get_trials(deepcopy=False) if str(t.user_attrs.get("worker", "")).endswith(f":{pid}")]
    if any(t.state == TrialState.RUNNING for t in mine):
        return "mid-trial"
    return "between trials" if mine else "startup"


def _check_none_crashed(procs: list[subprocess.Popen], log: Path) -> None:
    """Fail at once, with the workers' log, if a worker this test did not kill has exited with an error."""
    crashed = {proc.pid: proc.returncode for proc in procs if proc.poll() not in (None, 0)}
    assert not crashed, f"workers exited by themselves (pid: exit code) {crashed}:\n{log.read_text()[-6000:]}"


def _wait_for_phase(
    procs: list[subprocess.Popen],
    storage: optuna.storages.BaseStorage,
    want: str,
    rng: random.Random,
    timeout: float,
    log: Path,
) -> int | None:
    """The index of a live worker seen in phase ``want`` (a random one if several), or None after ``timeout`` s."""
    until = time.monotonic() + timeout
    while time.monotonic() < until:
        _check_none_crashed(procs, log)
        try:
            study = optuna.load_study(study_name="quickstart", storage=storage)
        except KeyError:  # not created yet
            time.sleep(0.2)
            continue
        ready = [i for i, proc in enumerate(procs) if proc.poll() is None and _phase(study, proc.pid) == want]
        if ready:
            return rng.choice(ready)
        time.sleep(0.02)
    return None


def _kill_campaign(
    workdir: Path, env: dict[str, str], args: list[str], url: str, workers: int, kills: int, seed: int
) -> Counter[str]:
    """Run ``workers`` workers, SIGKILL one at a time (at least ``kills`` times, at least twice in each phase,
    aiming at the phase killed least), restarting each; then let all finish. Returns the kills per phase seen."""
    rng = random.Random(seed)
    log = workdir / "workers.log"
    procs = [_spawn(workdir, env, args, log) for _ in range(workers)]
    storage = create_storage(url, heartbeat_interval=None)  # a reader: no heartbeat of its own
    seen: Counter[str] = Counter()
    deadline = time.monotonic() + 1200

    def enough() -> bool:
        return sum(seen.values()) >= kills and all(seen[p] >= 2 for p in PHASES)

    while not enough() and time.monotonic() < deadline:
        _check_none_crashed(procs, log)
        try:
            study = optuna.load_study(study_name="quickstart", storage=storage)
            done = len(study.get_trials(states=(TrialState.COMPLETE,)))
        except KeyError:  # not created yet
            done = 0
        assert done < BUDGET * workers - workers, f"the budget was nearly complete after only {seen} kills"
        want = min(PHASES, key=lambda p: seen[p])  # the phase killed least so far
        if want == "startup":  # kill while it imports, opens the study, creates or joins the parent run
            i = rng.randrange(workers)
            time.sleep(rng.uniform(1.0, 7.0))
        else:
            # wait for any worker to be in the wanted phase; on a slow machine a restarted worker can take
            # longer than any fixed wait to start, and killing it anyway would only ever count "startup"
            i = _wait_for_phase(procs, storage, want, rng, timeout=180, log=log)
            if i is None:
                continue
            if want == "mid-trial":
                time.sleep(rng.uniform(0.0, 0.3))
        proc = procs[i]
        if proc.poll() is None:
            try:
                study = optuna.load_study(study_name="quickstart", storage=storage)
                seen[_phase(study, proc.pid)] += 1
            except KeyError:
                seen["startup"] += 1
            proc.kill()
            proc.wait()
            if sum(seen.values()) == 2:  # status during a search, a worker just killed
                code, text = dse_status([*args, "--json"])
                assert code == 0, text
                during = json.loads(text)
                assert during["complete"] < BUDGET * workers and during["budget"] == BUDGET * workers
        procs[i] = _spawn(workdir, env, args, log)
    assert enough(), f"only {seen} kills before the deadline:\n{log.read_text()[-6000:]}"
    for proc in procs:
        assert proc.wait(timeout=900) == 0, log.read_text()[-4000:]
    return seen


@pytest.mark.parametrize(
    ("storage", "workers"),
    [("sqlite", 1), ("journal", 3), ("postgres", 3)],
)
def test_workers_killed_at_random_moments_lose_nothing(
    storage: str, workers: int, workdir: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    env = {**os.environ}
    if storage == "postgres":
        server = request.getfixturevalue("postgres")
        env.update(server)
        for name, value in server.items():  # for dse.status in this process
            monkeypatch.setenv(name, value)
        url = "postgresql+psycopg2://dse:@127.0.0.1:{}/dse".format(env["DSE_PG_PORT"])
    elif storage == "journal":
        url = f"journal:///{workdir}/mlruns/optuna.journal"
    else:
        url = f"sqlite:///{workdir}/mlruns/optuna.db"
    args = [*ARGS, f"storage={storage}", f"study.n_trials={BUDGET * workers}"]
    before = subprocess.run(  # no study yet: the command says so, and lists what is there
        [sys.executable, "-m", "dse.status", *args],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert before.returncode == 2 and "Traceback" not in before.stderr
    assert ("No study 'quickstart'" in before.stderr and "Studies there: none" in before.stderr) or (
        "No study storage at" in before.stderr
    ), before.stderr
    phases = _kill_campaign(workdir, env, args, url, workers, kills=10, seed=len(storage))
    print(f"kills on {storage} with {workers} worker(s): {dict(phases)}")  # shown by pytest -s, for the record
    check_study_ended_cleanly(workdir, url, args, BUDGET * workers)


def test_a_second_sqlite_worker_is_refused_with_the_storages_that_take_several(workdir: Path) -> None:
    args = [*ARGS, "storage=sqlite", "study.n_trials=200"]
    first = _spawn(workdir, dict(os.environ), args, workdir / "first.log")
    try:
        deadline = time.monotonic() + 120
        while not (workdir / "mlruns/optuna.db.worker.lock").exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        second = subprocess.run(
            [sys.executable, "-m", "dse.search", *args],
            cwd=workdir,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert first.poll() is None, "the first worker ended before the second started: nothing was tested"
    finally:
        first.terminate()  # SIGTERM, as a scheduler stops a job: a clean stop
        assert first.wait(timeout=120) == 143, (workdir / "first.log").read_text()[-3000:]
    said = second.stdout + second.stderr
    assert second.returncode == 2
    assert "A SQLite storage serves one worker at a time" in said
    assert "storage=journal" in said and "storage=postgres" in said and "Traceback" not in said
