"""Server processes the test bed runs itself (etcd members, PostgreSQL), known by pid.

A service is an argv, a log file and, once started, a pid with its start time
(``util.procs``: a pid alone can be reused). It is stopped by that pid, never by
name. The argv is complete on its own (user switch by ``setpriv``, which execs
in place), so the same argv can later be started detached inside a namespace by
``nfvi.spawn`` for ``nfvha up --cluster``; here it is started as a child in a
session of its own, so a test's Ctrl-C does not reach it and teardown decides.
"""

from __future__ import annotations

import os
import pwd
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nfvha.util.procs import is_same_process, start_ticks


class ServiceError(RuntimeError):
    """A service could not be started, or did not become ready in time."""


def free_tcp_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """``n`` distinct ports free right now (bound together so none repeats)."""
    socks: list[socket.socket] = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind((host, 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def free_tcp_udp_port(host: str = "127.0.0.1", attempts: int = 50) -> int:
    """A port free for both TCP and UDP right now (the sample counter serves both)."""
    for _ in range(attempts):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp:
            tcp.bind((host, 0))
            port = int(tcp.getsockname()[1])
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
                try:
                    udp.bind((host, port))
                except OSError:
                    continue
                return port
    raise ServiceError(f"no port free for TCP and UDP on {host} after {attempts} tries")


def wait_for(cond: Callable[[], bool], timeout_s: float, what: str,
             interval_s: float = 0.05) -> None:
    """Poll ``cond`` until it holds; ServiceError after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while not cond():
        if time.monotonic() >= deadline:
            raise ServiceError(f"timed out after {timeout_s:.1f} s waiting for {what}")
        time.sleep(interval_s)


@dataclass(frozen=True)
class RunAs:
    """A system user a server must run as (PostgreSQL refuses to run as root)."""

    name: str
    uid: int
    gid: int

    @classmethod
    def for_server(cls, preferred: Sequence[str] = ("postgres", "nobody")) -> RunAs | None:
        """None when not root (run as ourselves); else the first preferred user that exists."""
        if os.geteuid() != 0:
            return None
        for name in preferred:
            try:
                pw = pwd.getpwnam(name)
            except KeyError:
                continue
            return cls(name, pw.pw_uid, pw.pw_gid)
        raise ServiceError(f"running as root and none of the users {list(preferred)} exists")

    def wrap(self, argv: Sequence[str]) -> list[str]:
        return ["setpriv", f"--reuid={self.uid}", f"--regid={self.gid}", "--clear-groups",
                "--", *argv]

    def own(self, *paths: Path) -> None:
        for p in paths:
            os.chown(p, self.uid, self.gid)

    def reach(self, path: Path) -> None:
        """Let the user pass through ``path``'s ancestors (a temporary directory is 0700):
        search permission only, on the ancestors we own; nothing becomes listable."""
        for d in path.parents:
            st = d.stat()
            if st.st_uid == os.geteuid() and not st.st_mode & 0o001:
                d.chmod(st.st_mode | 0o001)


@dataclass
class ServiceProcess:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] | None = None
    pid: int | None = None
    ticks: int | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> None:
        if self.running():
            raise ServiceError(f"{self.name} is already running (pid {self.pid})")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            try:
                self._proc = subprocess.Popen(
                    self.argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    env=self.env, start_new_session=True)
            except OSError as e:
                raise ServiceError(f"cannot start {self.name} ({self.argv[0]}): {e}") from e
        self.pid = self._proc.pid
        self.ticks = start_ticks(self.pid)

    def running(self) -> bool:
        if self.pid is None or self.ticks is None:
            return False
        if self._proc is not None and self._proc.poll() is not None:
            return False
        return is_same_process(self.pid, self.ticks)

    def send(self, sig: int) -> bool:
        """Send ``sig`` if our process is still alive; True if sent."""
        if not self.running() or self.pid is None:
            return False
        try:
            os.kill(self.pid, sig)
        except ProcessLookupError:
            return False
        return True

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 15.0) -> None:
        """``sig``, wait for the exit; SIGKILL if it has not exited by ``timeout_s``."""
        if self.send(sig):
            try:
                self._wait(timeout_s)
            except ServiceError:
                self.send(signal.SIGKILL)
                self._wait(5.0)
        self._reap()

    def kill(self) -> None:
        self.stop(signal.SIGKILL, timeout_s=5.0)

    def log_tail(self, max_bytes: int = 2000) -> str:
        try:
            data = self.log_path.read_bytes()
        except OSError:
            return ""
        return data[-max_bytes:].decode(errors="replace")

    def _wait(self, timeout_s: float) -> None:
        if self._proc is not None:
            try:
                self._proc.wait(timeout_s)
            except subprocess.TimeoutExpired as e:
                raise ServiceError(f"{self.name} did not exit in {timeout_s} s") from e
        else:
            wait_for(lambda: not self.running(), timeout_s, f"{self.name} to exit")

    def _reap(self) -> None:
        if self._proc is not None and self._proc.poll() is not None:
            self._proc = None
        if not self.running():
            self.pid = self.ticks = None
