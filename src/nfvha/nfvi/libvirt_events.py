"""libvirt domain events into asyncio, stamped when libvirt hands them over (ADR 0018).

The libvirt binding blocks: its calls never run on an asyncio loop's thread. Events
come the way nova (``nova/virt/libvirt/host.py``) and Masakari's instance monitor take
them: ``virEventRegisterDefaultImpl()`` once per process, then one native thread that
runs ``virEventRunDefaultImpl()`` forever. libvirt calls our callbacks in that thread;
each takes ``time.monotonic_ns()`` first, builds a small immutable event and hands it
to the loop with ``call_soon_threadsafe``. So the stamp does not depend on how busy the
loop is, and libvirt's socket I/O and keepalives go on while the loop is busy.
(``libvirtaio``, libvirt-python's asyncio event implementation, was the alternative: it
runs libvirt's I/O and the callbacks on the loop itself, so a busy loop would delay
both the event and its stamp, and keepalive answers; and the event implementation is
process-wide, so it would tie every libvirt connection of the process to one loop.)

Delivered: lifecycle events (``VIR_DOMAIN_EVENT_ID_LIFECYCLE``, event + detail: e.g.
STOPPED/FAILED when QEMU dies, CRASHED/PANICKED from a pvpanic device, SUSPENDED/PAUSED),
watchdog expiries (``VIR_DOMAIN_EVENT_ID_WATCHDOG``, the action) and guest reboots.

The connection is watched (close callback: EOF at once when the daemon dies; keepalive
for a daemon that hangs). When it is lost the owner gets a :class:`ConnectionEvent`
``lost`` with the reason, the watcher reconnects with backoff (each failure reported
as ``retry`` with libvirt's error) and reports ``connected`` again: events that came
while the connection was down are lost, so the owner then lists the domains again.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import libvirt

KEEPALIVE_INTERVAL_S = 1
KEEPALIVE_COUNT = 3
OPEN_TIMEOUT_S = 5.0
RECONNECT_INITIAL_S = 0.05
RECONNECT_MAX_S = 2.0


class Kind(enum.StrEnum):
    LIFECYCLE = "lifecycle"
    WATCHDOG = "watchdog"
    REBOOT = "reboot"


@functools.cache
def _names(prefix: str) -> dict[int, str]:
    """{value: NAME} of libvirt's constants ``<prefix>NAME`` (``LAST`` left out)."""
    out: dict[int, str] = {}
    for attr in sorted(dir(libvirt)):
        if attr.startswith(prefix) and attr != prefix + "LAST":
            out.setdefault(int(getattr(libvirt, attr)), attr[len(prefix) :])
    return out


_EVENT_NAMES: dict[int, str] = {
    int(getattr(libvirt, f"VIR_DOMAIN_EVENT_{n}")): n
    for n in ("DEFINED", "UNDEFINED", "STARTED", "SUSPENDED", "RESUMED", "STOPPED",
              "SHUTDOWN", "PMSUSPENDED", "CRASHED")
}
_WATCHDOG_ACTIONS = _names("VIR_DOMAIN_EVENT_WATCHDOG_")
_CLOSE_REASONS = _names("VIR_CONNECT_CLOSE_REASON_")


def event_name(event: int) -> str:
    return _EVENT_NAMES.get(event, str(event))


def detail_name(event: int, detail: int) -> str:
    ev = _EVENT_NAMES.get(event)
    if ev is None:
        return str(detail)
    return _names(f"VIR_DOMAIN_EVENT_{ev}_").get(detail, str(detail))


@dataclass(frozen=True, slots=True)
class DomainEvent:
    """One domain event. ``at_ns``: ``time.monotonic_ns()`` when libvirt delivered it."""

    at_ns: int
    kind: Kind
    domain: str
    uuid: str
    event: int  # lifecycle: VIR_DOMAIN_EVENT_*; watchdog: the action; reboot: -1
    detail: int  # lifecycle: VIR_DOMAIN_EVENT_<EVENT>_*; else -1

    @property
    def name(self) -> str:
        """``STOPPED/FAILED``, ``CRASHED/PANICKED``, ``WATCHDOG/RESET``, ``REBOOT``."""
        if self.kind is Kind.LIFECYCLE:
            return f"{event_name(self.event)}/{detail_name(self.event, self.detail)}"
        if self.kind is Kind.WATCHDOG:
            return f"WATCHDOG/{_WATCHDOG_ACTIONS.get(self.event, str(self.event))}"
        return "REBOOT"

    def is_(self, event: int, detail: int | None = None) -> bool:
        return (
            self.kind is Kind.LIFECYCLE
            and self.event == event
            and (detail is None or self.detail == detail)
        )


class ConnState(enum.StrEnum):
    CONNECTED = "connected"  # (again): list the domains, events may have been missed
    LOST = "lost"
    RETRY = "retry"  # a reconnect attempt failed; ``error`` says why


@dataclass(frozen=True, slots=True)
class ConnectionEvent:
    at_ns: int
    uri: str
    state: ConnState
    error: str = ""


# --- the process-wide libvirt event thread ---------------------------------------------

_thread_lock = threading.Lock()
_thread: threading.Thread | None = None


def _run_event_loop() -> None:
    while True:
        libvirt.virEventRunDefaultImpl()


def ensure_event_thread() -> None:
    """Register libvirt's default event implementation and start its thread, once per
    process. Must come before the process opens any libvirt connection (keepalives and
    events of a connection need it)."""
    global _thread
    with _thread_lock:
        if _thread is not None:
            return
        libvirt.virEventRegisterDefaultImpl()
        _thread = threading.Thread(target=_run_event_loop, name="libvirt-events", daemon=True)
        _thread.start()


def _quiet_errors() -> None:
    # libvirt prints every error to stderr by default; we report errors ourselves.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)


# --- the watcher -------------------------------------------------------------------------


class LibvirtEvents:
    """Domain events of one libvirt connection, delivered on the caller's asyncio loop.

    ``on_event`` and ``on_connection`` run on the loop's thread; they must not block.
    ``conn`` is the open connection (thread-safe in libvirt; use it from worker
    threads, e.g. ``asyncio.to_thread``, never on the loop).
    """

    def __init__(
        self,
        uri: str,
        on_event: Callable[[DomainEvent], None],
        on_connection: Callable[[ConnectionEvent], None] | None = None,
        *,
        keepalive_interval_s: int = KEEPALIVE_INTERVAL_S,
        keepalive_count: int = KEEPALIVE_COUNT,
        open_timeout_s: float = OPEN_TIMEOUT_S,
        reconnect_initial_s: float = RECONNECT_INITIAL_S,
        reconnect_max_s: float = RECONNECT_MAX_S,
    ) -> None:
        self.uri = uri
        self._on_event = on_event
        self._on_connection = on_connection
        self.keepalive_interval_s = keepalive_interval_s
        self.keepalive_count = keepalive_count
        self.open_timeout_s = open_timeout_s
        self.reconnect_initial_s = reconnect_initial_s
        self.reconnect_max_s = reconnect_max_s
        self.conn: Any = None  # libvirt.virConnect (the binding has no type hints)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._reconnect: asyncio.Task[None] | None = None
        self._stopping = False
        self._generation = 0  # which connection a callback belongs to
        self._connected = asyncio.Event()
        self._closing: set[asyncio.Future[None]] = set()

    @property
    def connected(self) -> bool:
        return self.conn is not None

    async def wait_connected(self, timeout_s: float) -> None:
        await asyncio.wait_for(self._connected.wait(), timeout_s)

    async def start(self) -> None:
        """Connect and subscribe; raises ``libvirt.libvirtError`` / ``TimeoutError`` if the
        first connection fails (a later loss is handled by reconnecting)."""
        self._loop = asyncio.get_running_loop()
        ensure_event_thread()
        _quiet_errors()
        await self._connect()

    async def stop(self) -> None:
        self._stopping = True
        if self._reconnect is not None:
            self._reconnect.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reconnect
        conn, self.conn = self.conn, None
        self._connected.clear()
        if conn is not None:
            await asyncio.to_thread(self._close, conn)

    # -- connection --------------------------------------------------------------------
    def _open(self, generation: int) -> Any:
        conn = libvirt.open(self.uri)
        try:
            conn.registerCloseCallback(self._closed_cb, generation)
            conn.setKeepAlive(self.keepalive_interval_s, self.keepalive_count)
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_cb, generation
            )
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_WATCHDOG, self._watchdog_cb, generation
            )
            conn.domainEventRegisterAny(
                None, libvirt.VIR_DOMAIN_EVENT_ID_REBOOT, self._reboot_cb, generation
            )
        except BaseException:
            with contextlib.suppress(libvirt.libvirtError):
                conn.close()
            raise
        return conn

    @staticmethod
    def _close(conn: Any) -> None:
        with contextlib.suppress(libvirt.libvirtError):
            conn.unregisterCloseCallback()
        with contextlib.suppress(libvirt.libvirtError):
            conn.close()

    async def _connect(self) -> None:
        self._generation += 1
        generation = self._generation
        conn = await asyncio.wait_for(
            asyncio.to_thread(self._open, generation), self.open_timeout_s
        )
        if self._stopping:
            await asyncio.to_thread(self._close, conn)
            return
        self.conn = conn
        self._connected.set()
        self._notify(ConnectionEvent(time.monotonic_ns(), self.uri, ConnState.CONNECTED))

    def _lost(self, at_ns: int, generation: int, reason: str) -> None:
        """On the loop: the connection of ``generation`` is gone."""
        if self._stopping or generation != self._generation:
            return
        conn, self.conn = self.conn, None
        self._connected.clear()
        if conn is not None:
            closing = asyncio.ensure_future(asyncio.to_thread(self._close, conn))
            self._closing.add(closing)
            closing.add_done_callback(self._closing.discard)
        self._notify(ConnectionEvent(
            at_ns, self.uri, ConnState.LOST,
            f"libvirtd at {self.uri} closed the connection ({reason}); reconnecting",
        ))
        if self._reconnect is None or self._reconnect.done():
            self._reconnect = asyncio.ensure_future(self._reconnect_loop())

    async def _reconnect_loop(self) -> None:
        delay = self.reconnect_initial_s
        while not self._stopping:
            try:
                await self._connect()
                return
            except (libvirt.libvirtError, TimeoutError) as e:
                msg = e.get_error_message() if isinstance(e, libvirt.libvirtError) else (
                    f"no answer in {self.open_timeout_s}s")
                self._notify(ConnectionEvent(
                    time.monotonic_ns(), self.uri, ConnState.RETRY,
                    f"cannot reconnect to libvirtd at {self.uri}: {msg} (next try in {delay}s)",
                ))
            await asyncio.sleep(delay)  # backoff between attempts, not a wait for a state
            delay = min(delay * 2, self.reconnect_max_s)

    def _notify(self, ev: ConnectionEvent) -> None:
        if self._on_connection is not None:
            self._on_connection(ev)

    # -- callbacks: in the libvirt event thread; stamp first, then hand over -------------
    def _hand_over(self, fn: Callable[..., None], *args: Any) -> None:
        loop = self._loop
        if loop is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            loop.call_soon_threadsafe(fn, *args)

    def _deliver(self, ev: DomainEvent, generation: int) -> None:
        if generation == self._generation and not self._stopping:
            self._on_event(ev)

    def _lifecycle_cb(self, _conn: Any, dom: Any, event: int, detail: int, gen: int) -> None:
        at = time.monotonic_ns()
        ev = DomainEvent(at, Kind.LIFECYCLE, dom.name(), dom.UUIDString(), event, detail)
        self._hand_over(self._deliver, ev, gen)

    def _watchdog_cb(self, _conn: Any, dom: Any, action: int, gen: int) -> None:
        at = time.monotonic_ns()
        ev = DomainEvent(at, Kind.WATCHDOG, dom.name(), dom.UUIDString(), action, -1)
        self._hand_over(self._deliver, ev, gen)

    def _reboot_cb(self, _conn: Any, dom: Any, gen: int) -> None:
        at = time.monotonic_ns()
        ev = DomainEvent(at, Kind.REBOOT, dom.name(), dom.UUIDString(), -1, -1)
        self._hand_over(self._deliver, ev, gen)

    def _closed_cb(self, _conn: Any, reason: int, gen: int) -> None:
        at = time.monotonic_ns()
        self._hand_over(self._lost, at, gen, _CLOSE_REASONS.get(reason, str(reason)))
