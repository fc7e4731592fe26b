"""HV-3: the hypervisor reports and logs its own failures and recovery actions, to a
configurable destination. A real host supervisor (``nfvha hostd``) with its agent, on
loopback; the agent is killed and must be reported failed and restarted - in RFC 5424
syslog datagrams to the configured destination and in the host's report log."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfvha.agent.hostreport import REPORT_LOG
from nfvha.testbed.services import free_tcp_udp_port
from nfvha.util.runpaths import RunPaths, new_run_id

PATIENCE_S = 20.0  # how long a test waits for something that must happen (busy machine)
RFC5424 = re.compile(
    rb"^<(\d+)>1 (\S+) (\S+) nfvha-hostd (\d+) (\S+) \[nfvha@32473([^\]]*)\] \xef\xbb\xbf(.*)$",
    re.S)


def syslog_message(sock: socket.socket, msgid: str) -> tuple[int, dict[str, str], str]:
    """The next message with ``msgid``: (PRI, structured data, text)."""
    end = time.monotonic() + PATIENCE_S
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        data = sock.recv(4096)
        m = RFC5424.match(data)
        assert m is not None, f"not RFC 5424: {data!r}"
        if m.group(5).decode() == msgid:
            params = dict(re.findall(r'(\S+)="((?:[^"\\]|\\.)*)"', m.group(6).decode()))
            return int(m.group(1)), params, m.group(7).decode()
    raise TimeoutError(f"no {msgid} report within {PATIENCE_S} s")


@pytest.fixture
def receiver() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        yield s


@pytest.fixture
def hostd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, receiver: socket.socket
          ) -> Iterator[tuple[subprocess.Popen[bytes], Path]]:
    """A host supervisor whose agent streams to a controller that is not there (it
    keeps trying: enough for its supervisor). Stopped by pid afterwards."""
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    run = RunPaths(new_run_id())
    host_dir = run.host_dir("h1")
    host_dir.mkdir(parents=True)
    port = free_tcp_udp_port()
    cfg = {"run_id": run.run_id, "host": "h1", "python": sys.executable,
           "controller_ip": "127.0.0.1", "controller_port": free_tcp_udp_port(),
           "heartbeat_port": port, "mgmt_ip": "127.0.0.1", "cgroups": False,
           "settings": {"host_report_destinations": [
               f"syslog://127.0.0.1:{receiver.getsockname()[1]}"]}}
    path = host_dir / "agent.json"
    path.write_text(json.dumps(cfg))
    with open(host_dir / "hostd.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "nfvha.agent.hostd", "--config",
                                 str(path)], stdout=log, stderr=subprocess.STDOUT)
    try:
        yield proc, host_dir
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.mark.req("HV-3")
def test_an_agent_failure_and_its_restart_are_reported_to_syslog_and_logged(
        hostd: tuple[subprocess.Popen[bytes], Path], receiver: socket.socket) -> None:
    proc, host_dir = hostd
    pri, started, _ = syslog_message(receiver, "hostd-started")
    assert pri == 3 * 8 + 5  # daemon.notice
    agent = int(started["pid"])
    assert started["run"] and started["boot"]

    os.kill(agent, signal.SIGKILL)  # the agent: a child of the hostd this test started

    pri, failed, text = syslog_message(receiver, "agent-failed")
    assert pri == 3 * 8 + 3  # daemon.err
    assert int(failed["pid"]) == agent
    assert "SIGKILL" in failed["desc"] and "SIGKILL" in text
    assert float(failed["restart_in_s"]) > 0
    pri, restarted, _ = syslog_message(receiver, "agent-restarted")
    assert pri == 3 * 8 + 5
    assert int(restarted["replaces"]) == agent and int(restarted["pid"]) != agent

    logged = [json.loads(line) for line in (host_dir / REPORT_LOG).read_text().splitlines()]
    assert [r["what"] for r in logged] == ["hostd-started", "agent-failed", "agent-restarted"]
    assert logged[1]["pid"] == agent and logged[2]["replaces"] == agent
    assert proc.poll() is None  # the supervisor itself is unharmed
