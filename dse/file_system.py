"""Where dse can write: a real write tells, not the mode bits (root ignores those, a read-only mount does not)."""

from __future__ import annotations

import tempfile
from pathlib import Path

__all__ = ["unwritable_folder"]


def unwritable_folder(folder: Path) -> OSError | None:
    """Why a file cannot be created in ``folder`` (its nearest existing ancestor), or None if one can: a real
    write, not the mode bits (root ignores those, a read-only mount does not)."""
    folder = folder.absolute()
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        with tempfile.TemporaryFile(dir=folder):
            return None
    except OSError as exc:
        return exc
