"""A search worker: who it is, how many CPU threads it may take, and whether its storage takes another.

Many workers join one study (a SLURM job array, several shells). Each is one process:
it names itself in its trials (host, pid, scheduler job) so ``dse.status`` can say who
is alive, and it takes only the CPUs its allocation gives it, so N workers on one
node do not oversubscribe it (torch would otherwise start one thread per core in each).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

from lightning.fabric.plugins.environments import LightningEnvironment

from dse.exceptions import ConfigError
from dse.store_urls import SQLITE_PREFIX, absolute_sqlite_url

__all__ = ["allocated_threads", "scheduler_job", "single_process", "sole_sqlite_worker", "worker_index", "worker_name"]

_logger = logging.getLogger(__name__)


def worker_name() -> str:
    """``host:pid`` of this process."""
    return f"{socket.gethostname()}:{os.getpid()}"


def scheduler_job() -> str | None:
    """The SLURM job this worker runs in (``<array job>_<task>`` for a job array), if any."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def worker_index(job_number: int | None = None) -> int:
    """This worker's index among those launched together: the SLURM array task, else a local worker's
    (``study.local_workers``), else ``job_number`` (a
    Hydra multirun's, which the command passes), else 0. Workers started at the same moment shift their
    sampler seed by it, so they do not all propose the same first points."""
    for variable in ("SLURM_ARRAY_TASK_ID", "DSE_WORKER_INDEX"):  # a job array's task; a local worker's index
        value = os.environ.get(variable, "")
        if value.isdigit():
            return int(value)
    return job_number or 0


def allocated_threads(configured: int | None) -> int | None:
    """Torch intra-op threads for this worker: ``configured`` if set, else the CPUs SLURM allocated
    to the task (``SLURM_CPUS_PER_TASK``), else None (torch's default: every core)."""
    if configured:
        return int(configured)
    cpus = os.environ.get("SLURM_CPUS_PER_TASK", "")
    return int(cpus) if cpus.isdigit() and int(cpus) > 0 else None


def single_process() -> LightningEnvironment:
    """The cluster environment of dse's Lightning Trainers (evaluation, retraining): one process, one device.

    The workers are dse's to manage. Left to itself, Lightning would detect a SLURM job and install
    its own requeue and SIGTERM handlers (which fight :mod:`dse.worker.signals` and submitit's), and warn
    on every Trainer of a machine that merely has ``srun`` installed.
    """
    return LightningEnvironment()


@contextlib.contextmanager
def sole_sqlite_worker(url: str) -> Iterator[None]:
    """Hold the one-worker lock of a SQLite study for the ``with`` block; refuse a second worker.

    SQLite serialises writers with a file lock and makes the others wait or fail with
    "database is locked"; heartbeats from several workers make that common. So one worker at
    a time owns a SQLite study (an advisory lock beside the file, released by the kernel when
    the process dies, even by SIGKILL), and a second is told which storage to use instead.
    Other storages: no lock.
    """
    if not url.startswith(SQLITE_PREFIX) or url.endswith(":memory:"):
        yield
        return
    try:
        import fcntl
    except ImportError:  # Windows: no flock
        yield
        return
    path = Path(absolute_sqlite_url(url).removeprefix(SQLITE_PREFIX) + ".worker.lock")
    with open(path, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise ConfigError(
                f"Another dse worker ({holder}) is running a study in {path.with_suffix('').with_suffix('')}. "
                "A SQLite storage serves one worker at a time. To run several workers on one study, use "
                "storage=journal (a file on a shared file system) or storage=postgres (a database server); "
                "otherwise wait for that worker to finish (re-running resumes)."
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"{worker_name()} {scheduler_job() or ''}".strip())
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
