"""The channel between a controller and its HA director (ADR 0014), both ends real,
over a real unix socket: stored events forwarded by id and caught up after a gap,
the director's events stored, repairs carried out and reported, API reads that are
never older than the question, and the director's term gate."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from nfvha.amf.ports import RepairJob, RepairOutcome, RepairTicket
from nfvha.controller.bus import EventBus
from nfvha.controller.directorlink import DirectorLink, TermWork
from nfvha.controller.hoststates import HostStates
from nfvha.director.channel import ControllerChannel, ToDirectorMsg
from nfvha.director.remote import ChannelRepair
from nfvha.director.term import TermGate
from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.store.sqlite import SqliteEventStore
from nfvha.util.clock import SYSTEM_CLOCK, ManualClock
from nfvha.wire.director import (
    Answer,
    Events,
    Publish,
    Published,
    Query,
    RepairUpdate,
    Term,
)

RUN = "chan1"


def _event(kind: Kind, entity: str, seq: int) -> Event:
    return Event(host="h1", seq=seq, kind=kind, entity=entity, severity=Severity.MAJOR,
                 event_type=EventType.PROCESSING_ERROR_ALARM, probable_cause="test",
                 event_time=1.0, detected_mono_ns=1)


@dataclass
class Repairs:
    """The VIM's repairs as the link carries them out: recorded, failing on demand."""

    done: list[tuple[str, str, str]] = field(default_factory=list)
    fail: bool = False

    async def restart_component(self, host: str, vnfc: str) -> None:
        self.done.append(("restart_component", host, vnfc))
        if self.fail:
            raise RuntimeError("vnfc.start refused")

    async def stop_vm(self, vm: str, host: str) -> None:
        self.done.append(("stop_vm", host, vm))


@dataclass
class Director:
    """The director's end: what it was sent, and where it resumes."""

    after: int | None = None
    got: list[ToDirectorMsg] = field(default_factory=list)
    on: Callable[[ToDirectorMsg], None] | None = None

    def message(self, msg: ToDirectorMsg) -> None:
        self.got.append(msg)
        if self.on is not None:
            self.on(msg)

    def events(self) -> list[int]:
        return [e.id for m in self.got if isinstance(m, Events) for e in m.events]


class Pair:
    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "director.sock"
        self.store = SqliteEventStore(tmp_path / "events.db")
        self.bus = EventBus(self.store, SYSTEM_CLOCK)
        self.director = Director()
        self.channel = ControllerChannel(self.path, RUN, lambda: self.director.after,
                                         self._message,
                                         on_lost=lambda: self.remote.channel_lost())
        self.remote = ChannelRepair(self.channel, SYSTEM_CLOCK, timeout_s=5.0)
        self.hosts = HostStates(["h1"], SYSTEM_CLOCK)
        self.link = DirectorLink(self.path, RUN, self.hosts, SYSTEM_CLOCK, retry_s=0.01)
        self.repairs = Repairs()
        self.asked_vms: list[str] = []
        self.job: RepairJob | None = None

    def _message(self, msg: ToDirectorMsg) -> None:
        """As the director routes them: progress and answers to its repair port."""
        if isinstance(msg, RepairUpdate):
            self.remote.on_update(msg)
        elif isinstance(msg, Answer) and msg.id in self.remote._answers:
            self.remote.on_answer(msg)
        self.director.message(msg)

    def repair_vm(self, vm: str, *, requested_by: str, failure: int | None = None
                  ) -> RepairTicket:
        self.asked_vms.append(vm)
        self.job = RepairJob(vm, "restart-initial", requested_by, stop_first=True)
        return RepairTicket("started", self.job)

    async def start(self) -> None:
        await self.channel.start()
        self.link.attach(TermWork(self.bus, lambda e: True, self.repairs, self.repair_vm,
                                  lambda vm, source, failfast: vm == "vm-on-bad-host"))
        self.link.start()
        await until(lambda: self.channel.connected, "the controller connected")

    async def close(self) -> None:
        await self.link.close()
        await self.channel.close()
        self.bus.close()
        self.store.close()


async def until(check: Callable[[], object], what: str, timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    end = loop.time() + timeout_s
    while not check():
        if loop.time() > end:
            raise AssertionError(f"not {what} within {timeout_s:g} s")
        await asyncio.sleep(0.005)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[Pair]:
    p = Pair(tmp_path)
    yield p
    await p.close()


async def test_stored_events_reach_the_director_by_id_and_a_gap_is_read_back(
        pair: Pair) -> None:
    # Stored before the director is there: a fresh director (after None) is not sent
    # what was before it.
    await pair.bus.publish([_event(Kind.VNFC_CRASHED, "vnfc/a", 1)])
    await pair.start()
    crash = await pair.bus.publish([_event(Kind.VM_CRASHED, "vm/v1", 2),
                                    _event(Kind.VNFC_STARTED, "vnfc/a", 3)])
    await until(lambda: pair.director.events(), "the crash forwarded")
    assert pair.director.events() == [crash[0].id]  # only what the manager acts on
    # The director goes away; what is stored meanwhile is read back from the store
    # once it says where it stopped.
    await pair.channel.close()
    missed = await pair.bus.publish([_event(Kind.VNFC_CRASHED, "vnfc/b", 4),
                                     _event(Kind.VM_HUNG, "vm/v2", 5)])
    pair.director.after = crash[0].id
    await pair.channel.start()
    await until(lambda: len(pair.director.events()) == 3, "the gap read back")
    assert pair.director.events() == [crash[0].id, missed[0].id, missed[1].id]
    later = await pair.bus.publish([_event(Kind.HOST_FENCED, "host/h1", 6)])
    await until(lambda: pair.director.events()[-1] == later[0].id, "live again")


async def test_the_directors_events_are_stored_and_said_so(pair: Pair) -> None:
    await pair.start()
    settled: list[int] = []
    pair.director.on = lambda m: settled.append(m.id) if isinstance(m, Published) else None
    down = Event(host="h1", seq=0, origin="controller", kind=Kind.HOST_DOWN,
                 entity="host/h1", severity=Severity.CRITICAL,
                 event_type=EventType.EQUIPMENT_ALARM, probable_cause="host-failure",
                 event_time=1.0, detected_mono_ns=1)
    assert pair.channel.send(Publish(id=7, events=[down]))
    await until(lambda: settled == [7], "published")
    assert [e.kind for e in pair.store.events(after=0)] == [Kind.HOST_DOWN]


async def test_repairs_travel_the_channel_and_report_back(pair: Pair) -> None:
    await pair.start()
    await pair.remote.restart_component("h1", "gw-a")
    assert pair.repairs.done == [("restart_component", "h1", "gw-a")]
    pair.repairs.fail = True
    with pytest.raises(RuntimeError, match=r"vnfc\.start refused"):
        await pair.remote.restart_component("h1", "gw-a")
    # A VM repair: its stop first, then its outcome.
    ticket = pair.remote.repair_vm("vm1", requested_by="vnfm", failure=42)
    stopped: list[str] = []
    assert ticket.job is not None
    ticket.job.when_stopped(lambda: stopped.append("vm1"))
    await until(lambda: pair.job is not None, "the repair asked of the VIM")
    assert pair.remote.repair_vm("vm1", requested_by="vnfm").how == "joined"
    assert pair.job is not None
    pair.job.mark_stopped()
    await until(lambda: stopped == ["vm1"], "told it stopped")
    pair.job.resolve(RepairOutcome(
        vm="vm1", action="restart-initial", requested_by="vnfm", failure_event=42,
        stopped_first=True, replacement="vm1", replacement_host="h2", ok=True,
        started_time=1.0, duration_ms=5.0))
    outcome = await asyncio.wait_for(ticket.job.outcome(), 5)
    assert outcome.ok and outcome.replacement_host == "h2"
    # UC-9's question, answered by the VIM.
    assert await pair.remote.host_repair("vm-on-bad-host", "vnfm", False) is True
    assert await pair.remote.host_repair("vm1", "vnfm", False) is False


async def test_a_repair_out_when_the_channel_drops_fails_at_once(pair: Pair) -> None:
    await pair.start()
    ticket = pair.remote.repair_vm("vm1", requested_by="vnfm")
    await until(lambda: pair.job is not None, "the repair asked of the VIM")
    await pair.link.close()  # the controller goes away
    assert ticket.job is not None
    outcome = await asyncio.wait_for(ticket.job.outcome(), 5)
    assert not outcome.ok and "closed" in (outcome.error or "")


async def test_an_api_read_is_never_older_than_the_question(pair: Pair) -> None:
    answered: list[int] = []

    def answer(msg: ToDirectorMsg) -> None:
        if isinstance(msg, Query):
            answered.append(msg.id)
            # Answered a little later, as a busy director would.
            asyncio.get_running_loop().call_later(0.05, pair.channel.send,
                                                  Answer(id=msg.id, result=len(answered)))

    pair.director.on = answer
    await pair.start()
    first = asyncio.create_task(pair.link.query("availability"))
    await until(lambda: answered, "the first question")
    # Asked while the first is out: it shares the next question, not the first answer.
    second, third = (asyncio.create_task(pair.link.query("availability")) for _ in range(2))
    assert await first == 1
    assert await second == 2 and await third == 2
    assert len(answered) == 2  # three askers, two questions


def test_the_term_gate_is_the_directors_own_clock_against_the_deadline() -> None:
    clock = ManualClock()
    assert TermGate(clock, single=True).is_leader()
    gate = TermGate(clock, single=False)
    assert not gate.is_leader() and gate.epoch == 0
    now = clock.mono_ns()
    gate.update(Term(epoch=5, decide_until_mono_ns=now + 300_000_000, leader_key="/k"))
    assert gate.is_leader() and gate.epoch == 5 and gate.leader_key == "/k"
    clock.advance(0.31)  # no renewal came: the member stalled or died
    assert not gate.is_leader()
    gate.update(Term(epoch=4, decide_until_mono_ns=clock.mono_ns() + 10**9))
    assert not gate.is_leader()  # an older term's word is stale
    gate.update(Term(epoch=5, decide_until_mono_ns=clock.mono_ns() + 10**9))
    assert gate.is_leader()
    gate.update(Term(epoch=0, decide_until_mono_ns=0))
    assert not gate.is_leader()
