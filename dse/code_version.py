"""Which code produced a result: the git commit a trial or a report stage records beside its numbers."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["git_commit"]

# what decides a result; the report's own outputs (docs/) and local stores (mlruns/) do not count
_CODE = ("dse", "conf", "benchmarks", "search_spaces", "training", "pyproject.toml")


def git_commit() -> str | None:
    """The checkout's commit, with ``-dirty`` if its code or configs have uncommitted changes (the report's
    own outputs do not count), or None outside a git checkout."""
    root = Path(__file__).resolve().parents[1]  # the checkout holding dse/

    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=10, check=True).stdout

    try:
        commit = git("rev-parse", "--short=12", "HEAD").strip()
        changed = git("status", "--porcelain", "--", *_CODE).strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if changed else commit
