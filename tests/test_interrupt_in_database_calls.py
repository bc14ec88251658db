"""A signal that lands inside a database write, or inside a finalizer, still stops the search cleanly.

Raised inside SQLAlchemy, the interrupt used to leave a connection with its write transaction
open: every later write of the clean stop waited 20 s for SQLite's lock and failed ("database
is locked"), and the worker exited 1 instead of 143. These run real MLflow and Optuna SQLite
stores in this process.
"""

from __future__ import annotations

import gc
import inspect
import os
import random
import signal
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

import optuna
import pytest
import sqlalchemy
from mlflow.entities import Metric
from mlflow.tracking import MlflowClient

from dse.worker.signals import Interrupted, protected_call, stop_on_signals

pytestmark = pytest.mark.slow  # timing-sensitive: waits on real processes and clocks

SLOW_WRITE_S = 2.0  # a write behind a lost lock waits MLflow's 20 s busy timeout, then fails


@pytest.fixture
def stray_sigterm_is_harmless() -> Iterator[list[int]]:
    """Outside ``stop_on_signals`` a SIGTERM is recorded instead of ending pytest."""
    caught: list[int] = []
    previous = signal.signal(signal.SIGTERM, lambda signum, _frame: caught.append(signum))
    yield caught
    signal.signal(signal.SIGTERM, previous)


@pytest.fixture
def stores(tmp_path: Path) -> tuple[MlflowClient, str, optuna.Study]:
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/mlflow.db")
    run = client.create_run(client.create_experiment("interrupts")).info.run_id
    study = optuna.create_study(storage=f"sqlite:///{tmp_path}/optuna.db")
    return client, run, study


def _timed(write: Callable[[], object]) -> float:
    start = time.monotonic()
    write()
    return time.monotonic() - start


def test_sigterms_at_random_moments_of_database_writes_leave_both_stores_writable(
    stores: tuple[MlflowClient, str, optuna.Study], stray_sigterm_is_harmless: list[int]
) -> None:
    client, run, study = stores
    rng = random.Random(0)
    for cycle in range(60):
        sender = threading.Timer(rng.uniform(0.001, 0.04), os.kill, (os.getpid(), signal.SIGTERM))
        with pytest.raises(Interrupted) as stopped, stop_on_signals():
            # started once the handler is in place: under load a 1 ms timer fired before it, the signal went to
            # the stray handler, and this loop never ended (a CI run hung here)
            sender.start()
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:  # almost all of the time is spent inside MLflow's and Optuna's sessions
                client.log_batch(run, metrics=[Metric(f"m{j}", 1.0, 0, cycle) for j in range(20)])
                trial = study.ask()
                study.tell(trial, 1.0)
            pytest.fail(f"cycle {cycle}: the SIGTERM sent 1-40 ms into the block never stopped it (60 s)")
        sender.join()
        assert stopped.value.exit_code == 143
        # what the clean stop writes next: the run closed, the interrupted trial failed
        assert _timed(partial(client.set_terminated, run, "KILLED")) < SLOW_WRITE_S, f"cycle {cycle}"
        assert _timed(partial(study.tell, study.ask(), state=optuna.trial.TrialState.FAIL)) < SLOW_WRITE_S
    assert stray_sigterm_is_harmless == []  # every signal landed inside the block
    assert len(study.get_trials(states=(optuna.trial.TrialState.FAIL,))) == 60


def test_a_signal_inside_a_write_is_raised_in_its_caller_once_the_write_has_committed(
    stores: tuple[MlflowClient, str, optuna.Study],
) -> None:
    client, run, _ = stores
    seen: list[bool] = []

    def signal_mid_statement(*_args: object) -> None:
        if not seen:  # once: a second signal would kill the process, as it should
            seen.append(protected_call(inspect.currentframe()) is not None)
            signal.raise_signal(signal.SIGTERM)  # the handler runs here, inside SQLAlchemy's execute

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", signal_mid_statement)
    reached = False
    try:
        with pytest.raises(Interrupted), stop_on_signals():
            client.set_tag(run, "written", "yes")
            reached = True
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", signal_mid_statement)
    assert seen == [True]  # the signal did land inside the database call
    assert not reached  # the block stopped right after the call
    assert client.get_run(run).data.tags["written"] == "yes"  # and the call completed
    assert _timed(partial(client.set_terminated, run, "KILLED")) < SLOW_WRITE_S


class _SignalsWhenCollected:
    def __del__(self) -> None:
        signal.raise_signal(signal.SIGTERM)


def _after_the_finalizer() -> None:
    pass


def test_a_signal_inside_a_finalizer_is_not_dropped() -> None:
    # Raised inside __del__, the exception would be printed as "Exception ignored" and lost.
    reached = False
    with pytest.raises(Interrupted), stop_on_signals():
        _SignalsWhenCollected()  # collected at once: __del__ runs here
        _after_the_finalizer()
        reached = True
    assert not reached


class _Cycle:
    """An object only the garbage collector frees (it refers to itself)."""

    def __init__(self) -> None:
        self.me = self


def _signal_from_a_collected_callback(_: object) -> None:
    signal.raise_signal(signal.SIGTERM)  # handled right here, inside the collector's callback
    sum(range(1000))


@pytest.mark.parametrize("inside", ["a plain weakref callback", "a database module's weakref callback"])
def test_a_signal_inside_a_callback_the_garbage_collector_runs_is_not_dropped(inside: str) -> None:
    """Seen in CI: a SIGTERM landing in SQLAlchemy's weakref callback ``_collection_gced``, run by a collection
    that matplotlib's allocations set off, was raised there, printed as "Exception ignored" and lost; the
    worker ran its study to the end."""
    callback = _signal_from_a_collected_callback
    if inside != "a plain weakref callback":  # a frame of sqlalchemy's: held until it returns, as a database call
        namespace = {"__name__": "sqlalchemy.event.registry", "signal": signal}
        exec(inspect.getsource(_signal_from_a_collected_callback), namespace)
        callback = namespace["_signal_from_a_collected_callback"]
    reached = False
    with pytest.raises(Interrupted), stop_on_signals():
        cycle = _Cycle()
        ref = weakref.ref(cycle, callback)
        del cycle
        gc.collect()  # the callback runs inside the collection
        _after_the_finalizer()
        reached = True
    assert not reached and ref() is None


def test_outside_database_calls_the_signal_is_raised_where_it_lands() -> None:
    assert protected_call(None) is None
    with pytest.raises(Interrupted) as stopped, stop_on_signals():
        signal.raise_signal(signal.SIGINT)
        pytest.fail("the signal did not stop the block")
    assert stopped.value.exit_code == 130


def test_a_signal_while_optuna_tells_a_finished_trial_stops_after_the_trial_is_recorded(
    stores: tuple[MlflowClient, str, optuna.Study],
) -> None:
    """Raised inside Optuna's ``_tell_with_warning``, the interrupt was masked by Optuna's own
    UnboundLocalError (its ``finally`` reads a variable the ``try`` never set): exit 1, not 143. This
    was the flaky SIGTERM of test_worker_recovery under load."""
    _, _, study = stores
    objective_done: list[bool] = []
    seen: list[bool] = []

    def objective(trial: optuna.Trial) -> float:
        x = trial.suggest_float("x", 0, 1)
        objective_done.append(True)  # the next database write is Optuna telling the result
        return x

    def signal_while_telling(*_args: object) -> None:
        if objective_done and not seen:
            seen.append(protected_call(inspect.currentframe()) is not None)
            signal.raise_signal(signal.SIGTERM)

    sqlalchemy.event.listen(sqlalchemy.engine.Engine, "before_cursor_execute", signal_while_telling)
    try:
        with pytest.raises(Interrupted), stop_on_signals():
            study.optimize(objective, n_trials=3)
    finally:
        sqlalchemy.event.remove(sqlalchemy.engine.Engine, "before_cursor_execute", signal_while_telling)
    assert seen == [True]
    (trial,) = study.trials  # stopped before a second trial began, the first one told in full
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value is not None
