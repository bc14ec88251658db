"""A throwaway PostgreSQL server on 127.0.0.1, for the multi-worker tests and the scaling benchmark.

``initdb`` + ``pg_ctl`` in a temporary directory, trust authentication for user ``dse``,
database ``dse``; stopped and deleted on exit. As root (CI), the server runs as the
``postgres`` user the Debian package creates.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["ServiceUnavailable", "free_port", "temporary_postgres"]


class ServiceUnavailable(RuntimeError):
    """The server cannot run on this machine (the reason says what is missing)."""


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for root in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (root / name).exists():
            return str(root / name)
    return None


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def temporary_postgres() -> Iterator[dict[str, str]]:
    """Start a server; yield the ``DSE_PG_*`` variables that ``storage=postgres`` reads."""
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise ServiceUnavailable("PostgreSQL server binaries not installed (apt-get install postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        no_user = subprocess.run(["id", "postgres"], capture_output=True, check=False).returncode
        if not shutil.which("runuser") or no_user:
            raise ServiceUnavailable("running as root without a 'postgres' user to own the cluster")
        as_user = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="dse-pg-"))  # pytest's tmp_path is 0700: the postgres user could not enter
    root.chmod(0o755)
    data = root / "pg"
    data.mkdir()
    if as_user:
        shutil.chown(data, "postgres")
    port = free_port()
    subprocess.run([*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "dse"], check=True, capture_output=True)
    options = f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c max_connections=200"
    subprocess.run(
        [*as_user, pg_ctl, "-D", str(data), "-l", str(data / "log"), "-w", "-o", options, "start"],
        check=True,
        capture_output=True,
    )
    try:
        import psycopg2

        con = psycopg2.connect(host="127.0.0.1", port=port, user="dse", dbname="postgres")
        con.autocommit = True
        con.cursor().execute("CREATE DATABASE dse")
        con.close()
        yield {
            "DSE_PG_HOST": "127.0.0.1",
            "DSE_PG_PORT": str(port),
            "DSE_PG_USER": "dse",
            "DSE_PG_PASSWORD": "",
            "DSE_PG_DB": "dse",
        }
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "fast", "stop"], capture_output=True, check=False)
        shutil.rmtree(root, ignore_errors=True)
