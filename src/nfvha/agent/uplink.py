"""The agent's connection to the controller: events up, commands down.

Reconnects with backoff; on every (re)connect sends ``hello``, learns from
``welcome`` what the controller already has, and re-sends the rest of the
spool. An event goes on the stream first and into the spool right after, in the
same call: a failover waits for it, and even a write to the page cache can be held
up by a busy disk (dirty-page throttling). A crash between the two loses nothing
that matters: a VNFC's exit stays with the guest until the agent has spooled it (the
guest sends it again), and a VM that died is recorded as running in the state file
until after its report (the next agent finds it dead and reports it).

With several controllers (ADR 0013) only the leader takes the stream: the link
tries the addresses in turn (a follower refuses or closes), without pausing
between them, and pauses only after a whole round failed. The leader's epoch
(``welcome``, ``command``) fences: once an epoch was seen, a controller or a
command of a lower one is refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
from collections.abc import Awaitable, Callable, Sequence

from pydantic import ValidationError

from nfvha.agent.spool import EventSpool
from nfvha.model.events import Event
from nfvha.util.tasks import background
from nfvha.wire.frames import (
    CONTROLLER_FRAME,
    MAX_FRAME_BYTES,
    Ack,
    Command,
    EventFrame,
    Frame,
    Hello,
    Inventory,
    Reply,
    Started,
    Welcome,
    encode,
)

log = logging.getLogger(__name__)

CommandHandler = Callable[[Command], Awaitable[Reply]]


class ControllerLink:
    def __init__(
        self,
        host: str,
        address: tuple[str, int] | Sequence[tuple[str, int]],
        spool: EventSpool,
        hello: Hello,
        on_command: CommandHandler,
        inventory: Callable[[], Inventory],
        backoff_initial_s: float,
        backoff_max_s: float,
        *,
        connect_timeout_s: float = 0.5,
        cluster_backoff_max_s: float = 0.1,
        leader_epoch: int = 0,
        on_epoch: Callable[[int], None] | None = None,
    ) -> None:
        """``address``: the controller's, or every controller's of a cluster (tried in
        turn). ``leader_epoch``: the highest leader epoch seen before (kept across
        restarts through ``on_epoch``, called whenever it rises)."""
        self._host = host
        self._addresses: list[tuple[str, int]] = (
            [address] if isinstance(address, tuple) and isinstance(address[0], str)
            else list(address))  # type: ignore[arg-type]
        if not self._addresses:
            raise ValueError("no controller address")
        self._current = 0
        self._round_start = 0
        self._connect_timeout_s = connect_timeout_s
        self.leader_epoch = leader_epoch
        self._on_epoch = on_epoch
        self._spool = spool
        self._hello = hello
        self._on_command = on_command
        self._inventory = inventory
        self._backoff_initial = backoff_initial_s
        # Between rounds over a cluster's addresses the pause stays short: a controller
        # election takes about a second and the next leader is found by the first round
        # after it; a refused connection costs nothing.
        self._backoff_max = backoff_max_s if len(self._addresses) == 1 \
            else min(backoff_max_s, cluster_backoff_max_s)
        self._writer: asyncio.StreamWriter | None = None
        self._ready = False  # welcome received, spool replayed
        self.connected = asyncio.Event()
        self._inventory_dirty = asyncio.Event()

    def send_event(self, event: Event) -> None:
        """Send if connected (otherwise it goes out after reconnect), then spool."""
        if self._ready:
            self._write(EventFrame(event=event))
        self._spool.append(event)

    def inventory_changed(self) -> None:
        self._inventory_dirty.set()

    def _write(self, frame: Frame) -> None:
        w = self._writer
        if w is None or w.is_closing():
            return
        w.write(encode(frame))

    @property
    def address(self) -> tuple[str, int]:
        """The controller address tried now (or connected to)."""
        return self._addresses[self._current]

    def _next_address(self) -> bool:
        """Move on to the next address; True when a whole round has been tried."""
        self._current = (self._current + 1) % len(self._addresses)
        return self._current == self._round_start

    async def run(self) -> None:
        backoff = self._backoff_initial
        self._round_start = self._current
        while True:
            address = self.address
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection(
                    *address, limit=MAX_FRAME_BYTES), self._connect_timeout_s)
            except (OSError, TimeoutError) as e:
                log.debug("controller %s unreachable: %s", address, e)
                if self._next_address():
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self._backoff_max)
                continue
            welcomed = False
            try:
                welcomed = await self._session(reader, writer)
            except (OSError, asyncio.IncompleteReadError, ValidationError) as e:
                log.info("controller link to %s lost: %s", address, e)
            finally:
                welcomed = welcomed or self._ready
                self._ready = False
                self._writer = None
                self.connected.clear()
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
            if welcomed:
                # It was the leader: it went away, and so may its address. Start a new
                # round at the next one; the first pause comes after a failed round.
                backoff = self._backoff_initial
                self._next_address()
                self._round_start = self._current
                if len(self._addresses) == 1:
                    await asyncio.sleep(self._backoff_initial)
            elif self._next_address():
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self._backoff_max)

    async def _session(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
                       ) -> bool:
        """Serve one stream until it ends (an exception); False: it was refused."""
        self._writer = writer
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._write(self._hello)
        await writer.drain()
        line = await reader.readline()
        if not line:
            return False  # not the leader (or going down): try the next address
        welcome = CONTROLLER_FRAME.validate_json(line)
        if not isinstance(welcome, Welcome):
            raise ConnectionResetError(f"expected welcome, got {welcome.t}")
        if not self._fresh_epoch(welcome.leader_epoch):
            log.warning("controller %s welcomed us at leader epoch %d, older than %d seen:"
                        " refused", self.address, welcome.leader_epoch, self.leader_epoch)
            return False
        self._spool.resync(welcome.last_seq)
        for ev in self._spool.pending():
            self._write(EventFrame(event=ev))
        self._ready = True
        self.connected.set()
        self._write(self._inventory())
        await writer.drain()
        pusher = asyncio.create_task(self._push_inventory(writer))
        try:
            while True:
                line = await reader.readline()
                if not line:
                    raise ConnectionResetError("controller closed the stream")
                frame = CONTROLLER_FRAME.validate_json(line)
                if isinstance(frame, Ack):
                    self._spool.ack(frame.seq)
                elif isinstance(frame, Command):
                    if self._fresh_epoch(frame.leader_epoch):
                        background(self._run_command(frame))
                    else:
                        self._write(Reply(id=frame.id, ok=False, error=(
                            f"stale leader epoch {frame.leader_epoch}:"
                            f" {self.leader_epoch} seen")))
        finally:
            pusher.cancel()

    def _fresh_epoch(self, epoch: int) -> bool:
        """Not older than any leader epoch seen (and remember a newer one)."""
        if epoch < self.leader_epoch:
            return False
        if epoch > self.leader_epoch:
            self.leader_epoch = epoch
            if self._on_epoch is not None:
                self._on_epoch(epoch)
        return True

    async def _run_command(self, cmd: Command) -> None:
        # Its time limit at the controller counts from here, not from its sending.
        self._write(Started(id=cmd.id))
        try:
            reply = await self._on_command(cmd)
        except Exception as e:  # a failing command must not kill the link
            log.exception("command %s failed", cmd.op)
            reply = Reply(id=cmd.id, ok=False, error=f"{type(e).__name__}: {e}")
        self._write(reply)

    async def _push_inventory(self, writer: asyncio.StreamWriter) -> None:
        # Coalesce bursts: at most ten inventory frames a second.
        while True:
            await self._inventory_dirty.wait()
            self._inventory_dirty.clear()
            self._write(self._inventory())
            await writer.drain()
            await asyncio.sleep(0.1)
