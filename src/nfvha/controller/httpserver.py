"""The HTTP server of the API and its fronts: uvicorn's h11 protocol with the bounds
uvicorn lacks (ADR 0014 "The API front", ADR 0016).

uvicorn times out idle keep-alive connections and nothing else: a client that sends
its request line and headers a byte at a time, or declares a body and trickles it,
holds its connection for as long as it likes, and a few hundred of them take every
connection there is. And past ``limit_concurrency`` uvicorn still reads and parses
every request, on every connection, to answer it 503 - at whatever rate the clients
send, which is work for the event loop that the limit was meant to spare it.

``BoundedH11Protocol`` (uvicorn's ``H11Protocol`` with four additions):

- **connections beyond ``max_connections``** are answered a fixed 503 with
  Retry-After, nothing of them read or parsed, and closed; the connections already
  open go on as before. The answer comes after ``retry_after_s`` (what the client is
  told to wait anyway): a flood that reconnects at once then costs a connection per
  client and second, not as many as the server can refuse. At most
  ``max_connections`` refused ones are held so; beyond, they are reset at once;
- **the request head** (line and headers) must be complete ``header_timeout_s`` after
  the connection was made or, on a kept-alive connection, after its first byte;
- **the body** must be complete ``body_timeout_s`` after the head; either late, the
  answer is 408 (if no answer has started) and the connection is closed;
- **a client that does not take its answer** (the server's send buffer full) for
  ``body_timeout_s`` has its connection aborted: a slow reader holds no response
  and no handler for ever.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from nfvha.model.api import ApiLimits

_REFUSED_BODY = (b'{"title": "Service Unavailable", "status": 503, "detail": "too many'
                 b' connections to this API; try again"}')
_LATE_BODY = (b'{"title": "Request Timeout", "status": 408, "detail": "the request did not'
              b' arrive in time"}')
LATE_ANSWER = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/problem+json\r\n"
               b"connection: close\r\ncontent-length: %d\r\n\r\n%s"
               % (len(_LATE_BODY), _LATE_BODY))


def refused_answer(retry_after_s: int) -> bytes:
    return (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/problem+json\r\n"
            b"retry-after: %d\r\nconnection: close\r\ncontent-length: %d\r\n\r\n%s"
            % (retry_after_s, len(_REFUSED_BODY), _REFUSED_BODY))


class Refusals:
    """The refused connections a server holds until their answer is due."""

    def __init__(self) -> None:
        self.held = 0
        self.total = 0


class BoundedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, bounded (see the module). The bounds are class attributes:
    ``bounded_protocol`` makes a subclass with those of an ``ApiLimits`` (and its own
    count of refusals: one per server)."""

    max_connections = 256
    header_timeout_s = 5.0
    body_timeout_s = 10.0
    retry_after_s = 1
    refusals = Refusals()

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_timer: asyncio.TimerHandle | None = None
        self._awaiting: object = None  # the h11 state the read timer runs for
        self._write_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._holding = False  # a refused connection whose answer is not due yet

    # -- connections beyond the limit ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            self._refuse(transport)
            return
        self._watch_reading()

    def _refuse(self, transport: asyncio.Transport) -> None:
        """Not counted, not read: held until its answer is due, then answered."""
        self._refused = True
        self.connections.discard(self)
        refusals = self.refusals
        refusals.total += 1
        if refusals.held >= self.max_connections:
            transport.abort()
            return
        refusals.held += 1
        self._holding = True
        transport.pause_reading()
        self._read_timer = self.loop.call_later(self.retry_after_s, self._answer_refusal)

    def _answer_refusal(self) -> None:
        """The 503, then the connection's end once the client has read it (its EOF: the
        transport closes itself) or after the header timeout."""
        self._let_go()
        self.transport.write(refused_answer(self.retry_after_s))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.transport.resume_reading()  # to see its EOF; what it sends is dropped
        self._read_timer = self.loop.call_later(self.header_timeout_s, self.transport.abort)

    def _let_go(self) -> None:
        if self._holding:
            self._holding = False
            self.refusals.held -= 1

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # whatever it sends is dropped: it has its answer
        super().data_received(data)
        self._watch_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        self._let_go()
        self._stop_timer()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None
        super().connection_lost(exc)

    # -- slow requests ----------------------------------------------------------------------
    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._watch_reading()

    def _watch_reading(self) -> None:
        """Time what the connection is waiting for: the rest of a request head that has
        begun (or the first one), the rest of a body; nothing while the request is being
        answered or the connection is idle between requests (the keep-alive timeout's)."""
        state = self.conn.their_state
        awaiting: object = None
        if self.transport.is_closing():
            self._stop_timer()
            return
        if state is h11.IDLE:
            # The connection's first request, or a next one whose first bytes are here.
            if self.cycle is None or self.conn.trailing_data[0]:
                awaiting = h11.IDLE
        elif state is h11.SEND_BODY:
            awaiting = h11.SEND_BODY
        if awaiting is self._awaiting:
            return
        self._stop_timer()
        if awaiting is not None:
            timeout = self.header_timeout_s if awaiting is h11.IDLE else self.body_timeout_s
            self._awaiting = awaiting
            self._read_timer = self.loop.call_later(timeout, self._too_late)

    def _stop_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None
        self._awaiting = None

    def _too_late(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        cycle = self.cycle if self._awaiting is h11.SEND_BODY else None
        if cycle is None or not cycle.response_started:
            self.transport.write(LATE_ANSWER)
        if cycle is not None:
            # For the handler the client has gone: it stops reading, and what it sends
            # goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        self.transport.close()

    # -- slow readers -----------------------------------------------------------------------
    def pause_writing(self) -> None:
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.body_timeout_s, self.transport.abort)

    def resume_writing(self) -> None:
        super().resume_writing()
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None


def bounded_protocol(limits: ApiLimits) -> type[BoundedH11Protocol]:
    """``BoundedH11Protocol`` with the bounds of ``limits``."""
    return type("BoundedH11Protocol", (BoundedH11Protocol,), {
        "max_connections": limits.max_concurrency, "header_timeout_s": limits.header_timeout_s,
        "body_timeout_s": limits.body_timeout_s, "retry_after_s": limits.retry_after_s,
        "refusals": Refusals()})


def server_config(app: Any, host: str, port: int, limits: ApiLimits,
                  **options: Any) -> uvicorn.Config:
    """uvicorn's configuration for the API (or a front) on ``host:port``: the bounded
    protocol, ``limits``' server options, quiet, no lifespan; ``options`` on top."""
    return uvicorn.Config(app, host=host, port=port, **{
        "log_level": "warning", "lifespan": "off", **limits.server_options(),
        "http": bounded_protocol(limits), **options})


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal handling: the process owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield
