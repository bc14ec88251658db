"""Where a study lives: SQLite (local default), PostgreSQL/MySQL (clusters), or a journal file.

RDB storages get a heartbeat: a worker killed mid-trial leaves a RUNNING trial
whose heartbeat stops; after ``grace_period`` seconds the next worker that runs
a trial marks it FAILED and :class:`optuna.storages.RetryHeartbeatStaleTrialCallback`
queues the same parameters again, so no assignment is lost. A journal file
(``journal:///path/to/study.log``, for shared file systems without a database)
has no heartbeat: a killed trial stays RUNNING there.
"""

from __future__ import annotations

import logging
import random
import time
import warnings
from pathlib import Path

from optuna.exceptions import ExperimentalWarning
from optuna.storages import BaseStorage, JournalStorage, RDBStorage, RetryHeartbeatStaleTrialCallback
from optuna.storages.journal import JournalFileBackend

from dse.exceptions import ConfigError

__all__ = ["create_storage", "describe_storage"]

_logger = logging.getLogger(__name__)
_JOURNAL = "journal:///"


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
    if url.startswith("sqlite:///"):
        path = Path(url.removeprefix("sqlite:///"))
        if str(path) != ":memory:":
            path = path.resolve()  # relative to the working directory now, not whenever it is next used
            path.parent.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{path}"
    elif "://" not in url:
        raise ConfigError(
            f"Storage URL {url!r} is not a database URL. Use sqlite:///mlruns/optuna.db, "
            "postgresql+psycopg2://user:password@host/dbname, or journal:///path/to/study.log."
        )
    engine_kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    heartbeat = {}
    if heartbeat_interval:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        heartbeat = {
            "heartbeat_interval": heartbeat_interval,
            "grace_period": grace_period,
            "heartbeat_stale_trial_callback": retry,
        }
    for attempt in range(_CREATE_ATTEMPTS):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental" since Optuna 2.8; dse relies on them
                warnings.simplefilter("ignore", ExperimentalWarning)
                return RDBStorage(url, engine_kwargs=engine_kwargs, **heartbeat)
        except ImportError as exc:
            raise ConfigError(f"The driver for {url.split(':')[0]!r} is missing ({exc}); pip install 'dse[postgres]'.") from exc
        except Exception as exc:  # sqlalchemy OperationalError and friends
            # Workers started together race to create Optuna's tables; PostgreSQL's CREATE TABLE
            # IF NOT EXISTS is not atomic, so the loser sees a duplicate key. The tables exist now.
            if _is_creation_race(exc) and attempt + 1 < _CREATE_ATTEMPTS:
                _logger.info("Another worker is creating the study tables; retrying (%s)", type(exc).__name__)
                time.sleep(0.5 + random.random())
                continue
            raise ConfigError(f"Cannot open the study storage {describe_storage(url)!r}: {exc}") from exc
    raise AssertionError("unreachable")


_CREATE_ATTEMPTS = 5


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

