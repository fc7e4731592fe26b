"""A real PostgreSQL server in a directory of its own (ADR 0012).

``initdb`` once, then ``postgres -D`` on a loopback port (and a unix socket in
``root/sock``). PostgreSQL refuses to run as root: as root the server runs as the
``postgres`` system user (Debian's package creates it), else ``nobody``, and the
directory is handed to that user.

Durability is the caller's choice: ``fsync=False`` (the default here, as the
SQLite store's ``synchronous=NORMAL``) still survives a crash of the server, since
every commit's WAL is written to the OS before the commit returns; only a machine
power loss can lose it. ``crash()`` stops the server with SIGQUIT (PostgreSQL's
"immediate" shutdown: no checkpoint, WAL replay at the next start), which is what
a crash leaves behind, and unlike SIGKILL of the postmaster it also ends the
backends, so the server can be started again at once.
"""

from __future__ import annotations

import glob
import re
import shutil
import signal
import subprocess
from pathlib import Path

import psycopg

from nfvha.testbed.services import (
    RunAs,
    ServiceError,
    ServiceProcess,
    free_tcp_ports,
    wait_for,
)

SUPERUSER = "nfvha"
DATABASE = "nfvha"


def postgres_bin_dir() -> Path:
    """Debian keeps the server binaries out of PATH, under /usr/lib/postgresql/<v>/bin."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: [int(x) for x in re.findall(r"\d+", p)])
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    if on_path is None:
        raise ServiceError("PostgreSQL is not installed: run scripts/bootstrap"
                           " (apt-get install postgresql)")
    return Path(on_path).resolve().parent


class PostgresServer:
    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int | None = None,
                 fsync: bool = False, bin_dir: Path | None = None) -> None:
        self.root = root
        self.host = host
        self.port = port or free_tcp_ports(1, host)[0]
        self.fsync = fsync
        self.bin_dir = bin_dir or postgres_bin_dir()
        self.run_as = RunAs.for_server()
        self.data_dir = root / "data"
        self.sock_dir = root / "sock"
        self.process = ServiceProcess("postgres", self._argv(), root / "postgres.log")

    def conninfo(self, dbname: str = DATABASE) -> str:
        return f"host={self.host} port={self.port} user={SUPERUSER} dbname={dbname}"

    def _as_user(self, argv: list[str]) -> list[str]:
        return self.run_as.wrap(argv) if self.run_as else argv

    def _argv(self) -> list[str]:
        return self._as_user([
            str(self.bin_dir / "postgres"), "-D", str(self.data_dir),
            "-c", f"listen_addresses={self.host}", "-c", f"port={self.port}",
            "-c", f"unix_socket_directories={self.sock_dir}",
            "-c", f"fsync={'on' if self.fsync else 'off'}", "-c", "synchronous_commit=on",
            "-c", "shared_buffers=32MB", "-c", "max_connections=60",
            "-c", "logging_collector=off",
        ])

    def init(self) -> None:
        """initdb, once (a data directory already there is kept)."""
        if (self.data_dir / "PG_VERSION").exists():
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.sock_dir.mkdir(exist_ok=True)
        if self.run_as:
            self.run_as.own(self.root, self.sock_dir)
            self.run_as.reach(self.root)
        argv = self._as_user([str(self.bin_dir / "initdb"), "-D", str(self.data_dir),
                              "-U", SUPERUSER, "--auth=trust", "-E", "UTF8", "--no-locale",
                              "--no-sync", "--no-instructions"])
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=120,
                              env={"PATH": "/usr/bin:/bin", "LC_ALL": "C"})
        if done.returncode != 0:
            raise ServiceError(f"initdb failed: {done.stderr.strip() or done.stdout.strip()}")

    def start(self, timeout_s: float = 30.0) -> None:
        """initdb if needed, start, wait until it accepts connections, create the database."""
        self.init()
        self.process.start()
        self.wait_ready(timeout_s)
        with psycopg.connect(self.conninfo("postgres"), autocommit=True,
                             connect_timeout=5) as conn:
            exists = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s",
                                  (DATABASE,)).fetchone()
            if exists is None:
                conn.execute(f'CREATE DATABASE "{DATABASE}"')

    def accepts_connections(self) -> bool:
        try:
            with psycopg.connect(self.conninfo("postgres"), connect_timeout=1):
                return True
        except psycopg.Error:
            return False

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        def ready() -> bool:
            if not self.process.running():
                raise ServiceError(f"postgres exited:\n{self.process.log_tail()}")
            return self.accepts_connections()

        wait_for(ready, timeout_s, f"postgres on {self.host}:{self.port}")

    def running(self) -> bool:
        return self.process.running()

    def stop(self) -> None:
        """Fast shutdown (SIGINT): sessions are ended, a checkpoint is written."""
        self.process.stop(signal.SIGINT)

    def crash(self) -> None:
        """Immediate shutdown (SIGQUIT): what a crash leaves, recovered from WAL at start."""
        self.process.stop(signal.SIGQUIT)

    def restart(self, timeout_s: float = 30.0) -> None:
        self.stop()
        self.start(timeout_s)
