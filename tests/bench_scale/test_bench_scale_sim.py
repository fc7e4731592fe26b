"""The host simulator of ``nfvha bench scale`` speaks the real wire protocols: liveness
datagrams (ADR 0015) as a host supervisor does (``SupervisorSim``), and the agent's
event stream (``AgentSim``). Tested over real loopback sockets against a stand-in for
the controller and its director."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import pytest

from nfvha.bench.scaleplan import SimHostSpec, SimSpec, SimVm, host_ip
from nfvha.bench.simagents import AgentSim
from nfvha.bench.simsupervisors import SupervisorSim
from nfvha.testbed.services import free_tcp_udp_port
from nfvha.wire import liveness as lw
from nfvha.wire.director import Notice
from nfvha.wire.frames import (
    AGENT_FRAME,
    Ack,
    Command,
    EventFrame,
    Hello,
    Inventory,
    Reply,
    Welcome,
    encode,
)

INTERVAL_MS = 20
PROBE_TIMEOUT_MS = 60
WAIT_S = 10.0  # generous: a loaded machine


@dataclass
class Stream:
    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    hello: Hello

    async def frame(self) -> Hello | EventFrame | Inventory | Reply:
        line = await asyncio.wait_for(self.reader.readline(), WAIT_S)
        assert line, "the simulated agent closed its stream"
        return AGENT_FRAME.validate_json(line)

    def send(self, frame: Welcome | Ack | Command) -> None:
        self.writer.write(encode(frame))


@dataclass
class FakeController:
    """The controller's address: UDP (the director's heartbeats, probe results,
    notices) and TCP (agent streams) on one port."""

    udp: socket.socket
    port: int
    streams: asyncio.Queue[Stream] = field(default_factory=asyncio.Queue)

    async def datagram(self, match: Callable[[bytes, tuple[str, int]], bool],
                       timeout_s: float = WAIT_S) -> tuple[bytes, tuple[str, int]]:
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout_s
        while True:
            left = end - loop.time()
            if left <= 0:
                raise TimeoutError("no matching datagram")
            data, addr = await asyncio.wait_for(loop.sock_recvfrom(self.udp, 2048), left)
            if match(data, addr):
                return data, addr

    async def liveness(self, kind: lw.Kind, timeout_s: float = WAIT_S,
                       **fields: object) -> tuple[lw.Datagram, tuple[str, int]]:
        def match(data: bytes, _: tuple[str, int]) -> bool:
            if not lw.is_liveness(data):
                return False
            d = lw.decode(data)
            return d.kind is kind and all(getattr(d, k) == v for k, v in fields.items())

        data, addr = await self.datagram(match, timeout_s)
        return lw.decode(data), addr

    def send(self, d: lw.Datagram, to: tuple[str, int]) -> None:
        self.udp.sendto(d.encode(), to)

    async def stream(self) -> Stream:
        return await asyncio.wait_for(self.streams.get(), WAIT_S)


def spec(port: int, n: int = 3) -> SimSpec:
    # Addresses far from the ones a bench run starts with.
    hosts = [SimHostSpec(name=f"h{i + 1}", ip=host_ip(60_000 + i), vms=[
        SimVm(name=f"h{i + 1}-v1", vnfcs=[f"f{i + 1}-a"]), SimVm(name=f"h{i + 1}-v2")])
        for i in range(n)]
    return SimSpec(run_id="test0", controller_ip="127.0.0.1", controller_port=port,
                   host_heartbeat_interval_ms=INTERVAL_MS,
                   host_probe_timeout_ms=PROBE_TIMEOUT_MS, reconnect_backoff_initial_s=0.02,
                   reconnect_backoff_max_s=0.1, hosts=hosts)


@dataclass
class Hosts:
    """The simulated hosts: their supervisors and their agents."""

    sup: SupervisorSim
    agents: AgentSim

    def address(self, host: str) -> tuple[str, int]:
        return self.sup.hosts[host].address

    def power_off(self, host: str) -> None:
        self.sup.power_off(host)
        self.agents.power_off(host)

    def power_on(self, host: str) -> None:
        self.sup.power_on(host)
        self.agents.power_on(host)


@contextlib.asynccontextmanager
async def running() -> AsyncIterator[tuple[Hosts, FakeController]]:
    port = free_tcp_udp_port()
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.setblocking(False)
    udp.bind(("127.0.0.1", port))
    ctl = FakeController(udp, port)

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        hello = AGENT_FRAME.validate_json(line)
        assert isinstance(hello, Hello)
        await ctl.streams.put(Stream(reader, writer, hello))

    server = await asyncio.start_server(accept, "127.0.0.1", port)
    s = spec(port)
    hosts = Hosts(SupervisorSim(s, s.hosts), AgentSim(s, s.hosts, pid_base=100_000))
    hosts.sup.start(("127.0.0.1", port))
    hosts.agents.start(("127.0.0.1", port))
    try:
        yield hosts, ctl
    finally:
        hosts.sup.close()
        hosts.agents.close()
        server.close()
        udp.close()


async def test_every_host_heartbeats_from_its_own_address_with_a_rising_counter() -> None:
    async with running() as (sim, ctl):
        seen: dict[str, list[lw.Datagram]] = {}
        while any(len(seen.get(h, [])) < 3 for h in sim.sup.hosts):
            d, addr = await ctl.liveness(lw.Kind.HEARTBEAT)
            assert addr == sim.address(d.name)
            seen.setdefault(d.name, []).append(d)
        for host, beats in seen.items():
            assert {b.boot for b in beats} == {sim.sup.hosts[host].boot}
            seqs = [b.seq for b in beats]
            assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)


async def test_a_ping_is_answered_with_an_ack_from_the_host() -> None:
    async with running() as (sim, ctl):
        ctl.send(lw.Datagram(lw.Kind.PING, "h2", nonce=42), sim.address("h2"))
        ack, addr = await ctl.liveness(lw.Kind.ACK, nonce=42)
        assert ack.name == "h2" and addr == sim.address("h2")


async def test_a_witness_reports_a_live_target_reached_and_a_silent_one_not() -> None:
    async with running() as (sim, ctl):
        ip, port = sim.address("h2")
        ctl.send(lw.Datagram(lw.Kind.PROBE_REQUEST, "h2", nonce=7, ip=ip, port=port),
                 sim.address("h1"))
        result, addr = await ctl.liveness(lw.Kind.PROBE_RESULT, nonce=7)
        assert (result.name, result.reached, addr) == ("h2", True, sim.address("h1"))
        assert sim.sup.counters.pings >= 1  # h2 answered h1's ping

        sim.power_off("h2")
        asked = time.monotonic()
        ctl.send(lw.Datagram(lw.Kind.PROBE_REQUEST, "h2", nonce=8, ip=ip, port=port),
                 sim.address("h3"))
        result, addr = await ctl.liveness(lw.Kind.PROBE_RESULT, nonce=8)
        assert (result.name, result.reached, addr) == ("h2", False, sim.address("h3"))
        # Not before the witness's probe timeout: it pinged twice within it.
        assert time.monotonic() - asked >= PROBE_TIMEOUT_MS / 1000 * 0.9


async def test_probe_requests_from_anyone_but_the_director_are_ignored() -> None:
    async with running() as (sim, ctl):
        ip, port = sim.address("h2")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as other:
            other.bind(("127.0.0.1", 0))
            other.sendto(lw.Datagram(lw.Kind.PROBE_REQUEST, "h2", nonce=9, ip=ip,
                                     port=port).encode(), sim.address("h1"))
            other.setblocking(False)
            # The witness would answer within its probe timeout; wait three of them.
            with pytest.raises(TimeoutError):
                await ctl.liveness(lw.Kind.PROBE_RESULT, timeout_s=3 * PROBE_TIMEOUT_MS / 1000,
                                   nonce=9)
            with pytest.raises(BlockingIOError):
                other.recvfrom(128)
        assert sim.sup.counters.probes == 0


async def test_the_agent_stream_inventory_crash_notice_command_and_resend() -> None:
    async with running() as (sim, ctl):
        streams = {}
        while len(streams) < 3:
            s = await ctl.stream()
            streams[s.hello.host] = s
        s = streams["h1"]
        assert s.hello.incarnation == sim.agents.hosts["h1"].incarnation
        s.send(Welcome(last_seq=0))
        inv = await s.frame()
        assert isinstance(inv, Inventory) and inv.host == "h1"
        assert {(v.name, v.state) for v in inv.vms} == {("h1-v1", "running"),
                                                        ("h1-v2", "running")}
        assert [(c.name, c.vm, c.state) for c in inv.vnfcs] == [("f1-a", "h1-v1", "running")]

        detected = sim.agents.crash_vm("h1", "h1-v1")
        data, _ = await ctl.datagram(lambda d, _: d.startswith(b"{"))
        notice = Notice.model_validate_json(data)
        assert (notice.host, notice.kind, notice.entity, notice.seq) == \
            ("h1", "vm.crashed", "vm/h1-v1", 1)
        assert notice.detected_mono_ns == detected
        crashed = await s.frame()
        assert isinstance(crashed, EventFrame)
        assert (crashed.event.kind, crashed.event.entity, crashed.event.seq) == \
            ("vm.crashed", "vm/h1-v1", 1)
        assert crashed.event.detected_mono_ns == detected
        lost = await s.frame()
        assert isinstance(lost, EventFrame) and lost.event.entity == "vnfc/f1-a"
        assert lost.event.details["cause_entity"] == "vm/h1-v1"
        inv = await s.frame()
        assert isinstance(inv, Inventory)
        assert {v.name: v.state for v in inv.vms}["h1-v1"] == "crashed"

        s.send(Ack(seq=1))
        s.send(Command(id=5, op="vm.start", target="h1-v1"))
        frames = [await s.frame() for _ in range(3)]  # the event, the inventory, the reply
        reply = next(f for f in frames if isinstance(f, Reply))
        assert reply.id == 5 and reply.ok and reply.result["ready"] is True
        started = next(f for f in frames if isinstance(f, EventFrame))
        assert (started.event.kind, started.event.seq) == ("vm.started", 3)

        # A new stream re-sends what was not acknowledged (seq 2 and 3), nothing before.
        s.writer.close()
        again = await ctl.stream()
        assert again.hello.host == "h1"
        again.send(Welcome(last_seq=1))
        resent = [await again.frame() for _ in range(2)]
        assert [f.event.seq for f in resent if isinstance(f, EventFrame)] == [2, 3]


async def test_a_powered_off_host_is_silent_and_boots_again_with_a_new_identity() -> None:
    async with running() as (sim, ctl):
        s = None
        while s is None or s.hello.host != "h2":
            s = await ctl.stream()
        s.send(Welcome(last_seq=0))
        assert isinstance(await s.frame(), Inventory)
        old_boot = sim.sup.hosts["h2"].boot
        old_incarnation = sim.agents.hosts["h2"].incarnation
        sim.power_off("h2")
        off = time.monotonic()
        # No heartbeat from h2 over ten intervals (after one that may have been on its
        # way), no answer to a ping, and no FIN on its stream.
        ctl.send(lw.Datagram(lw.Kind.PING, "h2", nonce=77), sim.address("h2"))
        end = off + 10 * INTERVAL_MS / 1000
        while (left := end - time.monotonic()) > 0:
            with contextlib.suppress(TimeoutError):
                d, _ = await ctl.datagram(lambda data, _: lw.is_liveness(data), left)
                dg = lw.decode(d)
                assert not (dg.kind is lw.Kind.ACK and dg.nonce == 77)
                assert not (dg.kind is lw.Kind.HEARTBEAT and dg.name == "h2"
                            and time.monotonic() - off > INTERVAL_MS / 1000)
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(s.reader.read(1), 0.1)

        sim.power_on("h2")
        hb, _ = await ctl.liveness(lw.Kind.HEARTBEAT, name="h2")
        assert hb.boot != old_boot
        again = await ctl.stream()
        while again.hello.host != "h2":
            again = await ctl.stream()
        assert again.hello.incarnation != old_incarnation
        again.send(Welcome(last_seq=0))
        inv = await again.frame()
        assert isinstance(inv, Inventory)
        assert {v.state for v in inv.vms} == {"stopped"}
