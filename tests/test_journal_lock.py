"""The journal lock: a worker killed while appending stalls no one; a live holder is never robbed."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from dse.study.journal_lock import JournalLock, _machine

pytestmark = pytest.mark.slow  # timing-sensitive: waits on real processes and clocks

# dies holding the lock: SIGKILLed inside an append, after the write and before the lock is released
_KILLED_WHILE_APPENDING = """
import os, signal, optuna
from dse.study.storage import create_storage
study = optuna.create_study(storage=create_storage("journal:///mlruns/optuna.journal", heartbeat_interval=None),
                            study_name="s")
os.fsync = lambda fd: os.kill(os.getpid(), signal.SIGKILL)
study.set_user_attr("before", 1)
"""
_APPEND = """
import time, optuna
from dse.study.storage import create_storage
study = optuna.load_study(storage=create_storage("journal:///mlruns/optuna.journal", heartbeat_interval=None),
                          study_name="s")
start = time.monotonic()
study.set_user_attr("after", 2)
print(time.monotonic() - start, sorted(study.user_attrs.items()))
"""


def test_a_worker_killed_while_appending_does_not_stall_the_others(tmp_path: Path) -> None:
    # the default journal path is relative: Optuna's own lock then never expired, and the next writer spun forever
    dead = subprocess.run([sys.executable, "-c", _KILLED_WHILE_APPENDING], cwd=tmp_path, timeout=120, check=False)
    assert dead.returncode == -9
    assert os.path.islink(tmp_path / "mlruns/optuna.journal.lock")  # the dead worker's lock is left behind
    try:
        after = subprocess.run(
            [sys.executable, "-c", _APPEND], cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True
        )
    except subprocess.TimeoutExpired:
        pytest.fail("the next worker waited over 60 s on the lock of a worker that died holding it")
    waited, attrs = after.stdout.split(" ", 1)
    assert float(waited) < 5  # same host: the holder's process is seen dead at once, no grace period
    assert attrs.strip() == "[('after', 2), ('before', 1)]"
    assert not os.path.lexists(tmp_path / "mlruns/optuna.journal.lock")


def _acquire_in_thread(lock: JournalLock) -> threading.Event:
    done = threading.Event()
    threading.Thread(target=lambda: lock.acquire() and done.set(), daemon=True).start()
    return done


def test_a_live_holder_keeps_the_lock_and_its_death_frees_it_at_once(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    holder = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    try:
        os.symlink(f"dse-journal-lock:{_machine()}:{holder.pid}:token", f"{journal}.lock")
        lock = JournalLock(journal, grace_period=30)
        acquired = _acquire_in_thread(lock)
        assert not acquired.wait(2.0), "took the lock of a live process"
        assert os.readlink(f"{journal}.lock") == f"dse-journal-lock:{_machine()}:{holder.pid}:token"
    finally:
        holder.kill()
        holder.wait()
    assert acquired.wait(3.0), "the lock of a dead process was not taken over"
    assert os.readlink(f"{journal}.lock").startswith(f"dse-journal-lock:{_machine()}:{os.getpid()}:")
    lock.release()
    assert not os.path.lexists(f"{journal}.lock")


@pytest.mark.parametrize(
    "holder", ["dse-journal-lock:other-host/1:4242:token", "/a/journal/optuna.log"], ids=["other-host", "optuna"]
)
def test_a_holder_that_cannot_be_checked_keeps_the_lock_for_the_grace_period(tmp_path: Path, holder: str) -> None:
    # another host's worker, or Optuna's own symlink lock (its target is the journal): only time tells they are dead
    journal = tmp_path / "study.log"
    os.symlink(holder, f"{journal}.lock")
    lock = JournalLock(journal, grace_period=1.5)
    start = time.monotonic()
    lock.acquire()
    assert 1.5 <= time.monotonic() - start < 4
    lock.release()


def test_breaking_a_stale_lock_spares_a_worker_that_took_it_meanwhile(tmp_path: Path) -> None:
    journal = tmp_path / "study.log"
    fresh = f"dse-journal-lock:{_machine()}:{os.getpid()}:fresh"
    os.symlink(fresh, f"{journal}.lock")  # a live worker took it after another waiter judged the old holder dead
    JournalLock(journal)._break(f"dse-journal-lock:{_machine()}:999999:old", "test")
    assert os.readlink(f"{journal}.lock") == fresh


def test_a_release_never_removes_another_worker_s_lock(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    journal = tmp_path / "study.log"
    lock = JournalLock(journal)
    lock.acquire()
    os.unlink(f"{journal}.lock")  # taken over while this worker held it (suspended past the grace period)
    other = "dse-journal-lock:other-host/1:7:token"
    os.symlink(other, f"{journal}.lock")
    with caplog.at_level(logging.WARNING, logger="dse.study.journal_lock"):
        lock.release()
    assert os.readlink(f"{journal}.lock") == other
    assert "taken from this worker while it held it" in caplog.text
    with pytest.raises(RuntimeError, match="without holding it"):
        lock.release()
