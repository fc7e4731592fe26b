"""Helpers for the local NFVI tests: waiting on conditions, sockets inside namespaces."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from nfvha.nfvi.spawn import NETNS_DIR, setns_net
from nfvha.util.procs import is_same_process

# A UDP echo server: binds, says "ready" in its log, then answers every datagram.
UDP_ECHO = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind((sys.argv[1], int(sys.argv[2])))
print("ready", flush=True)
while True:
    data, peer = s.recvfrom(2048)
    s.sendto(b"echo:" + data, peer)
"""


def wait_until(condition: Callable[[], bool], timeout: float = 5.0, what: str = "it") -> None:
    """Poll ``condition`` with a short back-off; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    delay = 0.002
    while not condition():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(delay)
        delay = min(delay * 2, 0.05)


def wait_dead(pid: int, ticks: int, timeout: float = 5.0) -> None:
    wait_until(lambda: not is_same_process(pid, ticks), timeout, f"pid {pid} to die")


def netns_inode(netns: str) -> int:
    return os.stat(os.path.join(NETNS_DIR, netns)).st_ino


def proc_netns_inode(pid: int) -> int:
    return os.stat(f"/proc/{pid}/ns/net").st_ino


def socket_in_netns(netns: str | None, kind: int = socket.SOCK_DGRAM) -> socket.socket:
    """A socket that lives in ``netns`` (None: this process's namespace).

    A socket belongs to the namespace of the thread that created it, so a throw-away
    thread joins the namespace just to create it; no process is started.
    """
    if netns is None:
        return socket.socket(socket.AF_INET, kind)
    made: list[socket.socket] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            setns_net(os.path.join(NETNS_DIR, netns))
            made.append(socket.socket(socket.AF_INET, kind))
        except BaseException as e:
            errors.append(e)

    t = threading.Thread(target=work)
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return made[0]


def udp_roundtrip(
    netns: str | None, dst: tuple[str, int], payload: bytes = b"ping", timeout: float = 5.0
) -> bytes:
    """Send ``payload`` from ``netns`` to ``dst`` until an answer comes back; return it."""
    with socket_in_netns(netns) as s:
        s.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while True:
            s.sendto(payload, dst)
            try:
                data, _ = s.recvfrom(2048)
                return data
            except TimeoutError:
                if time.monotonic() >= deadline:
                    raise AssertionError(f"no UDP answer from {dst} in {timeout}s") from None


def log_has(path: Path, text: str) -> bool:
    try:
        return text in path.read_text()
    except FileNotFoundError:
        return False


def echo_argv(addr: str, port: int) -> list[str]:
    return [sys.executable, "-I", "-S", "-c", UDP_ECHO, addr, str(port)]
