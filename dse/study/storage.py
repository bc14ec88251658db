"""Where a study lives: SQLite (local default), PostgreSQL/MySQL (clusters), or a journal file.

RDB storages get a heartbeat: a worker killed mid-trial leaves a RUNNING trial
whose heartbeat stops; after ``grace_period`` seconds the next worker that runs
a trial marks it FAILED and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`
queues the same parameters again, so no assignment is lost. A worker killed
before its trial's *first* heartbeat (Optuna samples between creating the trial
and starting the heartbeat) is caught too: Optuna alone would leave that trial
RUNNING forever (:class:`HeartbeatRDBStorage`). A journal file
(``journal:///path/to/study.log``, for shared file systems without a database)
has no heartbeat: a killed trial stays RUNNING there.
"""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta
from pathlib import Path

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages._rdb import models  # the trial and heartbeat tables (no public query exists)
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from sqlalchemy import orm

from dse.exceptions import ConfigError
from dse.stores import absolute_sqlite_url, retry_on_race

__all__ = ["HeartbeatRDBStorage", "create_storage", "describe_storage", "has_heartbeat"]

_JOURNAL = "journal:///"


class HeartbeatRDBStorage(RDBStorage):
    """An RDB storage whose stale trials also include RUNNING trials that never recorded a
    heartbeat and started more than ``grace_period`` seconds ago (their worker died while
    the sampler ran, before Optuna started the heartbeat thread)."""

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        stale = super()._get_stale_trial_ids(study_id)
        grace = timedelta(seconds=self.grace_period or 2 * (self.heartbeat_interval or 0))
        session = self.scoped_session()
        try:
            running = (
                session.query(models.TrialModel)
                .options(orm.selectinload(models.TrialModel.heartbeats))
                .filter(models.TrialModel.study_id == study_id, models.TrialModel.state == TrialState.RUNNING)
                .all()
            )
            now = datetime.now()  # Optuna stamps datetime_start with the worker's datetime.now()
            never = [
                int(t.trial_id)
                for t in running
                if not t.heartbeats and t.datetime_start and now - t.datetime_start > grace
            ]
        finally:
            session.close()
        return stale + [trial_id for trial_id in never if trial_id not in stale]


def create_storage(
    url: str, heartbeat_interval: int | None = 10, grace_period: int | None = 30, max_retry: int = 3
) -> BaseStorage:
    """Open (creating if needed) the Optuna storage at ``url``.

    Args:
        url: ``sqlite:///relative/or/absolute.db``, ``postgresql+psycopg2://user:pw@host/db``,
            or ``journal:///path/to/file.log``.
        heartbeat_interval: seconds between a running trial's heartbeats (RDB only; None = off).
        grace_period: seconds without a heartbeat after which a trial is stale.
        max_retry: how many times a stale trial's parameters are queued again.
    """
    if url.startswith(_JOURNAL):
        path = Path(url.removeprefix(_JOURNAL))
        path.parent.mkdir(parents=True, exist_ok=True)
        return JournalStorage(JournalFileBackend(str(path)))
    url = absolute_sqlite_url(url)
    if "://" not in url:
        raise ConfigError(
            f"Storage URL {url!r} is not a database URL. Use sqlite:///mlruns/optuna.db, "
            "postgresql+psycopg2://user:password@host/dbname, or journal:///path/to/study.log."
        )
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}

    def open_rdb() -> RDBStorage:
        with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8; dse relies on them
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry) if heartbeat_interval else None
            return HeartbeatRDBStorage(
                url,
                engine_kwargs=engine_kwargs,
                heartbeat_interval=heartbeat_interval or None,
                grace_period=grace_period if heartbeat_interval else None,
                heartbeat_stale_trial_callback=retry,
            )

    try:
        # Workers started together race to create Optuna's tables; PostgreSQL's CREATE TABLE
        # IF NOT EXISTS is not atomic, so the loser sees a duplicate key. The tables exist then.
        return retry_on_race(open_rdb, _is_creation_race)
    except ImportError as exc:
        raise ConfigError(
            f"The driver for {url.split(':')[0]!r} is missing ({exc}); pip install 'dse[postgres]'."
        ) from exc
    except Exception as exc:  # sqlalchemy OperationalError and friends
        raise ConfigError(f"Cannot open the study storage {describe_storage(url)!r}: {exc}") from exc


def _is_creation_race(exc: Exception) -> bool:
    text = str(exc)
    return "UniqueViolation" in text or "already exists" in text or "DuplicateTable" in text


def describe_storage(url: str) -> str:
    """``url`` with any password masked, for logs."""
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        creds, host = rest.rsplit("@", 1)
        return f"{scheme}://{creds.split(':')[0]}:***@{host}"
    return url


def has_heartbeat(storage: BaseStorage) -> bool:
    """Whether ``storage`` fails the trials of dead workers (an RDB storage with a heartbeat)."""
    return isinstance(storage, RDBStorage) and storage.get_heartbeat_interval() is not None
