"""Stopping cleanly when a person presses Ctrl-C or a scheduler sends SIGTERM (preemption, scancel).

The first SIGINT or SIGTERM raises :class:`Interrupted` where the main thread is (inside a
trial's forward pass, usually); the search records that trial as interrupted and queued
for a retry, closes its MLflow runs, writes the front and says how to resume. The
exception is not a KeyboardInterrupt on purpose: Lightning turns a KeyboardInterrupt
into ``sys.exit(1)`` and ignores every later Ctrl-C. A second signal kills the process
at once (the default action), for when the clean stop itself hangs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from types import FrameType

__all__ = ["Interrupted", "stop_on_signals"]

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived; ``exit_code`` is the shell's convention (130, 143)."""

    def __init__(self, signum: int) -> None:
        self.signum = signum
        self.reported = False  # the command has logged what it kept
        super().__init__(signal.Signals(signum).name)

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, the first SIGINT/SIGTERM raises :class:`Interrupted`; the next one kills.

    Only the main thread can install handlers: elsewhere (a notebook's worker thread) the block
    runs with the handlers it has.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in _SIGNALS}
    fired = False

    def handler(signum: int, frame: FrameType | None) -> None:
        nonlocal fired
        for s in _SIGNALS:
            signal.signal(s, signal.SIG_DFL)  # a second signal: no more clean-up, exit now
        if fired:  # this handler came back (Lightning's teardown restores the handlers it found): die now
            os.kill(os.getpid(), signum)
            return
        fired = True
        raise Interrupted(signum)

    for s in _SIGNALS:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
