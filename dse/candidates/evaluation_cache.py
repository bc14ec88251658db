"""Evaluations kept on disk, keyed by the assignment and everything else that changes their result.

An exhaustive grid (``benchmarks/search_efficiency.py``) is evaluated once and survives
interruptions: each result is committed as soon as it is measured, and a re-run only
evaluates what is missing. The key is the assignment plus a *context*: the model and its
weights' digest, the evaluation images, the emulation and calibration settings, the cost
model, and the torch and dse versions. Change any of them and the cache misses instead of
returning a stale number. Results are stored in SQLite (one file, safe against a kill
mid-write).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dse.assignment import Assignment, assignment_key

__all__ = ["EvaluationCache", "file_digest"]


class EvaluationCache:
    """``get``/``put`` the metrics of an assignment under one fixed context.

    Args:
        path: the SQLite file (created with its folder).
        context: everything besides the assignment that decides the metrics (JSON-able).
    """

    def __init__(self, path: str | Path, context: Mapping[str, Any]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.context = json.dumps(context, sort_keys=True, default=str)
        self._context_digest = hashlib.sha256(self.context.encode()).hexdigest()
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS evaluations "
                "(key TEXT PRIMARY KEY, context TEXT NOT NULL, assignment TEXT NOT NULL, metrics TEXT NOT NULL)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    def _key(self, assignment: Assignment) -> tuple[str, str]:
        text = assignment_key(assignment)
        return hashlib.sha256(f"{self._context_digest}|{text}".encode()).hexdigest(), text

    def get(self, assignment: Assignment) -> dict[str, Any] | None:
        key, _ = self._key(assignment)
        with self._connect() as db:
            row = db.execute("SELECT metrics FROM evaluations WHERE key = ?", (key,)).fetchone()
        return json.loads(row[0]) if row else None

    def put(self, assignment: Assignment, metrics: Mapping[str, Any]) -> None:
        key, text = self._key(assignment)
        with self._connect() as db:
            db.execute(
                "INSERT OR REPLACE INTO evaluations VALUES (?, ?, ?, ?)",
                (key, self._context_digest, text, json.dumps(dict(metrics))),
            )

    def __len__(self) -> int:
        with self._connect() as db:
            return int(
                db.execute("SELECT COUNT(*) FROM evaluations WHERE context = ?", (self._context_digest,)).fetchone()[0]
            )


def file_digest(path: str | Path) -> str:
    """SHA-256 of a file (e.g. the model's weights), for a cache context."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()
