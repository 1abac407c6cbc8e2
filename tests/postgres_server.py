"""A real PostgreSQL server for a test: initdb in a temporary directory, `postgres` on 127.0.0.1.

Debian's `postgresql` package puts the server binaries under /usr/lib/postgresql/<major>/bin (not on
PATH). PostgreSQL refuses to run as root, so when the tests run as root the server runs as the
package's `postgres` system user (its files in a directory that user owns). The server is stopped
by its PID, and its directory removed, on exit.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"
USER = "facetalk"
DATABASE = "dagster"


def postgres_bin_dir() -> Path | None:
    """The newest installed server's bin directory, or None when no server is installed."""
    found = [p.parent for p in Path("/usr/lib/postgresql").glob("*/bin/initdb") if (p.parent / "postgres").exists()]
    return max(found, key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0) if found else None


@dataclass(frozen=True)
class PostgresServer:
    port: int
    password: str
    log_path: Path

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* settings that reach this server's `dagster` database."""
        return {
            "DAGSTER_PG_HOST": HOST,
            "DAGSTER_PG_PORT": str(self.port),
            "DAGSTER_PG_USERNAME": USER,
            "DAGSTER_PG_PASSWORD": self.password,
            "DAGSTER_PG_DB": DATABASE,
        }

    def log_tail(self, n_chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-n_chars:] if self.log_path.exists() else ""


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _run_as() -> dict:
    """subprocess arguments that drop root to the `postgres` user (PostgreSQL refuses root)."""
    if os.geteuid() != 0:
        return {}
    user = pwd.getpwnam("postgres")  # created by Debian's postgresql package
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _chown_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(path, user.pw_uid, user.pw_gid)


@contextmanager
def running_postgres(bin_dir: Path, timeout: float = 60.0) -> Iterator[PostgresServer]:
    """A fresh cluster with password (scram) authentication over TCP and an empty `dagster` database."""
    import psycopg2

    # Not pytest's tmp_path: its parents are private to root, the server user could not enter.
    root = Path(tempfile.mkdtemp(prefix="facetalk-postgres-"))
    process = None
    try:
        data, password = root / "data", secrets.token_hex(12)
        password_file = root / "password"
        password_file.write_text(password + "\n")
        for path in (root, password_file):
            _chown_to_server_user(path)
        initdb = [
            str(bin_dir / "initdb"), "-D", str(data), "-U", USER, f"--pwfile={password_file}",
            "--auth-host=scram-sha-256", "--auth-local=scram-sha-256", "-E", "UTF8", "--no-sync",
        ]  # fmt: skip
        done = subprocess.run(initdb, cwd=root, capture_output=True, text=True, check=False, **_run_as())
        if done.returncode != 0:
            raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        port, log_path = _free_port(), root / "server.log"
        command = [
            str(bin_dir / "postgres"), "-D", str(data), "-h", HOST, "-p", str(port), "-k", str(root),
            "-c", "fsync=off", "-c", "max_connections=200",
        ]  # fmt: skip
        with open(log_path, "wb") as log:
            _chown_to_server_user(log_path)
            process = subprocess.Popen(command, cwd=root, stdout=log, stderr=subprocess.STDOUT, **_run_as())
        server = PostgresServer(port, password, log_path)
        deadline = time.monotonic() + timeout
        while True:
            try:
                connection = psycopg2.connect(host=HOST, port=port, user=USER, password=password, dbname="postgres")
                break
            except psycopg2.OperationalError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start:\n{server.log_tail()}") from None
                time.sleep(0.2)
        connection.autocommit = True
        with connection.cursor() as cursor:
            cursor.execute(f"CREATE DATABASE {DATABASE}")
        connection.close()
        yield server
    finally:
        if process is not None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown: ends sessions, no waiting for clients
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        shutil.rmtree(root, ignore_errors=True)
