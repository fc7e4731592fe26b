"""Fencing by the leader's epoch (ADR 0013): agent commands carry it and agents refuse
older ones; a controller whose term is over sends nothing; an agent finds the leader
among several addresses by itself; assignment writes are fenced in etcd by the term;
the leader's record cache never waits for etcd on a read."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from nfvha.agent.spool import EventSpool
from nfvha.agent.uplink import ControllerLink
from nfvha.amf.model import AssignmentRecord
from nfvha.controller.agents import AgentServer
from nfvha.controller.bus import EventBus
from nfvha.controller.hoststates import HostStates
from nfvha.controller.leadership import NotLeader
from nfvha.store.base import StoreUnavailable
from nfvha.store.etcd import EtcdAssignmentStore, EtcdLeaderLease
from nfvha.store.etcd_client import EtcdClient
from nfvha.store.leader_records import LeaderRecords
from nfvha.store.sqlite import SqliteEventStore
from nfvha.testbed.deploy import free_tcp_port
from nfvha.testbed.etcd import EtcdCluster, etcd_binary
from nfvha.testbed.services import ServiceError
from nfvha.util.clock import SYSTEM_CLOCK
from nfvha.wire.frames import (
    AGENT_FRAME,
    Command,
    Hello,
    Inventory,
    Reply,
    Welcome,
    encode,
)


class Gate:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch
        self.open = True

    def is_leader(self) -> bool:
        return self.open


class FakeAgent:
    """A ControllerLink with a command handler that records what it ran."""

    def __init__(self, tmp: Path, addresses: list[tuple[str, int]], epoch: int = 0) -> None:
        self.ran: list[Command] = []
        self.epochs: list[int] = []
        self.link = ControllerLink(
            "h1", addresses, EventSpool(tmp / "spool", SYSTEM_CLOCK),
            Hello(host="h1", agent_pid=1, incarnation="i", started_time=0.0),
            self._run, lambda: Inventory(host="h1"), 0.02, 0.2, leader_epoch=epoch,
            on_epoch=self.epochs.append)
        self.task: asyncio.Task[None] | None = None

    async def _run(self, cmd: Command) -> Reply:
        self.ran.append(cmd)
        return Reply(id=cmd.id, ok=True)

    async def __aenter__(self) -> FakeAgent:
        self.task = asyncio.create_task(self.link.run())
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.task is not None
        self.task.cancel()


class ScriptedController:
    """A controller that welcomes with ``epoch`` (None: closes after the hello, as a
    follower does) and then sends the commands it is given, collecting replies."""

    def __init__(self, epoch: int | None) -> None:
        self.epoch = epoch
        self.hellos = 0
        self.replies: asyncio.Queue[Reply] = asyncio.Queue()
        self._writer: asyncio.StreamWriter | None = None
        self.port = 0

    async def start(self) -> ScriptedController:
        server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = server.sockets[0].getsockname()[1]
        self._server = server
        return self

    async def _serve(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        await r.readline()
        self.hellos += 1
        if self.epoch is None:
            w.close()
            return
        w.write(encode(Welcome(last_seq=0, leader_epoch=self.epoch)))
        self._writer = w
        while line := await r.readline():
            frame = AGENT_FRAME.validate_json(line)
            if isinstance(frame, Reply):
                await self.replies.put(frame)

    def send(self, cmd: Command) -> None:
        assert self._writer is not None
        self._writer.write(encode(cmd))

    def close(self) -> None:
        self._server.close()


async def until(cond: Any, timeout_s: float = 3.0) -> None:
    end = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < end, "timed out"
        await asyncio.sleep(0.005)


async def test_agent_refuses_commands_of_an_older_leader(tmp_path: Path) -> None:
    ctl = await ScriptedController(epoch=5).start()
    async with FakeAgent(tmp_path, [("127.0.0.1", ctl.port)]) as agent:
        await asyncio.wait_for(agent.link.connected.wait(), 3.0)
        assert agent.link.leader_epoch == 5 and agent.epochs == [5]
        ctl.send(Command(id=1, op="vnfc.start", target="x", leader_epoch=4))
        stale = await asyncio.wait_for(ctl.replies.get(), 3.0)
        assert not stale.ok and "stale leader epoch 4" in (stale.error or "")
        ctl.send(Command(id=2, op="vnfc.start", target="x", leader_epoch=5))
        ctl.send(Command(id=3, op="vnfc.start", target="x", leader_epoch=6))
        replies = [await asyncio.wait_for(ctl.replies.get(), 3.0) for _ in range(2)]
        assert all(r.ok for r in replies)
        assert [c.id for c in agent.ran] == [2, 3]
        assert agent.link.leader_epoch == 6 and agent.epochs == [5, 6]
        ctl.send(Command(id=4, op="vnfc.start", target="x", leader_epoch=5))
        again = await asyncio.wait_for(ctl.replies.get(), 3.0)
        assert not again.ok and [c.id for c in agent.ran] == [2, 3]
    ctl.close()


@pytest.mark.req("VIM-2")
async def test_agent_finds_the_leader_among_the_controller_addresses(tmp_path: Path) -> None:
    dead = free_tcp_port()  # nothing listens: refused
    follower = await ScriptedController(epoch=None).start()
    deposed = await ScriptedController(epoch=3).start()
    leader = await ScriptedController(epoch=7).start()
    addresses = [("127.0.0.1", p) for p in (dead, follower.port, leader.port, deposed.port)]
    t0 = time.monotonic()
    async with FakeAgent(tmp_path, addresses, epoch=5) as agent:
        await asyncio.wait_for(agent.link.connected.wait(), 3.0)
        assert agent.link.address == ("127.0.0.1", leader.port)
        assert time.monotonic() - t0 < 0.5  # no pause between the addresses of a round
        assert follower.hellos == 1 and agent.link.leader_epoch == 7
        # The leader goes: the agent moves on, refuses the deposed one (epoch 3 < 7)
        # and comes back to whichever address leads again.
        leader.close()
        assert leader._writer is not None
        leader._writer.close()
        await until(lambda: deposed.hellos >= 2)  # tried, refused, tried again
        assert not agent.link.connected.is_set() and agent.link.leader_epoch == 7
        successor = await ScriptedController(epoch=8).start()
        addresses[0] = ("127.0.0.1", successor.port)
        agent.link._addresses[0] = addresses[0]
        await until(lambda: agent.link.connected.is_set() and agent.link.leader_epoch == 8)
        assert agent.link.address == ("127.0.0.1", successor.port)
        successor.close()
    for c in (follower, deposed):
        c.close()


@pytest.fixture
async def agent_server(tmp_path: Path) -> AsyncIterator[tuple[AgentServer, Gate, int]]:
    store = SqliteEventStore(tmp_path / "events.db")
    bus = EventBus(store, SYSTEM_CLOCK)
    gate = Gate(epoch=9)
    port = free_tcp_port()
    server = AgentServer(("127.0.0.1", port), bus, HostStates(["h1"], SYSTEM_CLOCK),
                         SYSTEM_CLOCK, gate=gate)
    await server.start()
    try:
        yield server, gate, port
    finally:
        await server.close()
        bus.close()
        store.close()


@pytest.mark.req("VNFHA-10")
async def test_controller_sends_nothing_once_its_term_is_over(
        tmp_path: Path, agent_server: tuple[AgentServer, Gate, int]) -> None:
    server, gate, port = agent_server
    async with FakeAgent(tmp_path, [("127.0.0.1", port)]) as agent:
        await asyncio.wait_for(agent.link.connected.wait(), 3.0)
        assert agent.link.leader_epoch == 9  # the welcome carries the term's epoch
        reply = await server.command("h1", "vnfc.start", "gw-a", timeout_s=3.0)
        assert reply.ok and agent.ran[-1].leader_epoch == 9
        gate.open = False
        with pytest.raises(NotLeader):
            await server.command("h1", "vnfc.start", "gw-a", timeout_s=3.0)
        assert len(agent.ran) == 1
    # nor does it take an agent's stream any more: the agent goes elsewhere
    async with FakeAgent(tmp_path / "2", [("127.0.0.1", port)]) as late:
        await asyncio.sleep(0.3)
        assert not late.link.connected.is_set()


class FlakyStore:
    """An assignment store whose etcd can be cut: calls then block for the deadline
    and fail, as the real client's do."""

    def __init__(self) -> None:
        self.records: dict[str, AssignmentRecord] = {}
        self.cut = threading.Event()
        self.reads = 0

    def _wait(self) -> None:
        if self.cut.is_set():
            time.sleep(0.3)
            raise StoreUnavailable("etcd unreachable")

    def get(self, si: str) -> AssignmentRecord | None:
        self._wait()
        self.reads += 1
        return self.records.get(si)

    def all(self) -> dict[str, AssignmentRecord]:
        self._wait()
        return dict(self.records)

    def compare_and_set(self, si: str, expected_epoch: int, record: AssignmentRecord) -> bool:
        self._wait()
        old = self.records.get(si)
        if (old.epoch if old else 0) != expected_epoch:
            return False
        self.records[si] = record
        return True

    def checkpoint_write(self, owner: str, key: str, value: Any) -> int:
        return 1

    def checkpoint_read(self, owner: str, key: str) -> tuple[int, Any] | None:
        return None

    def close(self) -> None:
        pass


def record(epoch: int, active: str) -> AssignmentRecord:
    return AssignmentRecord(si="gw", epoch=epoch, active=(active,), standby=(),
                            changed_time=0.0)


async def test_leader_records_never_wait_for_etcd_on_a_read() -> None:
    store = FlakyStore()
    cache = LeaderRecords(store)
    assert cache.get("gw") is None
    assert cache.compare_and_set("gw", 0, record(1, "gw-a"))
    assert cache.get("gw") == record(1, "gw-a") and store.reads == 1
    store.cut.set()
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable):
        cache.compare_and_set("gw", 1, record(2, "gw-b"))  # no answer: maybe written
    assert time.monotonic() - t0 < 0.25  # the caller (the event loop) waited 0.1 s only
    with pytest.raises(StoreUnavailable, match="no answer yet"):
        cache.compare_and_set("gw", 1, record(2, "gw-b"))  # the first is still out
    t0 = time.monotonic()
    assert cache.get("gw") == record(1, "gw-a")  # the old one, at once
    assert time.monotonic() - t0 < 0.05
    # it was written after all (a late commit): the background read finds it once
    # etcd answers again, and a decision from the old one loses its race meanwhile
    store.records["gw"] = record(2, "gw-b")
    store.cut.clear()
    await until(lambda: cache.get("gw") == record(2, "gw-b"))
    assert not cache.compare_and_set("gw", 1, record(2, "gw-a"))
    await until(lambda: cache.get("gw") == record(2, "gw-b"))


@pytest.fixture(scope="module")
def etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    try:
        etcd_binary()
    except ServiceError as e:
        pytest.skip(str(e))
    cluster = EtcdCluster(tmp_path_factory.mktemp("etcd"), size=1)
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.mark.req("VNFHA-10")
def test_a_deposed_leader_cannot_write_a_record(etcd: EtcdCluster) -> None:
    prefix = f"/t{time.monotonic_ns()}/"
    clients = [EtcdClient(etcd.endpoints) for _ in range(2)]
    a, b = (EtcdLeaderLease(c, "controller", n, 1.0, prefix=prefix)
            for c, n in zip(clients, ("a", "b"), strict=True))
    stores = [EtcdAssignmentStore(c, prefix=prefix, fence=lease.fence)
              for c, lease in zip(clients, (a, b), strict=True)]
    try:
        assert not stores[0].compare_and_set("gw", 0, record(1, "gw-a"))  # no term yet
        assert a.acquire()
        assert stores[0].compare_and_set("gw", 0, record(1, "gw-a"))
        assert not stores[1].compare_and_set("gw", 1, record(2, "gw-b"))  # b leads nothing
        # a's term ends in etcd (released here; expired, in a partition), b is elected:
        term_a = a.term
        a.release()
        assert b.acquire()
        a._term = term_a  # a still believes in its term (it has not renewed since)
        # a's write with the right record epoch is refused: the term is no longer etcd's
        assert not stores[0].compare_and_set("gw", 1, record(2, "gw-a"))
        assert stores[1].compare_and_set("gw", 1, record(2, "gw-b"))
        assert stores[1].get("gw") == record(2, "gw-b")
    finally:
        for s in stores:
            s.close()
        b.release()
        for c in clients:
            c.close()
