"""The host supervisor's side of liveness (ADR 0015) against a fake director, on
loopback: real ``hostd --liveness-only`` processes, real UDP.

Each host listens on 127.0.0.1 (its management address, shared, with its own port)
and on 127.0.0.1x (its data address): witnesses ping the data address.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from nfvha.agent.liveness_endpoint import LivenessEndpoint
from nfvha.testbed.services import free_tcp_udp_port
from nfvha.wire.liveness import DATAGRAM_BYTES, Datagram, Kind, decode, heartbeat_fields

HEARTBEAT_MS = 50
PROBE_TIMEOUT_MS = 1000  # wide: the machine is shared and loaded
PATIENCE_S = 10.0  # how long a test waits for something that must happen


@dataclass
class Host:
    name: str
    mgmt: tuple[str, int]
    probe: tuple[str, int]
    proc: subprocess.Popen[bytes]


def udp_socket(ip: str = "127.0.0.1") -> socket.socket:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((ip, 0))
    return s


def receive(sock: socket.socket, want: Callable[[bytes, tuple[str, int]], bool],
            timeout_s: float = PATIENCE_S) -> tuple[bytes, tuple[str, int]] | None:
    """The first datagram ``want`` accepts within the time, or None."""
    end = time.monotonic() + timeout_s
    while (left := end - time.monotonic()) > 0:
        sock.settimeout(left)
        try:
            data, addr = sock.recvfrom(4096)
        except TimeoutError:
            return None
        if want(data, addr):
            return data, addr
    return None


def result_for(nonce: int) -> Callable[[bytes, tuple[str, int]], bool]:
    def want(data: bytes, _: tuple[str, int]) -> bool:
        try:
            d = decode(data)
        except ValueError:
            return False
        return d.kind is Kind.PROBE_RESULT and d.nonce == nonce
    return want


def probe_request(target: str, addr: tuple[str, int], nonce: int) -> bytes:
    return Datagram(Kind.PROBE_REQUEST, target, nonce=nonce, ip=addr[0], port=addr[1]).encode()


@pytest.fixture
def director() -> Iterator[socket.socket]:
    with udp_socket() as s:
        yield s


@pytest.fixture
def hosts(tmp_path: Path, director: socket.socket) -> Iterator[dict[str, Host]]:
    """Three hostd processes heartbeating the fake director; stopped (by pid) after."""
    started: dict[str, Host] = {}
    try:
        for i, name in enumerate(("h1", "h2", "h3"), start=1):
            port = free_tcp_udp_port()
            cfg = {"host": name, "run_id": "proto", "mgmt_ip": "127.0.0.1",
                   "probe_ip": f"127.0.0.1{i}", "heartbeat_port": port,
                   "controller_ip": "127.0.0.1", "controller_port": director.getsockname()[1],
                   "settings": {"host_heartbeat_interval_ms": HEARTBEAT_MS,
                                "host_probe_timeout_ms": PROBE_TIMEOUT_MS}}
            path = tmp_path / f"{name}.json"
            path.write_text(json.dumps(cfg))
            with open(tmp_path / f"{name}.log", "wb") as log:
                proc = subprocess.Popen(
                    [sys.executable, "-m", "nfvha.agent.hostd", "--config", str(path),
                     "--liveness-only"], stdout=log, stderr=subprocess.STDOUT)
            started[name] = Host(name, ("127.0.0.1", port), (f"127.0.0.1{i}", port), proc)
        yield started
    finally:
        for h in started.values():
            if h.proc.poll() is None:
                os.kill(h.proc.pid, signal.SIGCONT)
                h.proc.terminate()
        for h in started.values():
            try:
                h.proc.wait(5)
            except subprocess.TimeoutExpired:
                h.proc.kill()
                h.proc.wait(5)


def wait_heartbeats(director: socket.socket, names: set[str]) -> dict[str, list[tuple[int, int]]]:
    """At least three heartbeats from each of ``names``: host -> [(boot, seq)]."""
    seen: dict[str, list[tuple[int, int]]] = {}

    def want(data: bytes, _: tuple[str, int]) -> bool:
        assert len(data) == DATAGRAM_BYTES
        fields = heartbeat_fields(data)
        assert fields is not None, data
        host, boot, seq = fields
        seen.setdefault(host, []).append((boot, seq))
        return all(len(seen.get(n, ())) >= 3 for n in names)

    assert receive(director, want) is not None, f"heartbeats seen: {seen}"
    return seen


def test_heartbeats_are_64_byte_datagrams_to_the_director_only(
    director: socket.socket, hosts: dict[str, Host]
) -> None:
    seen = wait_heartbeats(director, set(hosts))
    assert set(seen) == {"h1", "h2", "h3"}
    for beats in seen.values():
        boots = {b for b, _ in beats}
        seqs = [s for _, s in beats]
        assert len(boots) == 1 and boots != {0}  # one boot id per supervisor start
        assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    # Different supervisors, different boot ids.
    assert len({beats[0][0] for beats in seen.values()}) == 3


def test_witness_pings_the_target_on_its_data_address_and_reports_reached(
    director: socket.socket, hosts: dict[str, Host]
) -> None:
    wait_heartbeats(director, set(hosts))
    h1, h2 = hosts["h1"], hosts["h2"]
    t0 = time.monotonic()
    director.sendto(probe_request("h2", h2.probe, 1111), h1.mgmt)
    got = receive(director, result_for(1111))
    assert got is not None, "no probe result"
    d = decode(got[0])
    assert (d.name, d.reached) == ("h2", True)
    assert got[1] == h1.mgmt  # the result comes from where the witness was asked
    assert time.monotonic() - t0 < PATIENCE_S


def test_witness_reports_not_reached_for_a_stopped_or_dead_target(
    director: socket.socket, hosts: dict[str, Host]
) -> None:
    wait_heartbeats(director, set(hosts))
    h1, h2, h3 = hosts["h1"], hosts["h2"], hosts["h3"]
    os.kill(h2.proc.pid, signal.SIGSTOP)
    try:
        t0 = time.monotonic()
        director.sendto(probe_request("h2", h2.probe, 2222), h1.mgmt)
        got = receive(director, result_for(2222))
        waited = time.monotonic() - t0
    finally:
        os.kill(h2.proc.pid, signal.SIGCONT)
    assert got is not None, "no probe result for a stopped target"
    assert decode(got[0]).reached is False
    # Not before the probe timeout: the witness gave the target all of it.
    assert waited >= PROBE_TIMEOUT_MS / 1000 * 0.9, waited
    h3.proc.kill()
    h3.proc.wait(5)
    director.sendto(probe_request("h3", h3.probe, 3333), h1.mgmt)
    got = receive(director, result_for(3333))
    assert got is not None and decode(got[0]).reached is False
    # The stopped one, continued, answers again.
    director.sendto(probe_request("h2", h2.probe, 4444), h1.mgmt)
    got = receive(director, result_for(4444))
    assert got is not None and decode(got[0]).reached is True


def test_only_the_named_target_answering_from_where_it_was_pinged_counts(
    director: socket.socket, hosts: dict[str, Host]
) -> None:
    """A stand-in target owned by the test: the witness pings it from its data address;
    an ACK with another name, another nonce or from another address does not count."""
    wait_heartbeats(director, set(hosts))
    h1 = hosts["h1"]
    with udp_socket("127.0.0.30") as target, udp_socket("127.0.0.32") as impostor:
        director.sendto(probe_request("h9", target.getsockname(), 5555), h1.mgmt)
        ping = receive(target, lambda d, _: decode(d).kind is Kind.PING)
        assert ping is not None, "the witness did not ping"
        data, source = ping
        assert source == h1.probe  # from the witness's data address
        assert decode(data).name == "h9"
        nonce = decode(data).nonce
        target.sendto(Datagram(Kind.ACK, "h8", nonce=nonce).encode(), source)
        target.sendto(Datagram(Kind.ACK, "h9", nonce=nonce + 1).encode(), source)
        impostor.sendto(Datagram(Kind.ACK, "h9", nonce=nonce).encode(), source)
        got = receive(director, result_for(5555))
        assert got is not None and decode(got[0]).reached is False
        # The real answer counts (to a ping of this probe: the last one's second ping
        # is still queued).
        while receive(target, lambda d, a: True, timeout_s=0.01) is not None:
            pass
        director.sendto(probe_request("h9", target.getsockname(), 5556), h1.mgmt)
        ping = receive(target, lambda d, _: decode(d).kind is Kind.PING)
        assert ping is not None
        target.sendto(Datagram(Kind.ACK, "h9", nonce=decode(ping[0]).nonce).encode(), source)
        got = receive(director, result_for(5556))
        assert got is not None and decode(got[0]).reached is True


def test_probe_request_not_from_a_controller_is_ignored(
    director: socket.socket, hosts: dict[str, Host]
) -> None:
    wait_heartbeats(director, set(hosts))
    h1 = hosts["h1"]
    with udp_socket() as stranger, udp_socket("127.0.0.31") as target:
        stranger.sendto(probe_request("h9", target.getsockname(), 6666), h1.mgmt)
        # Also to the data address, where pings (not requests) are expected.
        stranger.sendto(probe_request("h9", target.getsockname(), 6667), h1.probe)
        # A real request afterwards is served: the stranger's were not merely slow.
        director.sendto(probe_request("h2", hosts["h2"].probe, 6668), h1.mgmt)
        assert receive(director, result_for(6668)) is not None
        assert receive(target, lambda d, a: True, timeout_s=PROBE_TIMEOUT_MS / 1000) is None
        assert receive(stranger, lambda d, a: True, timeout_s=0.05) is None


def test_pings_are_answered_by_any_host_with_its_name(
    director: socket.socket, hosts: dict[str, Host]
) -> None:
    wait_heartbeats(director, set(hosts))
    with udp_socket() as s:
        for h in hosts.values():
            for addr in (h.mgmt, h.probe):
                s.sendto(Datagram(Kind.PING, h.name, nonce=77).encode(), addr)
                got = receive(s, lambda d, a, addr=addr: a == addr)  # type: ignore[misc]
                assert got is not None, f"{h.name} at {addr} did not answer"
                d = decode(got[0])
                assert (d.kind, d.name, d.nonce) == (Kind.ACK, h.name, 77)


# -- in process: what the witness sends, observed at the socket ---------------------------


async def test_a_target_outside_the_allowed_networks_is_never_pinged(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sent: list[tuple[bytes, tuple[str, int]]] = []
    real_send = LivenessEndpoint._send

    def record(sock: socket.socket | None, data: bytes, addr: tuple[str, int]) -> None:
        sent.append((data, addr))
        if addr[0].startswith("127."):  # nothing of this test leaves loopback
            real_send(sock, data, addr)

    monkeypatch.setattr(LivenessEndpoint, "_send", staticmethod(record))
    with udp_socket() as director:
        ep = LivenessEndpoint("w1", "127.0.0.1", free_tcp_udp_port(),
                              [director.getsockname()], probe_ip="127.0.0.40",
                              interval_s=60, probe_timeout_s=0.05)
        ep.start()
        try:
            assert ep._mgmt_sock is not None
            for n, ip in enumerate(("192.0.2.1", "10.0.0.1", "203.0.113.5", "0.0.0.0")):
                ep.handle(ep._mgmt_sock, probe_request("x", (ip, 7701), n + 1),
                          director.getsockname())
            assert sent == []  # neither pinged nor answered
            # The same request for an allowed address is served (the check is the address).
            for ip in ("198.18.0.10", "127.0.0.41"):
                ep.handle(ep._mgmt_sock, probe_request("x", (ip, 7701), 9),
                          director.getsockname())
            assert [(decode(d).kind, a) for d, a in sent] == [
                (Kind.PING, ("198.18.0.10", 7701)), (Kind.PING, ("127.0.0.41", 7701))]
        finally:
            ep.close()
