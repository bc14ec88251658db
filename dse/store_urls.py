"""What the Optuna storage and the MLflow tracker share about their stores.

- SQLite URLs are made absolute when a store is opened: both libraries cache
  stores by URL, so a relative one would stick to the first working directory.
- Workers started together race to create a store's tables, or to write the same row (a tag both
  set at once); the loser retries.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

__all__ = ["SQLITE_PREFIX", "absolute_sqlite_url", "is_write_race", "retry_on_race"]

_logger = logging.getLogger(__name__)
T = TypeVar("T")
SQLITE_PREFIX = "sqlite:///"


def absolute_sqlite_url(url: str) -> str:
    """``sqlite:///rel/x.db`` -> ``sqlite:////abs/rel/x.db`` (its folder created); other URLs unchanged."""
    if not url.startswith(SQLITE_PREFIX):
        return url
    path = Path(url.removeprefix(SQLITE_PREFIX))
    if str(path) == ":memory:":
        return url
    path = path.resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    return f"{SQLITE_PREFIX}{path}"


# What a store says when two writers met: a row or table the other just created, or SQLite's writer lock.
_RACE_MESSAGES = (
    "UNIQUE constraint",
    "duplicate key",
    "already exists",
    "database is locked",
    "RESOURCE_ALREADY_EXISTS",
)


def is_write_race(exc: Exception) -> bool:
    """Whether ``exc`` is another writer's doing (worth a retry), not a broken or unreachable store."""
    return any(m in str(exc) for m in _RACE_MESSAGES)


def retry_on_race(fn: Callable[[], T], is_race: Callable[[Exception], bool], attempts: int = 5) -> T:
    """``fn()``, retried after a short random wait while it fails with an error ``is_race`` accepts."""
    for attempt in range(attempts):
        try:
            return fn()
        except Exception as exc:
            if attempt + 1 == attempts or not is_race(exc):
                raise
            _logger.info("Another worker wrote to the store at the same moment; retrying (%s)", type(exc).__name__)
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")
