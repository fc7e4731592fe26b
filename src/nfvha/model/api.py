"""What the controller's HTTP API accepts: request sizes, header size, idle
keep-alive, slow clients and concurrent connections (ADR 0016), and how much of it
the API's front passes on at once (ADR 0014).

The limits keep one request from holding the controller's event loop, which also
runs the HA path: parsing and validating a body costs time in proportion to its
size, so the limits are small by default and an operator raises them if a client
needs more. The same limits hold at a cluster member's front (ADR 0013), which
passes bodies on to the leader.
"""

from __future__ import annotations

from typing import Any, Self
from urllib.parse import parse_qs

from pydantic import Field, model_validator

from nfvha.model.settings import Strict

KIB = 1024
MIB = 1024 * KIB

# The intake of existing monitors (Masakari notifications, Doctor events): open to
# the trusted networks without a token, and a monitor sends one event at a time.
INTAKE_PATHS = ("/v1/notifications", "/doctor/events")
# The Masakari-compatible API (mounted at /v1): its errors are OpenStack faults.
MASAKARI_PATHS = ("/v1/notifications", "/v1/segments")


def _under(path: str, prefix: str) -> bool:
    return path == prefix or path.startswith(prefix + "/")


def is_masakari(path: str) -> bool:
    """Whether ``path`` is on the Masakari-compatible API (its version document too)."""
    return path in ("/v1", "/v1/") or any(_under(path, p) for p in MASAKARI_PATHS)


# Requests that mostly wait rather than work (ADR 0014, "The API front"): the alarm and
# host health streams (SSE), and the operations on VMs and VNFCs, which wait for an
# agent or a repair. A long poll (``/v1/events?wait=`` > 0) is one too.
STREAM_PATHS = ("/v1/alarms/stream", "/v1/hosts/health/stream")
OPERATION_PREFIXES = ("/v1/vms/", "/v1/vnfcs/")
LONG_POLL_PATH = "/v1/events"


def waits(method: str, path: str, query: bytes) -> bool:
    """Whether a request mostly waits: a stream, a long poll or an operation (the
    controller does little for it while it lasts). A front passes these on beside its
    slots for requests that work, within a cap of their own."""
    path = path.rstrip("/") or "/"
    if method == "GET" and path in STREAM_PATHS:
        return True
    if method == "POST" and path.startswith(OPERATION_PREFIXES) and path.count("/") == 4:
        return True  # /v1/vms/{name}/{action}, /v1/vnfcs/{name}/{action}
    if method == "GET" and path == LONG_POLL_PATH and b"wait=" in query:
        for value in parse_qs(query.decode("latin-1")).get("wait", ()):
            try:
                if float(value) > 0:
                    return True
            except ValueError:
                pass  # the controller says what is wrong with it
    return False


class ApiLimits(Strict):
    # Request bodies: larger ones are answered 413 before they are read to the end.
    max_body_bytes: int = Field(32 * KIB, ge=1 * KIB, le=64 * MIB)
    intake_max_body_bytes: int = Field(8 * KIB, ge=1 * KIB, le=64 * MIB)
    # The request line and headers together (h11's max incomplete event size); larger
    # is answered 400 by the HTTP server.
    max_header_bytes: int = Field(16 * KIB, ge=4 * KIB, le=1 * MIB)
    # An idle keep-alive connection is closed after this.
    keep_alive_timeout_s: int = Field(5, ge=1, le=300)
    # A request's line and headers must have arrived this long after its first byte,
    # its body this long after its headers (and a response must be taken by the client
    # within it); otherwise 408 and the connection is closed: a slow client holds a
    # connection for a bounded time.
    header_timeout_s: float = Field(5.0, gt=0, le=300)
    body_timeout_s: float = Field(10.0, gt=0, le=300)
    # Open connections beyond this are answered 503 (nothing of them is read) and
    # closed. An alarm stream or a long poll holds one.
    max_concurrency: int = Field(256, ge=16, le=65_536)
    # A request or connection refused for load (503) is answered after this many
    # seconds, its Retry-After: a client that asks again at once (a flood does) asks at
    # most once per this, instead of as fast as refusals can be written. The refused
    # connections held meanwhile are at most ``max_concurrency``; beyond, they are
    # reset at once.
    retry_after_s: int = Field(1, ge=0, le=60)
    # Connections the kernel holds for the server before it takes them (listen
    # backlog); the server takes at most this many at once.
    backlog: int = Field(128, ge=8, le=65_536)
    # The API front (ADR 0014): requests passed on to the controller at once - each is
    # work on the controller's event loop beside the agents' event streams, so there
    # are few. Further requests wait for one of these slots in a queue of at most
    # ``forward_queue``, each at most ``forward_queue_timeout_s``; beyond either, 503
    # with Retry-After.
    forward_concurrency: int = Field(4, ge=1, le=1024)
    forward_queue: int = Field(128, ge=0, le=65_536)
    forward_queue_timeout_s: float = Field(2.0, gt=0, le=300)
    # Requests that mostly wait (``waits``: streams, long polls, operations) hold a slot
    # only while the controller starts on them: until its answer begins, at most
    # ``forward_start_s``. At most ``forward_waiting`` of them are passed on at once
    # (and as many more queue as above). The controller's share of such a request is
    # done within a millisecond or two (read, token, a query, a command sent); the
    # rest is waiting for an agent or a repair. 0.5 s let only 8 VM starts a second
    # through four slots: `nfvha up` of 36 VMs queued past the queue's time limit.
    forward_waiting: int = Field(64, ge=1, le=65_536)
    forward_start_s: float = Field(0.05, gt=0, le=60)
    # How long a request passed on may take at the controller (not the waiting ones):
    # a controller that stopped answering must not hold a slot for ever.
    forward_timeout_s: float = Field(60.0, gt=0, le=3600)

    @model_validator(mode="after")
    def _fronts_fit(self) -> Self:
        if self.forward_concurrency + self.forward_waiting > self.max_concurrency:
            raise ValueError("forward_concurrency + forward_waiting must be <= max_concurrency:"
                             " the controller takes that many connections from its front")
        return self

    def body_limit(self, path: str) -> int:
        """The largest request body ``path`` takes, in bytes."""
        if any(_under(path.rstrip("/"), p) for p in INTAKE_PATHS):
            return self.intake_max_body_bytes
        return self.max_body_bytes

    def server_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config``: h11 (the protocol the header limit
        applies to), the header size, keep-alive timeout, the listen backlog, and no
        proxy headers (uvicorn would believe ``X-Forwarded-For`` from 127.0.0.1: the
        controller judges it itself, ``api/auth.py``). The connection limit and the
        header and body timeouts are ``controller/httpserver.py``'s, which uses these."""
        return {"http": "h11", "h11_max_incomplete_event_size": self.max_header_bytes,
                "timeout_keep_alive": self.keep_alive_timeout_s, "backlog": self.backlog,
                "proxy_headers": False}
