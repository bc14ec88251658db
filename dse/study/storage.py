"""Where a study lives: SQLite (local default), PostgreSQL/MySQL (clusters), or a journal file.

RDB storages get a heartbeat: a worker killed mid-trial leaves a RUNNING trial
whose heartbeat stops; after ``grace_period`` seconds the next worker that runs
a trial marks it FAILED and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`
queues the same parameters again, so no assignment is lost. A worker killed
before its trial's *first* heartbeat (Optuna samples between creating the trial
and starting the heartbeat) is caught too: Optuna alone would leave that trial
RUNNING forever (:class:`HeartbeatRDBStorage`).

A journal file (``journal:///path/to/study.log``, for shared file systems without a
database) gets the same recovery from leases (:class:`LeaseJournalStorage`): each
running trial's worker rewrites a small file beside the journal every
``heartbeat_interval`` seconds, and a RUNNING trial whose lease is older than
``grace_period`` is failed and retried exactly as on a database; a worker killed while
appending to the journal does not stall the others (:class:`~dse.study.journal_lock.JournalLock`).
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from pathlib import Path

import optuna
from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import FrozenTrial, TrialState
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from dse.exceptions import ConfigError
from dse.optuna_internals import BaseHeartbeat, HeartbeatJournalStorage, RDBStorageWithStaleHook, trial_id
from dse.store_urls import absolute_sqlite_url, retry_on_race
from dse.study.journal_lock import JournalLock

__all__ = [
    "HeartbeatRDBStorage",
    "LeaseJournalStorage",
    "RetryDeadTrial",
    "create_storage",
    "describe_storage",
    "has_heartbeat",
    "retried_trial",
]

_JOURNAL = "journal:///"
_CONNECT_TIMEOUT_S = 8


class RetryDeadTrial:
    """Queue a failed trial's parameters again, at most ``max_retry`` times per assignment.

    As :class:`optuna.storages.RetryFailedTrialCallback` (same ``failed_trial`` = the first failed
    trial and ``retry_history`` system attributes, so Optuna's helpers read them), except that the
    retry starts without the dead trial's user attributes (its worker, MLflow run and partial
    results describe an evaluation that never finished), and that nothing is queued when those
    parameters are already COMPLETE or queued (another worker evaluated them meanwhile).
    """

    def __init__(self, max_retry: int = 3) -> None:
        self.max_retry = max_retry

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        history = [*trial.system_attrs.get("retry_history", []), trial.number]
        if len(history) > self.max_retry:
            return
        done_or_queued = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.WAITING))
        if any(_intended_params(t) == _intended_params(trial) for t in done_or_queued):
            return
        system_attrs = {"failed_trial": trial.system_attrs.get("failed_trial", trial.number), "retry_history": history}
        if "fixed_params" in trial.system_attrs:
            # An enqueued trial (the baseline, a seed) killed before all its parameters were suggested: its
            # retry is enqueued with the same fixed parameters, or the sampler would fill them in at random.
            system_attrs["fixed_params"] = trial.system_attrs["fixed_params"]
        study.add_trial(
            optuna.trial.create_trial(
                state=TrialState.WAITING,
                params=trial.params,
                distributions=trial.distributions,
                system_attrs=system_attrs,
            )
        )


def _intended_params(trial: FrozenTrial) -> dict[str, object]:
    """What a trial was meant to evaluate: an enqueued one's fixed parameters count before they are suggested."""
    return {**trial.params, **trial.system_attrs.get("fixed_params", {})}


def retried_trial(trial: FrozenTrial) -> int | None:
    """The trial that ``trial`` re-runs (the one that failed just before it), if it is a retry."""
    history = trial.system_attrs.get("retry_history")
    return int(history[-1]) if history else None


class HeartbeatRDBStorage(RDBStorageWithStaleHook):
    """An RDB storage whose stale trials also include RUNNING trials that never recorded a
    heartbeat and started more than ``grace_period`` seconds ago (their worker died while
    the sampler ran, before Optuna started the heartbeat thread)."""

    def extra_stale_trial_ids(self, study_id: int) -> list[int]:
        grace = timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
        now = datetime.now()  # Optuna stamps datetime_start with the worker's datetime.now()
        return [i for i, start in self.running_without_heartbeat(study_id) if start and now - start > grace]


class LeaseJournalStorage(HeartbeatJournalStorage):
    """A journal file whose RUNNING trials hold leases: ``<journal>.leases/<trial id>``.

    The journal itself is append-only and shared, so liveness lives beside it: Optuna's
    heartbeat thread calls :meth:`record_heartbeat`, which rewrites the trial's lease with
    the time and the worker (atomically: write then rename, safe on NFS and Lustre). A trial
    whose lease (or, before its first beat, whose start) is older than ``grace_period``
    seconds is stale; Optuna fails it before the next trial and the retry callback queues
    its parameters again. Workers' clocks must agree to within the grace period (NTP).
    """

    def __init__(
        self,
        path: Path,
        heartbeat_interval: int,
        grace_period: int | None = None,
        heartbeat_stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        path = Path(os.path.abspath(path))
        super().__init__(_journal_backend(path))
        self.leases = Path(f"{path}.leases")
        self.leases.mkdir(exist_ok=True)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period or 2 * heartbeat_interval
        self._stale_callback = heartbeat_stale_trial_callback
        self._owner = f"{socket.gethostname()}:{os.getpid()}"

    def record_heartbeat(self, trial_id: int) -> None:
        lease = self.leases / str(trial_id)
        tmp = lease.with_name(f"{trial_id}.{self._owner.replace(':', '.')}.tmp")
        tmp.write_text(f"{time.time()} {self._owner}\n")
        os.replace(tmp, lease)

    def lease_time(self, trial: FrozenTrial) -> float | None:
        """When ``trial``'s worker last renewed its lease (seconds since the epoch), if ever."""
        try:
            return float((self.leases / str(trial_id(trial))).read_text().split()[0])
        except (FileNotFoundError, ValueError, IndexError):
            return None

    def stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for t in self.running_trials(study_id):
            last = self.lease_time(t)
            if last is None and t.datetime_start is not None:
                last = t.datetime_start.timestamp()  # died before its first beat (while sampling)
            if last is not None and now - last > self.grace_period:
                stale.append(trial_id(t))
        return stale

    def set_trial_state_values(self, trial_id: int, state: TrialState, values: Sequence[float] | None = None) -> bool:
        changed = super().set_trial_state_values(trial_id, state, values)
        if state.is_finished():
            (self.leases / str(trial_id)).unlink(missing_ok=True)
        return changed

    def get_heartbeat_interval(self) -> int | None:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(self) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self._stale_callback


def create_storage(
    url: str, heartbeat_interval: int | None = 10, grace_period: int | None = 30, max_retry: int = 3
) -> BaseStorage:
    """Open (creating if needed) the Optuna storage at ``url``.

    Args:
        url: ``sqlite:///relative/or/absolute.db``, ``postgresql+psycopg2://user:pw@host/db``,
            or ``journal:///path/to/file.log``.
        heartbeat_interval: seconds between a running trial's heartbeats (database) or lease renewals
            (journal); None = off: a dead worker's trial then stays RUNNING.
        grace_period: seconds without a heartbeat after which a trial is stale.
        max_retry: how many times a stale trial's parameters are queued again.
    """
    retry = RetryDeadTrial(max_retry) if heartbeat_interval else None
    if url.startswith(_JOURNAL):
        return _open_journal(Path(url.removeprefix(_JOURNAL)), heartbeat_interval, grace_period, retry)
    url = absolute_sqlite_url(url)
    if "://" not in url:
        raise ConfigError(
            f"Storage URL {url!r} is not a database URL. Use sqlite:///mlruns/optuna.db, "
            "postgresql+psycopg2://user:password@host/dbname, or journal:///path/to/study.log."
        )
    engine_kwargs: dict = {"pool_pre_ping": True}
    if url.startswith("sqlite"):
        engine_kwargs = {"connect_args": {"timeout": 60}}
    elif url.startswith("postgresql"):  # an unreachable server fails in seconds instead of hanging
        engine_kwargs["connect_args"] = {"connect_timeout": _CONNECT_TIMEOUT_S}

    def open_rdb() -> RDBStorage:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return HeartbeatRDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval or None,
                grace_period=grace_period if heartbeat_interval else None,
                heartbeat_stale_trial_callback=retry,
            )

    try:
        # Processes opening a new store together (workers, or dse.status beside a starting search) race
        # to create Optuna's tables: PostgreSQL's CREATE TABLE IF NOT EXISTS is not atomic, and SQLite's
        # alembic row is inserted by both; the loser sees a duplicate key. The tables exist then.
        return retry_on_race(open_rdb, _is_creation_race)
    except ImportError as exc:
        raise ConfigError(
            f"The driver for {url.split(':')[0]!r} is missing ({exc}); pip install 'dse[postgres]'."
        ) from exc
    except Exception as exc:  # sqlalchemy OperationalError and friends
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        hint = (
            "Check that the server runs and accepts connections from this host, and the user, password "
            "and database name (DSE_PG_HOST, DSE_PG_PORT, DSE_PG_USER, DSE_PG_PASSWORD, DSE_PG_DB)."
            if url.startswith("postgresql")
            else "Check the path or URL and that this user may read and write it."
        )
        shown = describe_storage(url)  # the driver's message may repeat the URL, password included
        raise ConfigError(f"Cannot open the study storage {shown}: {reason.replace(url, shown)}. {hint}") from None


def _open_journal(
    path: Path, heartbeat_interval: int | None, grace_period: int | None, retry: RetryDeadTrial | None
) -> JournalStorage:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if heartbeat_interval:
            return LeaseJournalStorage(path, heartbeat_interval, grace_period, retry)
        return JournalStorage(_journal_backend(path))
    except OSError as exc:
        raise ConfigError(
            f"Cannot write the study journal {path}: {exc.strerror or exc}. Point storage.url (or the "
            "DSE_JOURNAL variable) at a file in a writable directory that every worker shares, "
            "e.g. storage.url=journal:///scratch/$USER/dse/study.log."
        ) from None


def _journal_backend(path: Path) -> JournalFileBackend:
    """The journal at ``path`` (made absolute: workers may change directory), locked so that a worker killed
    while appending does not stall the others (:class:`JournalLock`)."""
    journal = os.path.abspath(path)
    return JournalFileBackend(journal, lock_obj=JournalLock(journal))


def _is_creation_race(exc: Exception) -> bool:
    text = str(exc)
    races = ("UniqueViolation", "already exists", "DuplicateTable", "UNIQUE constraint failed", "database is locked")
    return any(race in text for race in races)


def describe_storage(url: str) -> str:
    """``url`` with its password field hidden (SQLAlchemy's own rendering), for logs and messages."""
    if url.startswith(_JOURNAL) or "://" not in url:
        return url
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


def has_heartbeat(storage: BaseStorage) -> bool:
    """Whether ``storage`` fails the trials of dead workers (a heartbeat on a database, leases on a journal)."""
    return isinstance(storage, BaseHeartbeat) and storage.get_heartbeat_interval() is not None
