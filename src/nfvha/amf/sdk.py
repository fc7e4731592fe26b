"""The VNFC side of availability management: a component's connection to the AM.

``ComponentClient`` speaks the SDK wire protocol of ADR 0008 (JSON lines over TCP;
the component connects, the AM never does).  The component supplies async role
callbacks; the client calls them in order-arrival order, one at a time, and answers
``assigned`` only after the callback returned, so "assigned active" means serving.

Fencing: the highest epoch seen per SI is kept and any order with a lower one is
``refused``.

Active lease (ADR 0008): the component asks for it (``lease`` every ping interval) and
a ``grant`` for request ``n`` runs from the moment request ``n`` was *sent*, so however
late a grant arrives it never reaches past what the AM counted on.  Nothing else renews
it: a late order cannot.  A grant carries the component's assignments at their epochs,
so an order delayed or lost is overruled by the next grant.  The component takes the
active role only while it holds a valid lease (an order to become active without one
first asks for a fresh grant), and when the lease runs out while it holds ``active``
anywhere, it calls ``on_quiesced`` itself.  When the connection drops it reconnects
with jittered exponential back-off and registers again with the same incarnation and
the assignments it holds, so a restarted AM can adopt them.

Standard library and ``nfvha.util`` only: this runs inside every VNFC process.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import random
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from nfvha.util.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)

HA_STATES = frozenset({"active", "standby", "quiesced"})
ENV_AM = "NFVHA_AM"
ENV_COMPONENT = "NFVHA_COMPONENT"


@dataclass(frozen=True, slots=True)
class Peer:
    """For an active: the standby to send state to; for a standby: where it comes from."""

    component: str
    address: str
    port: int

    @classmethod
    def parse(cls, raw: object) -> Peer | None:
        if not isinstance(raw, dict):
            return None
        try:
            return cls(str(raw["component"]), str(raw["address"]), int(raw["port"]))
        except (KeyError, TypeError, ValueError):
            return None


@dataclass(frozen=True, slots=True)
class Assignment:
    si: str
    ha_state: str
    epoch: int
    vip: str | None = None
    peer: Peer | None = None


class NotConnected(ConnectionError):
    """No session with the AM (yet, or any more)."""


class CheckpointError(Exception):
    """The AM answered a checkpoint request with ``ok: false``."""


OnActive = Callable[[str, int, "str | None", "Peer | None"], Awaitable[None]]
OnStandby = Callable[[str, int, "Peer | None"], Awaitable[None]]
OnRole = Callable[[str, int], Awaitable[None]]


async def _nothing(*_: object) -> None:
    return None


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"198.18.0.2:7000"`` or ``"[::1]:7000"`` -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"AM endpoint {text!r}: expected ip:port")
    return host.strip("[]"), int(port)


class ComponentClient:
    """A component's session with the AM. ``await start()``, then ``await close()``."""

    def __init__(
        self,
        component: str | None = None,
        am: str | tuple[str, int] | None = None,
        *,
        on_active: OnActive | None = None,
        on_standby: OnStandby | None = None,
        on_quiesced: OnRole | None = None,
        on_removed: OnRole | None = None,
        clock: Clock = SYSTEM_CLOCK,
        connect_timeout_s: float = 1.0,
        reconnect_min_s: float = 0.05,
        reconnect_max_s: float = 0.25,
        silence_timeout_s: float | None = None,
        max_line_bytes: int = 16 * 1024 * 1024,
    ) -> None:
        """``component``/``am`` default to $NFVHA_COMPONENT / $NFVHA_AM ("ip:port").

        ``silence_timeout_s``: drop and re-open a connection on which nothing arrived for
        that long; by default the lease (or 3 ping intervals if longer), from welcome.
        """
        component = component or os.environ.get(ENV_COMPONENT)
        am = am or os.environ.get(ENV_AM)
        if not component:
            raise ValueError(f"no component name (argument or ${ENV_COMPONENT})")
        if not am:
            raise ValueError(f"no AM endpoint (argument or ${ENV_AM})")
        self.component = component
        self.am = parse_endpoint(am) if isinstance(am, str) else am
        self.incarnation = str(uuid.uuid4())
        self._on_active: OnActive = on_active or _nothing
        self._on_standby: OnStandby = on_standby or _nothing
        self._on_quiesced: OnRole = on_quiesced or _nothing
        self._on_removed: OnRole = on_removed or _nothing
        self._clock = clock
        self._connect_timeout_s = connect_timeout_s
        self._reconnect_min_s = reconnect_min_s
        self._reconnect_max_s = reconnect_max_s
        self._silence_timeout_s = silence_timeout_s
        self._max_line_bytes = max_line_bytes

        self._assignments: dict[str, Assignment] = {}
        self._epochs: dict[str, int] = {}
        self.lease_ms: int | None = None
        self.ping_interval_ms: int | None = None
        self._lease_deadline_ns: int | None = None  # None: no lease granted (yet)
        self._lease_timer: asyncio.TimerHandle | None = None
        self._lease_expiry_queued = False
        self._lease_n = 0
        self._lease_asked: dict[int, int] = {}  # request n -> when it was sent (mono ns)
        self._grant_waiters: list[tuple[int, asyncio.Future[None]]] = []
        self._granted_epochs: dict[str, int] = {}  # si -> epoch in the latest grant
        # si -> (ha_state, epoch) of the latest order queued or carried out: a grant
        # that says the same is not queued again.
        self._ordered: dict[str, tuple[str | None, int]] = {}
        self.grants = 0
        """Grants received so far (all sessions)."""
        # How late grants come: the send time of the oldest lease request still
        # unanswered (a grant answers every request up to its own), and the longest
        # request -> grant time since the last ``grant_rtt_max_ms(reset=True)``.
        # Measured from the oldest request, not the granted one, and across a
        # reconnect: requests older than the lease are forgotten above and a silent AM
        # costs the session, so an AM stalled longer than the lease would otherwise
        # look punctual.
        self._unanswered_since_ns: int | None = None
        self._grant_rtt_max_ns = 0
        # Orders with the time each arrived (mono ns); None: the lease ran out.
        self._orders: asyncio.Queue[tuple[dict[str, Any], int] | None] = asyncio.Queue()
        self.order_received_mono_ns: int | None = None
        """When the order whose role callback runs now arrived (CLOCK_MONOTONIC): a
        callback may note it, so the failover path can be timed stage by stage."""
        self._writer: asyncio.StreamWriter | None = None
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._next_id = 0
        self._tasks: list[asyncio.Task[None]] = []
        self.connected = asyncio.Event()
        """Set while a session is welcomed; cleared when it drops."""
        self.sessions = 0
        """How many sessions were welcomed so far (a reconnect increments it)."""

    # -- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        if not self._tasks:
            loop = asyncio.get_running_loop()
            name = self.component
            self._tasks = [loop.create_task(self._run(), name=f"am-session-{name}"),
                           loop.create_task(self._apply_orders(), name=f"am-orders-{name}")]

    async def close(self) -> None:
        """Stop talking to the AM. Role callbacks are not called: the caller shuts down."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []
        if self._lease_timer is not None:
            self._lease_timer.cancel()
        self._drop_session()

    async def __aenter__(self) -> ComponentClient:
        await self.start()
        return self

    async def __aexit__(self, *_: object) -> None:
        await self.close()

    async def wait_connected(self, timeout_s: float = 5.0) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    # -- what the component holds --------------------------------------------------------

    @property
    def assignments(self) -> dict[str, Assignment]:
        return dict(self._assignments)

    def ha_state(self, si: str) -> str | None:
        a = self._assignments.get(si)
        return None if a is None else a.ha_state

    def highest_epoch(self, si: str) -> int | None:
        return self._epochs.get(si)

    # -- requests to the AM --------------------------------------------------------------

    async def report(self, healthy: bool, reason: str = "") -> None:
        """The component's own health check result. Raises NotConnected without a session."""
        if not self.connected.is_set():
            raise NotConnected("no session with the AM")
        await self._send({"op": "report", "healthy": healthy, "reason": reason})

    async def member_failed(self, member: str, reason: str = "") -> None:
        """A load balancer's verdict on another component, one of its members (IF-2): it
        was excluded and should be recovered. Not about this component's own health
        (that is ``report``). Raises NotConnected without a session."""
        if not self.connected.is_set():
            raise NotConnected("no session with the AM")
        await self._send({"op": "member_failed", "member": member, "reason": reason})

    async def checkpoint_write(self, key: str, value: Any, *, timeout_s: float = 1.0) -> None:
        """Store ``value`` (JSON) under ``key``; returns once the AM acknowledged it.

        Raises CheckpointError (AM said no), TimeoutError, NotConnected (session lost
        while waiting: the write may or may not have happened).
        """
        await self._request({"op": "checkpoint_write", "key": key, "value": value}, timeout_s)

    async def checkpoint_read(self, key: str, *, timeout_s: float = 1.0) -> Any | None:
        """The value stored under ``key``, None if there is none. Errors as for write."""
        reply = await self._request({"op": "checkpoint_read", "key": key}, timeout_s)
        return reply.get("value")

    async def _request(self, message: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        # A short AM restart should not fail the request: wait for the session first.
        await asyncio.wait_for(self.connected.wait(), timeout_s)
        self._next_id += 1
        rid = self._next_id
        future: asyncio.Future[dict[str, Any]] = loop.create_future()
        self._pending[rid] = future
        try:
            await self._send({**message, "id": rid})
            reply = await asyncio.wait_for(future, max(0.0, deadline - loop.time()))
        finally:
            self._pending.pop(rid, None)
        if not reply.get("ok"):
            raise CheckpointError(str(reply.get("error") or "checkpoint failed"))
        return reply

    async def _send(self, message: dict[str, Any]) -> None:
        writer = self._writer
        if writer is None:
            # The answer is lost with the session; the next register carries the state.
            log.debug("no AM session, dropping %s", message.get("op"))
            return
        writer.write(json.dumps(message, separators=(",", ":")).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()

    # -- the session ---------------------------------------------------------------------

    async def _run(self) -> None:
        delay = self._reconnect_min_s
        while True:
            try:
                reader, writer = await asyncio.wait_for(
                    asyncio.open_connection(*self.am, limit=self._max_line_bytes),
                    self._connect_timeout_s)
            except (OSError, TimeoutError) as exc:
                log.debug("AM %s:%s unreachable: %s", *self.am, exc)
            else:
                try:
                    if await self._session(reader, writer):
                        delay = self._reconnect_min_s
                finally:
                    self._drop_session()
            # Jitter: every component of a restarted AM reconnects at once otherwise.
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._reconnect_max_s)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Register and serve one connection until it drops. True if it was welcomed."""
        self._writer = writer
        held = [{"si": a.si, "ha_state": a.ha_state, "epoch": a.epoch}
                for a in self._assignments.values()]
        await self._send({"op": "register", "component": self.component, "pid": os.getpid(),
                          "incarnation": self.incarnation, "assignments": held})
        welcomed = False
        asking: asyncio.Task[None] | None = None
        try:
            while True:
                try:
                    # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a
                    # cancellation that meets a line arriving, and close() then hangs.
                    async with asyncio.timeout(self._silence_limit_s()):
                        line = await reader.readline()
                except TimeoutError:
                    log.warning("AM silent for %.3fs: reconnecting", self._silence_limit_s())
                    return welcomed
                except (ConnectionError, ValueError) as exc:
                    log.warning("AM connection failed: %s", exc)
                    return welcomed
                if not line:
                    return welcomed
                received_ns = self._clock.mono_ns()
                try:
                    message = json.loads(line)
                    op = message["op"]
                except (ValueError, KeyError, TypeError):
                    log.warning("bad line from the AM: %r", line[:200])
                    continue
                if op == "welcome":
                    self.lease_ms = _int_or_none(message.get("lease_ms"))
                    self.ping_interval_ms = _int_or_none(message.get("ping_interval_ms"))
                    welcomed = True
                    self.sessions += 1
                    self.connected.set()
                    if asking is None and self.lease_ms is not None:
                        asking = asyncio.get_running_loop().create_task(
                            self._ask_for_leases(), name=f"am-lease-{self.component}")
                elif op == "grant":
                    self._on_grant(message, received_ns)
                elif op in ("assign", "remove"):
                    self._queue_order(message, received_ns)
                elif op == "checkpoint":
                    future = self._pending.get(_int_or_none(message.get("id")) or -1)
                    if future is not None and not future.done():
                        future.set_result(message)
                else:
                    log.warning("unknown op from the AM: %r", op)
        finally:
            if asking is not None:
                asking.cancel()

    def _silence_limit_s(self) -> float | None:
        if self._silence_timeout_s is not None:
            return self._silence_timeout_s
        if self.lease_ms is None:
            return None
        return max(self.lease_ms, 3 * (self.ping_interval_ms or 0)) / 1e3

    def _drop_session(self) -> None:
        self.connected.clear()
        writer, self._writer = self._writer, None
        if writer is not None:
            writer.close()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(NotConnected("the session with the AM was lost"))
        self._wake_grant_waiters(None)  # no grant comes on a dead session

    # -- the active lease: requests and grants --------------------------------------------

    def _lease_interval_s(self) -> float:
        if self.ping_interval_ms:
            return self.ping_interval_ms / 1e3
        return (self.lease_ms or 1000) / 4e3

    async def _ask_for_leases(self) -> None:
        while True:
            self._request_lease()
            await asyncio.sleep(self._lease_interval_s())

    def _request_lease(self) -> int:
        """Send lease request ``n``; its grant (if any) will run from now."""
        now = self._clock.mono_ns()
        horizon = now - (self.lease_ms or 0) * 1_000_000
        for k in [k for k, sent in self._lease_asked.items() if sent < horizon]:
            del self._lease_asked[k]  # its grant could no longer extend anything
        self._lease_n += 1
        self._lease_asked[self._lease_n] = now
        writer = self._writer
        if writer is not None and not writer.is_closing():
            writer.write(b'{"op":"lease","n":%d}\n' % self._lease_n)
            if self._unanswered_since_ns is None:
                self._unanswered_since_ns = now
        return self._lease_n

    def _on_grant(self, message: dict[str, Any], received_ns: int) -> None:
        n = _int_or_none(message.get("n"))
        if n is None:
            log.warning("grant without a request number: %r", message)
            return
        sent = self._lease_asked.pop(n, None)
        for k in [k for k in self._lease_asked if k < n]:
            del self._lease_asked[k]  # superseded: this grant runs from a later send
        self._time_grant()
        if message.get("granted") is False:
            # The AM counts this component out of service: whatever it holds, it must
            # not act as active (it is given its roles again once out of every record).
            log.warning("the AM refused the lease (counted out of service)")
            self._lease_deadline_ns = None
            self.check_lease()
        else:
            self.grants += 1
            if sent is not None and self.lease_ms is not None:
                deadline = sent + self.lease_ms * 1_000_000
                if self._lease_deadline_ns is None or deadline > self._lease_deadline_ns:
                    self._lease_deadline_ns = deadline
            entries = message.get("assignments")
            for entry in entries if isinstance(entries, list) else []:
                if isinstance(entry, dict):
                    self._consider_granted(entry, received_ns)
        self._wake_grant_waiters(n)

    def _time_grant(self) -> None:
        """A grant (or refusal) arrived: how long its oldest unanswered request waited."""
        if self._unanswered_since_ns is not None:
            rtt = self._clock.mono_ns() - self._unanswered_since_ns
            self._grant_rtt_max_ns = max(self._grant_rtt_max_ns, rtt)
        # What is left was sent after the granted request.
        self._unanswered_since_ns = min(self._lease_asked.values(), default=None)

    def grant_rtt_max_ms(self, *, reset: bool = False) -> float:
        """The longest time from a lease request to the grant answering it since the
        last reset (0.0: none answered since). ``reset`` starts a new measurement."""
        rtt = self._grant_rtt_max_ns
        if reset:
            self._grant_rtt_max_ns = 0
        return rtt / 1e6

    def _consider_granted(self, entry: dict[str, Any], received_ns: int) -> None:
        """Queue an order for an assignment the grant states and the component has
        neither carried out nor queued (a lost or late order, or a self-quiesced active
        the AM still counts on)."""
        si, epoch, state = entry.get("si"), entry.get("epoch"), entry.get("ha_state")
        if not isinstance(si, str) or not isinstance(epoch, int):
            return
        self._granted_epochs[si] = max(epoch, self._granted_epochs.get(si, 0))
        if epoch < self._epochs.get(si, 0) or self._ordered.get(si) == (state, epoch):
            return
        held = self._assignments.get(si)
        if held is not None and (held.ha_state, held.epoch) == (state, epoch):
            return
        if state is None:
            if held is not None:
                self._queue_order({"op": "remove", "si": si, "epoch": epoch}, received_ns)
        else:
            self._queue_order({**entry, "op": "assign"}, received_ns)

    def _queue_order(self, order: dict[str, Any], received_ns: int) -> None:
        si, epoch = order.get("si"), order.get("epoch")
        if isinstance(si, str) and isinstance(epoch, int):
            state = order.get("ha_state") if order.get("op") == "assign" else None
            self._ordered[si] = (state if isinstance(state, str) else None, epoch)
        self._orders.put_nowait((order, received_ns))

    def _wake_grant_waiters(self, n: int | None) -> None:
        waiting = []
        for k, future in self._grant_waiters:
            if n is None or k <= n:
                if not future.done():
                    future.set_result(None)
            else:
                waiting.append((k, future))
        self._grant_waiters = waiting

    async def _fresh_grant(self) -> bool:
        """Ask for a lease now and wait for its answer (three request intervals at most:
        an AM that grants nothing that long is not granting). True if the component then
        holds a valid lease."""
        if self._writer is None or self.lease_ms is None:
            return self.lease_valid()
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._grant_waiters.append((self._request_lease(), future))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(min(self.lease_ms / 1e3, 3 * self._lease_interval_s())):
                await future
        return self.lease_valid()

    # -- orders --------------------------------------------------------------------------

    async def _apply_orders(self) -> None:
        while True:
            queued = await self._orders.get()
            if queued is None:
                self._lease_expiry_queued = False
                await self._expire_lease()
                continue
            order, self.order_received_mono_ns = queued
            try:
                await self._apply(order)
            except Exception:  # one bad order must not stop all later ones
                log.exception("applying %r failed", order)
            finally:
                self.order_received_mono_ns = None

    async def _apply(self, order: dict[str, Any]) -> None:
        si, epoch = order.get("si"), order.get("epoch")
        if not isinstance(si, str) or not isinstance(epoch, int):
            log.warning("malformed order %r", order)
            return
        highest = self._epochs.get(si)
        if highest is not None and epoch < highest:
            await self._send({"op": "refused", "si": si, "epoch": epoch,
                              "reason": f"stale epoch {epoch} < {highest}"})
            return
        if order["op"] == "remove":
            self._epochs[si] = epoch
            if si in self._assignments and await self._call(
                    f"remove {si}@{epoch}", self._on_removed(si, epoch)):
                del self._assignments[si]
            if si not in self._assignments:
                await self._send({"op": "removed", "si": si, "epoch": epoch})
            return
        state = order.get("ha_state")
        if state not in HA_STATES:
            await self._send({"op": "refused", "si": si, "epoch": epoch,
                              "reason": f"unknown ha_state {state!r}"})
            return
        if state == "active" and not self.lease_valid() and not await self._fresh_grant():
            # No active without a lease: the order may be older than the AM's view of
            # this component. The next grant brings the assignment if it still stands.
            self._ordered.pop(si, None)
            await self._send({"op": "refused", "si": si, "epoch": epoch,
                              "reason": "no valid active lease"})
            return
        if self._granted_epochs.get(si, 0) > epoch:
            await self._send({"op": "refused", "si": si, "epoch": epoch,
                              "reason": f"a grant stated epoch {self._granted_epochs[si]}"})
            return
        self._epochs[si] = epoch
        vip = order.get("vip")
        new = Assignment(si, str(state), epoch, vip if isinstance(vip, str) else None,
                         Peer.parse(order.get("peer")))
        if self._assignments.get(si) != new:  # a re-sent order is answered, not re-done
            if state == "active":
                action = self._on_active(si, epoch, new.vip, new.peer)
            elif state == "standby":
                action = self._on_standby(si, epoch, new.peer)
            else:
                action = self._on_quiesced(si, epoch)
            if not await self._call(f"{state} {si}@{epoch}", action):
                return
            self._assignments[si] = new
        await self._send({"op": "assigned", "si": si, "ha_state": state, "epoch": epoch})
        if state == "active":
            self._arm_lease_timer()
            self.check_lease()  # the callback may have outlasted the lease

    async def _call(self, what: str, action: Awaitable[None]) -> bool:
        """Run a role callback. A failure is the component's failure: tell the AM."""
        try:
            await action
        except Exception as exc:
            log.exception("%s failed", what)
            with contextlib.suppress(NotConnected):
                await self.report(False, f"{what} failed: {exc!r}")
            return False
        return True

    # -- the active lease ----------------------------------------------------------------

    def _holds_active(self) -> bool:
        return any(a.ha_state == "active" for a in self._assignments.values())

    def _arm_lease_timer(self) -> None:
        if self._lease_timer is not None or self._lease_deadline_ns is None:
            return
        remaining_s = max(0.0, (self._lease_deadline_ns - self._clock.mono_ns()) / 1e9)
        self._lease_timer = asyncio.get_running_loop().call_later(remaining_s, self._lease_tick)

    def _lease_tick(self) -> None:
        self._lease_timer = None
        if not self._holds_active():
            return  # the next active assignment arms it again
        if self.lease_expired():
            self.check_lease()
        else:
            self._arm_lease_timer()  # renewed meanwhile: sleep until the new deadline

    def lease_valid(self) -> bool:
        """Whether the component may act as active now. Without a lease configured by
        the AM (``lease_ms`` absent from the welcome) there is nothing to hold."""
        if self.lease_ms is None:
            return True
        return (self._lease_deadline_ns is not None
                and self._clock.mono_ns() < self._lease_deadline_ns)

    def lease_expired(self) -> bool:
        return not self.lease_valid()

    def check_lease(self) -> None:
        """Quiesce every active assignment if the lease has run out. The timer calls it;
        a test driving a ManualClock may call it after ``advance``."""
        if self._holds_active() and self.lease_expired() and not self._lease_expiry_queued:
            # Through the order queue: never concurrently with a callback in progress.
            self._lease_expiry_queued = True
            self._orders.put_nowait(None)

    async def _expire_lease(self) -> None:
        if not self.lease_expired():
            return  # renewed while the expiry waited in the queue
        for si, a in list(self._assignments.items()):
            if a.ha_state == "active":
                log.warning("active lease for %s@%d expired: quiescing", si, a.epoch)
                await self._call(f"lease expiry {si}@{a.epoch}", self._on_quiesced(si, a.epoch))
                # Even if the callback failed: the AM must not count on this active.
                self._assignments[si] = dataclasses.replace(a, ha_state="quiesced")
                # A grant that still names it active (the AM had not counted it out)
                # hands the role back.
                self._ordered.pop(si, None)


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
