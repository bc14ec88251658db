"""Several worker processes of one study on this machine (``study.local_workers=N``).

Where one process leaves cores idle (small batches, serial work between forward passes), one-thread
workers side by side evaluate more trials per minute than one process with every thread (the README
says where it paid and where not). The command that asks for N workers is worker 0; it starts
workers 1..N-1 as the same command with one thread each, over the same storage (one that takes
several workers: journal or PostgreSQL), so every resume and recovery guarantee of a cluster's
workers holds. Worker 0 alone re-evaluates the front on the held-out images once the others are
done. A signal to worker 0 is passed on once to the others (each its own session, so a terminal's
Ctrl-C does not reach them twice), and it waits for them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from dse.exceptions import DSEError

__all__ = ["WORKER_INDEX_ENV", "LocalWorkers"]

_logger = logging.getLogger(__name__)
WORKER_INDEX_ENV = "DSE_WORKER_INDEX"  # a local worker's index (dse.worker.process.worker_index reads it)
_SET_BY_WORKER_0 = ("study.local_workers=", "evaluation.threads=", "final_eval.enabled=", "hydra.run.dir=")


@dataclass
class LocalWorkers:
    """Workers 1..n-1 of this command, started by :meth:`start` and waited for by :meth:`finish`."""

    n: int
    overrides: Sequence[str]  # the command line of worker 0 (Hydra's task overrides)
    run_dir: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _logs: list[IO[bytes]] = field(default_factory=list)
    _stopped: bool = False  # a second signal would kill a worker mid-cleanup: one is sent, once
    _finished: bool = False

    def start(self) -> None:
        kept = [o for o in self.overrides if not o.lstrip("+~").startswith(_SET_BY_WORKER_0)]
        for index in range(1, self.n):
            folder = self.run_dir / f"worker{index}"
            folder.mkdir(parents=True, exist_ok=True)
            log = open(folder / "worker.log", "wb")  # noqa: SIM115  (closed in finish)
            self._logs.append(log)
            command = [
                sys.executable,
                "-m",
                "dse.search",
                *kept,
                "study.local_workers=1",
                "evaluation.threads=1",
                "final_eval.enabled=false",
                f"hydra.run.dir={folder}",
            ]
            env = {**os.environ, WORKER_INDEX_ENV: str(index)}
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
            self.processes.append(process)
            _logger.info("Started local worker %d (pid %d), its log: %s", index, process.pid, folder / "worker.log")

    def stop(self, signum: int = signal.SIGTERM) -> None:
        """Pass one stop signal to the workers still running (they stop cleanly, as on a cluster)."""
        if self._stopped:
            return
        self._stopped = True
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signum)

    def close(self, timeout_s: float = 300) -> None:
        """On any way out of worker 0: stop the workers still running, wait for them, kill one that hangs."""
        if self._finished:
            return
        self.stop()
        try:
            self.finish(timeout_s)
        except subprocess.TimeoutExpired:
            for process in self.processes:
                process.kill()
            raise

    def finish(self, timeout_s: float | None = None) -> None:
        """Wait for every worker; a worker that failed is an error naming its log (a stop we asked for is not)."""
        if self._finished:
            return
        failed = []
        try:
            for index, process in enumerate(self.processes, start=1):
                code = process.wait(timeout=timeout_s)
                if code not in (0, 128 + signal.SIGTERM, 128 + signal.SIGINT):
                    failed.append(
                        f"worker {index} exited {code} (log: {self.run_dir / f'worker{index}' / 'worker.log'})"
                    )
        finally:
            for log in self._logs:
                log.close()
        self._finished = True
        if failed:
            raise DSEError("Local workers failed: " + "; ".join(failed) + ". What they finished is in the study.")
