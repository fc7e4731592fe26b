"""What the controller's HTTP API accepts: request sizes, header size, idle
keep-alive and concurrent connections (ADR 0016).

The limits keep one request from holding the controller's event loop, which also
runs the HA path: parsing and validating a body costs time in proportion to its
size, so the limits are small by default and an operator raises them if a client
needs more. The same limits hold at a cluster member's front (ADR 0013), which
passes bodies on to the leader.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

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


class ApiLimits(Strict):
    # Request bodies: larger ones are answered 413 before they are read to the end.
    max_body_bytes: int = Field(32 * KIB, ge=1 * KIB, le=64 * MIB)
    intake_max_body_bytes: int = Field(8 * KIB, ge=1 * KIB, le=64 * MIB)
    # The request line and headers together (h11's max incomplete event size); larger
    # is answered 400 by the HTTP server.
    max_header_bytes: int = Field(16 * KIB, ge=4 * KIB, le=1 * MIB)
    # An idle keep-alive connection is closed after this.
    keep_alive_timeout_s: int = Field(5, ge=1, le=300)
    # Open connections (and requests in progress) beyond this are answered 503. An
    # alarm stream or a long poll holds one while it lasts.
    max_concurrency: int = Field(256, ge=16, le=65_536)

    def body_limit(self, path: str) -> int:
        """The largest request body ``path`` takes, in bytes."""
        if any(_under(path.rstrip("/"), p) for p in INTAKE_PATHS):
            return self.intake_max_body_bytes
        return self.max_body_bytes

    def server_options(self) -> dict[str, Any]:
        """Keyword arguments for ``uvicorn.Config``: h11 (the protocol the header limit
        applies to), the header size, keep-alive timeout and concurrency limit."""
        return {"http": "h11", "h11_max_incomplete_event_size": self.max_header_bytes,
                "timeout_keep_alive": self.keep_alive_timeout_s,
                "limit_concurrency": self.max_concurrency}
