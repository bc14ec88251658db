"""The lock that serializes appends to a journal file shared by workers on many hosts.

Like Optuna's :class:`~optuna.storages.journal.JournalFileSymlinkLock`, the lock is a symlink
``<journal>.lock`` (creating one is atomic on local, NFS and parallel file systems, across
hosts), so Optuna's own writers and dse's exclude each other. Optuna's version could not
recover from a holder killed while it held the lock (SIGKILL, preemption, a node lost):

- it judged staleness from the mtime of the link's *target*, and dse's journal paths are
  relative (``mlruns/optuna.journal``), so the link dangled, the check never ran, and every
  other worker spun on the dead holder's link forever;
- when several waiters judged a lock stale at once, each removed whatever link was there,
  the one another waiter had just taken included, so two appended at once and a release
  raised "did not possess lock".

Here the link's target names its holder (host, PID namespace, PID, a token fresh for each
acquisition). A waiter breaks the lock at once if the holder is a dead process on its own
host, else after seeing the same holder for ``grace_period`` seconds of its own clock (no
clocks compared across hosts); holders keep it for one append, milliseconds. Breaking renames
the link to a private name first (one waiter wins) and removes it only if it is the holder
judged dead, else it puts it back; a release removes only its own link.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from pathlib import Path

from dse.optuna_internals import JournalFileLock

__all__ = ["JournalLock"]

_logger = logging.getLogger(__name__)

_TAG = "dse-journal-lock"
_MAX_SLEEP_S = 0.2
_WARN_EVERY_S = 30.0


def _machine() -> str:
    """This host and PID namespace: where a PID names one process (containers on one host share its name)."""
    try:
        namespace = os.stat("/proc/self/ns/pid").st_ino
    except OSError:  # not Linux: PIDs are only trusted per host name; staleness then rests on the grace period
        return socket.gethostname()
    return f"{socket.gethostname()}/{namespace}"


def _holder(link: Path) -> str | None:
    """Who holds ``link`` (its target), or None if no one does."""
    try:
        return os.readlink(link)
    except FileNotFoundError:
        return None


def _process_is_dead(holder: str, machine: str) -> bool:
    """Whether ``holder`` names a process of this machine that no longer runs (False if unsure)."""
    parts = holder.split(":")
    if len(parts) != 4 or parts[0] != _TAG or parts[1] != machine:
        return False  # another host's, or Optuna's own link (its target is the journal path)
    try:
        os.kill(int(parts[2]), 0)
    except ProcessLookupError:
        return True
    except (PermissionError, ValueError):  # alive under another user / not a PID
        return False
    return False


class JournalLock(JournalFileLock):
    """An exclusive lock on ``journal``'s appends that a dead holder cannot keep.

    Args:
        journal: the journal file (its lock is ``<journal>.lock``).
        grace_period: seconds a waiter lets the same holder keep the lock before taking it for dead
            when it cannot check the holder's process (another host). Holders keep it milliseconds.
    """

    def __init__(self, journal: str | os.PathLike[str], grace_period: float = 30.0) -> None:
        if grace_period <= 0:
            raise ValueError(f"grace_period={grace_period!r}: must be > 0 seconds.")
        self.path = Path(f"{os.path.abspath(journal)}.lock")
        self.grace_period = grace_period
        self._machine = _machine()
        self._mine: str | None = None

    def acquire(self) -> bool:
        mine = f"{_TAG}:{self._machine}:{os.getpid()}:{uuid.uuid4().hex}"
        sleep_s = 0.001
        seen: str | None = None  # the holder seen last, and since when
        since = warned = time.monotonic()
        while True:
            try:
                os.symlink(mine, self.path)
            except FileExistsError:
                pass
            else:
                self._mine = mine
                return True
            holder = _holder(self.path)
            if holder is None:  # released meanwhile
                continue
            now = time.monotonic()
            if holder != seen:
                seen, since = holder, now
            if _process_is_dead(holder, self._machine):
                why = "its process is dead"
            elif now - since > self.grace_period:
                why = f"it held it for over {self.grace_period:g} s"
            else:
                if now - warned > _WARN_EVERY_S:
                    _logger.warning(
                        "Waiting %.0f s for the journal lock %s held by %s.", now - since, self.path, holder
                    )
                    warned = now
                time.sleep(sleep_s)
                sleep_s = min(2 * sleep_s, _MAX_SLEEP_S)
                continue
            self._break(holder, why)
            sleep_s = 0.001

    def release(self) -> None:
        mine, self._mine = self._mine, None
        if mine is None:
            raise RuntimeError(f"Released the journal lock {self.path} without holding it.")
        holder = self._take(self.path)
        if holder != mine:
            self._put_back(holder)
            _logger.warning(
                "The journal lock %s was taken from this worker while it held it (for over %g s: suspended?); "
                "its last append may have interleaved with another worker's.",
                self.path,
                self.grace_period,
            )

    def _break(self, holder: str, why: str) -> None:
        """Remove the lock if ``holder`` still holds it; a holder that took it meanwhile keeps it."""
        taken = self._take(self.path)
        if taken == holder:
            _logger.warning("Took over the journal lock %s from %s: %s.", self.path, holder, why)
        else:
            self._put_back(taken)

    def _take(self, link: Path) -> str | None:
        """Atomically remove ``link``; return its target (None if there was no link)."""
        private = link.with_name(f"{link.name}.{uuid.uuid4().hex}.taken")
        try:
            os.rename(link, private)  # of several processes renaming the same link, one gets it
        except FileNotFoundError:
            return None
        try:
            return os.readlink(private)
        finally:
            private.unlink()

    def _put_back(self, holder: str | None) -> None:
        """Give the lock back to ``holder`` (a live worker whose link was taken by mistake)."""
        if holder is None:
            return
        try:
            os.symlink(holder, self.path)
        except FileExistsError:  # a third worker took it in the microseconds it was free
            _logger.warning("The journal lock %s was held by two workers for one append.", self.path)
