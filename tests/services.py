"""Real servers the tests start on 127.0.0.1 and stop afterwards: PostgreSQL (the multi-worker and
recovery tests) and a one-node SLURM cluster (the job-array test)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from dse.testing.postgres import ServiceUnavailable, free_port, temporary_postgres


@pytest.fixture
def postgres() -> Iterator[dict[str, str]]:
    """A PostgreSQL server on 127.0.0.1 (:func:`dse.testing.postgres.temporary_postgres`): the DSE_PG_* variables."""
    try:
        with temporary_postgres() as env:
            yield env
    except ServiceUnavailable as exc:
        pytest.skip(f"{exc} (.ci/run installs it)")


def _wait(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.5)


@pytest.fixture
def slurm() -> Iterator[dict[str, str]]:
    """A single-node SLURM cluster on 127.0.0.1: munged, slurmctld and slurmd in a temporary directory.

    Runs as root (as CI does): the daemons and jobs run as root, no accounting database (``sacct`` is
    disabled, so submitit follows jobs by their result files). Yields the environment clients need
    (``SLURM_CONF``).
    """
    daemons = [shutil.which(name) for name in ("munged", "slurmctld", "slurmd", "sbatch", "scontrol")]
    if not all(daemons):
        pytest.skip("SLURM (slurm-wlm) and munge are not installed (.ci/run installs them)")
    if os.geteuid() != 0:
        pytest.skip("the test cluster's slurmd must run as root to start jobs (CI runs as root)")
    root = Path(tempfile.mkdtemp(prefix="dse-slurm-"))
    root.chmod(0o755)
    munge = root / "munge"
    munge.mkdir(mode=0o755)
    (munge / "munge.key").write_bytes(os.urandom(1024))
    (munge / "munge.key").chmod(0o400)
    for sub in ("state", "spool", "log"):
        (root / sub).mkdir()
    memory_mb = int(Path("/proc/meminfo").read_text().split()[1]) // 1024 - 512
    conf = root / "slurm.conf"
    conf.write_text(
        "\n".join(
            [
                "ClusterName=dsetest",
                "SlurmctldHost=localhost(127.0.0.1)",
                f"SlurmctldPort={free_port()}",
                f"SlurmdPort={free_port()}",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={munge}/munge.sock",
                "SlurmUser=root",
                "SlurmdUser=root",
                f"StateSaveLocation={root}/state",
                f"SlurmdSpoolDir={root}/spool",
                f"SlurmctldPidFile={root}/slurmctld.pid",
                f"SlurmdPidFile={root}/slurmd.pid",
                f"SlurmctldLogFile={root}/log/slurmctld.log",
                f"SlurmdLogFile={root}/log/slurmd.log",
                "ProctrackType=proctrack/linuxproc",  # no cgroups in a container
                "TaskPlugin=task/none",
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "SchedulerType=sched/backfill",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU_Memory",
                "ReturnToService=2",
                "MpiDefault=none",
                "KillWait=10",  # SIGTERM, then SIGKILL 10 s later: what a preempted job gets
                f"NodeName=localhost NodeAddr=127.0.0.1 CPUs={os.cpu_count()} RealMemory={memory_mb} State=UNKNOWN",
                "PartitionName=debug Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            ]
        )
        + "\n"
    )
    env = {**os.environ, "SLURM_CONF": str(conf)}
    started: list[Path] = []
    try:
        subprocess.run(
            [
                "munged",
                "--force",  # as root
                f"--socket={munge}/munge.sock",
                f"--key-file={munge}/munge.key",
                f"--pid-file={munge}/munged.pid",
                f"--log-file={munge}/munged.log",
                f"--seed-file={munge}/seed",
            ],
            check=True,
            capture_output=True,
        )
        started.append(munge / "munged.pid")
        subprocess.run(["slurmctld", "-f", str(conf), "-i"], check=True, capture_output=True, env=env)
        started.append(root / "slurmctld.pid")
        subprocess.run(["slurmd", "-f", str(conf), "-N", "localhost"], check=True, capture_output=True, env=env)
        started.append(root / "slurmd.pid")

        def idle() -> bool:
            out = subprocess.run(["sinfo", "-h", "-o", "%t"], capture_output=True, text=True, env=env, check=False)
            return out.stdout.strip() == "idle"

        try:
            _wait(idle, 60, "the test SLURM node never became idle")
        except TimeoutError:
            logs = "\n".join(p.read_text()[-2000:] for p in (root / "log").glob("*.log"))
            raise RuntimeError(f"SLURM did not start:\n{logs}") from None
        yield {"SLURM_CONF": str(conf)}
    finally:
        subprocess.run(["scancel", "--full", "--user=root"], env=env, capture_output=True, check=False)
        for pid_file in reversed(started):
            with contextlib.suppress(OSError, ValueError):
                os.kill(int(pid_file.read_text().split()[0]), signal.SIGTERM)
        time.sleep(1)
        shutil.rmtree(root, ignore_errors=True)
