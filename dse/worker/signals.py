"""Stopping cleanly when a person presses Ctrl-C or a scheduler sends SIGTERM (preemption, scancel).

The first SIGINT or SIGTERM raises :class:`Interrupted` where the main thread is (inside a
trial's forward pass, usually); the search records that trial as interrupted and queued
for a retry, closes its MLflow runs, writes the front and says how to resume. The
exception is not a KeyboardInterrupt on purpose: Lightning turns a KeyboardInterrupt
into ``sys.exit(1)`` and ignores every later Ctrl-C. A second signal kills the process
at once (the default action), for when the clean stop itself hangs.

A signal that lands inside a database call (MLflow's or Optuna's storage, SQLAlchemy, a
driver) or inside a finalizer is held back until that call returns, and raised in its caller;
inside Optuna's telling of a finished trial, until that trial's bookkeeping is done (raised
there, it would be masked by an ``UnboundLocalError`` of Optuna's and exit 1, not 143).
Raised inside SQLAlchemy, an exception that is not an ``Exception`` can leave a connection
checked out with its write transaction open: SQLite's lock, held by that lost connection,
then makes every write of the clean stop wait 20 s and fail with "database is locked".
Raised inside a ``__del__`` or a weakref callback, it would be printed and dropped.
"""

from __future__ import annotations

import contextlib
import gc
import os
import signal
import sys
import threading
from collections.abc import Iterator
from types import FrameType
from typing import Any, NoReturn

from dse.optuna_internals import trial_bookkeeping_frame

__all__ = ["Interrupted", "protected_call", "stop_on_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)
# modules whose calls must not be cut in the middle: they hold a transaction, a lock or a file
_DATABASE_MODULES = ("sqlalchemy.", "sqlite3", "psycopg", "alembic.", "mlflow.", "optuna.storages.")


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``exit_code`` is the shell's convention (130, 143)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.reported = False  # the command has logged what it kept
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


def _in_database(frame: FrameType) -> bool:
    return str(frame.f_globals.get("__name__", "")).startswith(_DATABASE_MODULES)


def _in_finalizer(frame: FrameType) -> bool:
    return frame.f_code.co_name == "__del__" or frame.f_globals.get("__name__") == "weakref"


def protected_call(frame: FrameType | None) -> FrameType | None:
    """The outermost frame of a database call, a finalizer or Optuna's telling of a trial's result that
    ``frame`` runs in, or None."""
    bookkeeping = trial_bookkeeping_frame(frame)
    if bookkeeping is not None:  # it encloses any database call under it
        return bookkeeping
    outermost = None
    while frame is not None:
        if _in_database(frame) or _in_finalizer(frame):
            outermost = frame
        frame = frame.f_back
    return outermost


def _die(signum: int) -> None:
    """Exit at once, as the signal's default action would."""
    for s in _SIGNALS:
        signal.signal(s, signal.SIG_DFL)
    os.kill(os.getpid(), signum)


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM raises :class:`Interrupted`; the next one kills.

    A signal arriving inside a database call is raised when that call returns, in its caller;
    inside a finalizer, at the next call or return after it; while the garbage collector runs callbacks
    (which drop what they raise), at the next call or return after the collection (a profile hook on
    the main thread watches for the moment).
    Only the main thread can install handlers: elsewhere (a notebook's worker thread) the block
    runs with the handlers it has.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    fired = False
    held: int | None = None  # a signal waiting for a database call to return
    collecting = False  # the garbage collector is running callbacks (weakref callbacks, finalizers)

    def fire(signum: int) -> NoReturn:
        nonlocal fired
        for s in _SIGNALS:
            signal.signal(s, signal.SIG_DFL)  # a second signal: no more clean-up, exit now
        fired = True
        raise Interrupted(signum)

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal held
        if fired or held is not None:
            # a second signal (or this handler came back after Lightning's teardown restored it): die now
            _die(signum)
            return
        call = protected_call(frame)
        if (call is None and not collecting) or sys.getprofile() is not None:  # (a user's profiler keeps its hook)
            fire(signum)
        held = signum
        # a finalizer's caller drops what it raises, and so does the garbage collector for any callback it runs
        # (SQLAlchemy's weakref callbacks among them): raise at the next call or return after it, outside the
        # collection
        returned = call is None

        def on_event(current: FrameType, event: str, _arg: Any) -> None:
            nonlocal returned
            if collecting or current.f_code is on_collection.__code__:  # (the collector's own callback too)
                returned = returned or (event == "return" and current is call)
                return
            if returned and event in ("call", "return"):
                sys.setprofile(None)
                fire(signum)
            if event == "return" and current is call:
                if not _in_database(call):
                    returned = True
                    return
                sys.setprofile(None)
                fire(signum)  # raised out of the profile hook: it surfaces in the caller of ``call``

        sys.setprofile(on_event)

    def on_collection(phase: str, _info: dict[str, int]) -> None:
        nonlocal collecting
        collecting = phase == "start"

    gc.callbacks.append(on_collection)
    for s in _SIGNALS:
        signal.signal(s, handler)
    try:
        yield
        if held is not None and not fired:  # someone else's sys.setprofile removed the hook: raise it here, not never
            fire(held)
    finally:
        gc.callbacks.remove(on_collection)
        if held is not None and not fired:
            sys.setprofile(None)
        for s, h in previous.items():
            signal.signal(s, h)
