"""The controller's end of its channel to the HA director (ADR 0014).

The director listens on ``<controller dir>/director.sock``; this side connects and
reconnects for as long as the controller runs. Over it the controller

- forwards the stored events the availability manager acts on, by id, from where
  the director says it stopped (``hello.after``): from memory while it keeps up,
  from the store when it must catch up - nothing stored is skipped, whatever
  reconnected or restarted in between;
- stores what the director publishes (host liveness transitions) and says so;
- mirrors the director's host states (``HostStates``);
- carries out the repairs the availability manager asks for and reports their
  progress; answers its UC-9 question;
- in a cluster, tells it the member's term (``send_term``);
- asks it for the API's reads of its state, answered from a short cache so that no
  API load becomes director load.

What it acts with belongs to the work of one term (``TermWork``: the bus, the repair
policy, ...): ``attach`` at its start, ``detach`` at its end. Detached, it answers
the director's requests "not leading" and forwards nothing.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from nfvha.amf.ports import RepairRefused
from nfvha.controller.bus import EventBus
from nfvha.controller.config import ControllerConfig
from nfvha.controller.hoststates import HostStates
from nfvha.model.events import Kind, StoredEvent
from nfvha.store.base import StoreUnavailable
from nfvha.util.clock import Clock
from nfvha.util.tasks import background
from nfvha.wire.director import (
    MAX_LINE_BYTES,
    SOCKET_NAME,
    TO_CONTROLLER,
    Answer,
    Ask,
    Events,
    Hello,
    HostState,
    Placed,
    Publish,
    Published,
    Query,
    Repair,
    RepairUpdate,
    Term,
    encode,
)

log = logging.getLogger(__name__)

# What the availability manager acts on (``AvailabilityManager.on_events``).
AM_EVENT_KINDS = frozenset({Kind.VNFC_CRASHED, Kind.VM_CRASHED, Kind.VM_HUNG, Kind.HOST_DOWN,
                            Kind.HOST_FENCED})
EVENTS_PER_MESSAGE = 500
CATCH_UP_PAGE = 1000
MAX_REPAIRS_IN_FLIGHT = 1000


def director_socket(cfg: ControllerConfig) -> Path:
    """Where a controller's HA director listens: beside the controller's database (a
    cluster member's: named after the member, its peers may share the directory)."""
    if cfg.cluster is not None:
        return cfg.db_path.parent / f"{cfg.cluster.name}-{SOCKET_NAME}"
    return cfg.db_path.parent / SOCKET_NAME


@dataclass
class TermWork:
    """What the link acts with while this controller's work runs (one term)."""

    bus: EventBus
    is_current: Callable[[StoredEvent], bool]  # not stale (placement, ADR 0011)
    repairs: Any  # AgentRepair: restart_component, kill_and_restart_component, stop/start_vm
    repair_vm: Callable[..., Any]  # VmRepairPolicy.repair_vm -> RepairTicket
    host_repair: Callable[[str, str, bool], bool] | None  # UC-9: HostRepair.vnfm_hook
    # Told each host whose liveness moved, once what it means is known here: at once
    # for a change that makes no event (a first heartbeat, a suspect's new reason),
    # after its event is stored and its alarm decided for the others (host health
    # then says why, FM-9).
    host_state_settled: Callable[[str], None] | None = None


class DirectorLink:
    def __init__(self, path: Path, run_id: str, hosts: HostStates, clock: Clock, *,
                 retry_s: float = 0.05, query_timeout_s: float = 1.0,
                 cache_s: float = 0.2, max_buffer_bytes: int = 8 << 20) -> None:
        self._path = path
        self._run_id = run_id
        self.hosts = hosts
        self._clock = clock
        self._retry_s = retry_s
        self._query_timeout_s = query_timeout_s
        self._cache_s = cache_s
        self._max_buffer = max_buffer_bytes
        self._writer: asyncio.StreamWriter | None = None
        self._work: TermWork | None = None
        self._cursor: int | None = None  # last stored id the director has been sent
        self._from_now = False  # hello said "from now on": cursor set at attach
        self._catching_up: asyncio.Task[None] | None = None
        self._ids = itertools.count(1)
        self._answers: dict[int, asyncio.Future[Answer]] = {}
        self._cache: dict[str, tuple[float, Any]] = {}
        self._inflight: dict[str, asyncio.Task[Any]] = {}
        self._next_answer: dict[str, asyncio.Future[Any]] = {}
        self._repairs = 0
        self._term: Term | None = None
        self.connected = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- lifecycle ------------------------------------------------------------------------
    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._run(), name="director-link")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._drop("closing")

    def attach(self, work: TermWork) -> None:
        self._work = work
        if self._from_now or self._cursor is None:
            self._cursor = work.bus.last_id
            self._from_now = False
        bus = work.bus
        bus.subscribe(lambda batch: self._on_flush(bus, batch))
        self._catch_up()

    def detach(self) -> None:
        self._work = None

    def send_term(self, epoch: int, decide_until_mono_ns: int, leader_key: str) -> None:
        """This member leads ``epoch`` until then (0: it does not lead)."""
        self._term = Term(epoch=epoch, decide_until_mono_ns=decide_until_mono_ns,
                          leader_key=leader_key)
        self._send(self._term)

    # -- the connection ---------------------------------------------------------------------
    async def _run(self) -> None:
        while True:
            try:
                reader, writer = await asyncio.open_unix_connection(
                    str(self._path), limit=MAX_LINE_BYTES)
            except OSError:
                await asyncio.sleep(self._retry_s)
                continue
            self._writer = writer
            self.connected.set()
            log.info("connected to the HA director at %s", self._path)
            if self._term is not None:
                self._send(self._term)
            try:
                await self._read(reader)
            except (OSError, ValueError) as e:
                log.warning("channel to the HA director: %s", e)
            finally:
                self._drop("the HA director's channel closed")
            await asyncio.sleep(self._retry_s)

    def _drop(self, why: str) -> None:
        w, self._writer = self._writer, None
        self.connected.clear()
        if w is not None:
            w.close()
        for fut in self._answers.values():
            if not fut.done():
                fut.set_exception(ConnectionError(why))
        self._answers.clear()

    def _send(self, msg: Any) -> bool:
        w = self._writer
        if w is None or w.is_closing():
            return False
        if w.transport.get_write_buffer_size() > self._max_buffer:
            # The director does not read: drop, rather than buffer without limit; it
            # says where to resume when it is back.
            log.error("HA director does not read its channel; dropping it")
            self._drop("the HA director does not read")
            return False
        w.write(encode(msg))
        return True

    async def _read(self, reader: asyncio.StreamReader) -> None:
        while line := await reader.readline():
            try:
                msg = TO_CONTROLLER.validate_json(line)
            except ValidationError as e:
                log.error("unreadable message from the HA director: %s", e)
                continue
            if isinstance(msg, Hello):
                self._hello(msg)
            elif isinstance(msg, HostState):
                self._host_state(msg)
            elif isinstance(msg, Publish):
                background(self._publish(msg))
            elif isinstance(msg, Repair):
                self._repair(msg)
            elif isinstance(msg, Ask):
                self._ask(msg)
            elif isinstance(msg, Answer):
                fut = self._answers.pop(msg.id, None)
                if fut is not None and not fut.done():
                    fut.set_result(msg)

    def _host_state(self, msg: HostState) -> None:
        old = self.hosts.state(msg.host).state if msg.host in self.hosts.hosts else None
        self.hosts.apply(msg)
        work = self._work
        if work is None or work.host_state_settled is None or old is None:
            return
        # The transitions the director makes an event of (suspect, down, up again) are
        # settled when that event is (``_publish``).
        if msg.state == old.value or not (msg.state in ("suspect", "down")
                                          or old.value in ("suspect", "down")):
            work.host_state_settled(msg.host)

    # -- events to the director -------------------------------------------------------------
    def _hello(self, msg: Hello) -> None:
        if msg.run_id != self._run_id:
            log.error("HA director of run %s on this channel; ours is %s", msg.run_id,
                      self._run_id)
            self._drop("another run's director")
            return
        if msg.after is None:
            self._cursor = self._work.bus.last_id if self._work is not None else None
            self._from_now = self._work is None
        else:
            self._cursor, self._from_now = msg.after, False
            self._catch_up()

    def _on_flush(self, bus: EventBus, batch: Sequence[StoredEvent]) -> None:
        work = self._work
        if work is None or work.bus is not bus or self._cursor is None or self._writer is None:
            return
        if self._catching_up is not None or batch[0].id > self._cursor + 1:
            # A gap (a reconnection, or ids the store skipped): read it back from the
            # store, which includes this batch.
            self._catch_up()
            return
        new = [e for e in batch if e.id > self._cursor]
        if new:
            self._forward(work, new)
            self._cursor = new[-1].id

    def _forward(self, work: TermWork, events: Sequence[StoredEvent]) -> None:
        wanted = [e for e in events if e.kind in AM_EVENT_KINDS and work.is_current(e)]
        for i in range(0, len(wanted), EVENTS_PER_MESSAGE):
            self._send(Events(events=wanted[i:i + EVENTS_PER_MESSAGE]))

    def _catch_up(self) -> None:
        if self._catching_up is None and self._work is not None and self._cursor is not None:
            self._catching_up = background(self._read_back(), name="director-catch-up")

    async def _read_back(self) -> None:
        """Send what was stored after the cursor, page by page, until caught up with
        the bus: then the flushes carry on from memory."""
        try:
            while (work := self._work) is not None and self._cursor is not None \
                    and self._writer is not None and self._cursor < work.bus.last_id:
                try:
                    page = work.bus.store.events(after=self._cursor, limit=CATCH_UP_PAGE)
                except StoreUnavailable as e:
                    log.warning("catching the HA director up: %s; trying again", e)
                    await asyncio.sleep(0.5)
                    continue
                if not page:
                    break
                self._forward(work, page)
                self._cursor = page[-1].id
                await asyncio.sleep(0)  # let the loop breathe between pages
        finally:
            self._catching_up = None

    def placed(self, vm: str, host: str) -> None:
        self._send(Placed(vm=vm, host=host))

    # -- the director's requests ------------------------------------------------------------
    async def _publish(self, msg: Publish) -> None:
        work = self._work
        if work is None:
            self._send(Published(id=msg.id, ok=False, error="this controller does not lead"))
            return
        try:
            await work.bus.publish(msg.events)
        except StoreUnavailable as e:
            self._send(Published(id=msg.id, ok=False, error=str(e)))
            return
        self._send(Published(id=msg.id, ok=True))
        if work.host_state_settled is not None:
            for host in dict.fromkeys(e.entity.partition("/")[2] for e in msg.events
                                      if e.entity.startswith("host/")):
                work.host_state_settled(host)

    def _repair(self, msg: Repair) -> None:
        work = self._work
        if work is None or self._repairs >= MAX_REPAIRS_IN_FLIGHT:
            why = "this controller does not lead" if work is None else "too many repairs"
            self._send(RepairUpdate(id=msg.id, phase="failed", error=why))
            return
        self._repairs += 1
        background(self._run_repair(work, msg), name=f"repair-{msg.kind}-{msg.target}")

    async def _run_repair(self, work: TermWork, msg: Repair) -> None:
        try:
            if msg.kind == "repair_vm":
                await self._repair_vm(work, msg)
                return
            action = getattr(work.repairs, msg.kind)
            await action(msg.host, msg.target)
            self._send(RepairUpdate(id=msg.id, phase="done"))
        except Exception as e:
            self._send(RepairUpdate(id=msg.id, phase="failed", error=str(e) or type(e).__name__))
        finally:
            self._repairs -= 1

    async def _repair_vm(self, work: TermWork, msg: Repair) -> None:
        try:
            ticket = work.repair_vm(msg.target, requested_by=msg.requested_by,
                                    failure=msg.failure)
        except (RepairRefused, KeyError, RuntimeError) as e:
            self._send(RepairUpdate(id=msg.id, phase="failed", error=str(e)))
            return
        if ticket.job is None:
            last = ticket.last.model_dump(mode="json") if ticket.last is not None else {}
            self._send(RepairUpdate(id=msg.id, phase="done", how=ticket.how, outcome=last))
            return
        ticket.job.when_stopped(lambda: self._send(RepairUpdate(
            id=msg.id, phase="stopped", how=ticket.how)))
        outcome = await ticket.job.outcome()
        self._send(RepairUpdate(id=msg.id, phase="done" if outcome.ok else "failed",
                                how=ticket.how, outcome=outcome.model_dump(mode="json"),
                                error=outcome.error))

    def _ask(self, msg: Ask) -> None:
        work = self._work
        hook = work.host_repair if work is not None else None
        try:
            result = bool(hook(msg.vm, msg.source, msg.failfast)) if hook is not None else False
        except Exception as e:
            self._send(Answer(id=msg.id, ok=False, error=str(e), result=False))
            return
        self._send(Answer(id=msg.id, result=result))

    # -- reads of the director's state (the API) --------------------------------------------------
    async def query(self, what: str, max_age_s: float = 0.0) -> Any:
        """The director's answer to ``what`` ("availability", "hosts"). With
        ``max_age_s`` 0 it was computed after this call began (a client that polls
        after a fault must not be told the state from before it); askers that arrive
        while a question is out share the next one, so the director answers one
        question at a time however many ask. A cached answer younger than
        ``max_age_s`` is taken as it is."""
        cached = self._cache.get(what)
        if max_age_s and cached is not None and time.monotonic() - cached[0] < max_age_s:
            return cached[1]
        nxt = self._next_answer.get(what)
        if nxt is None:
            nxt = self._next_answer[what] = asyncio.get_running_loop().create_future()
        if what not in self._inflight:
            self._inflight[what] = background(self._ask_rounds(what), name=f"ask-{what}")
        return await asyncio.shield(nxt)

    async def _ask_rounds(self, what: str) -> None:
        try:
            while (fut := self._next_answer.pop(what, None)) is not None:
                try:
                    result = await self._ask_director(what)
                except Exception as e:
                    if not fut.done():
                        fut.set_exception(e)
                        fut.exception()  # retrieved: a caller may have given up
                    continue
                if not fut.done():
                    fut.set_result(result)
        finally:
            self._inflight.pop(what, None)

    def heartbeat_ages(self) -> dict[str, int | None]:
        """Milliseconds since each host's last heartbeat, as the director last said
        (aged by the time since), without waiting: a stale answer starts a refresh.
        Safe from a worker thread (the API builds its listings off the loop)."""
        cached = self._cache.get("hosts")
        now = time.monotonic()
        if (cached is None or now - cached[0] >= self._cache_s) and self._loop is not None:
            self._loop.call_soon_threadsafe(self._refresh_hosts)
        if cached is None:
            return {}
        aged = int((now - cached[0]) * 1000)
        return {h: (v["last_heartbeat_ms_ago"] + aged
                    if v.get("last_heartbeat_ms_ago") is not None else None)
                for h, v in cached[1].items()}

    def _refresh_hosts(self) -> None:
        if "hosts" in self._inflight or not self.connected.is_set():
            return
        task = background(self.query("hosts", self._cache_s), name="director-hosts")
        task.add_done_callback(lambda t: t.cancelled() or t.exception())

    async def _ask_director(self, what: str) -> Any:
        qid = next(self._ids)
        fut: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()
        self._answers[qid] = fut
        if not self._send(Query(id=qid, what=what)):
            self._answers.pop(qid, None)
            raise ConnectionError("the HA director is not connected")
        try:
            async with asyncio.timeout(self._query_timeout_s):
                answer = await fut
        finally:
            self._answers.pop(qid, None)
        if not answer.ok:
            raise ConnectionError(answer.error or "the HA director could not answer")
        self._cache[what] = (time.monotonic(), answer.result)
        return answer.result

