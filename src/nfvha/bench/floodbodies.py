"""The request bodies of ``nfvha bench abuse``'s flood: large, well-formed or hostile.

A ``Body`` is runs of a repeated piece, produced chunk by chunk while it is sent, so a
10 MB body is never built in memory (the flood would otherwise measure itself).

Shapes, for every route the flood hits:

- ``json``: well-formed JSON in the route's own envelope, padded to size with what
  the route refuses (an unknown host, an unknown value), so nothing a flood sends is
  ever taken: a Doctor "host down" for a real host would fence it;
- ``nested``: ``[[[[...]]]]`` as deep as the size allows;
- ``number``: one integer with as many digits as the size allows.

Standard library only: the flood process imports this.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

CHUNK_BYTES = 64 * 1024
SHAPES = ("json", "nested", "number")
NO_SUCH_HOST = "flood-no-such-host"


@dataclass(frozen=True)
class Body:
    runs: tuple[tuple[bytes, int], ...]  # (piece, how many times), in order

    @property
    def length(self) -> int:
        return sum(len(piece) * n for piece, n in self.runs)

    def chunks(self, size: int = CHUNK_BYTES) -> Iterator[bytes]:
        for piece, n in self.runs:
            per = max(1, size // len(piece))
            full, rest = divmod(n, per)
            block = piece * min(per, n)
            for _ in range(full):
                yield block
            if rest:
                yield piece * rest

    def materialize(self) -> bytes:
        return b"".join(self.chunks())


@dataclass(frozen=True)
class Route:
    method: str
    path: str  # "{alarm}" is the id of an alarm that exists
    needs_token: bool  # the admin's; the intake routes trust loopback
    head: bytes  # json shape: head + item * n + last
    item: bytes
    last: bytes

    def target(self, alarm: str) -> str:
        return self.path.replace("{alarm}", alarm)

    @property
    def name(self) -> str:
        return f"{self.method} {self.path}"


_DOCTOR_EVENT = (b'{"time":"2017-05-05T10:11:12.123456","type":"compute.host.down",'
                 b'"details":{"hostname":"' + NO_SUCH_HOST.encode()
                 + b'","status":"down","monitor":"flood"}}')
_PAD = b'{"flood":"x"}'

ROUTES: tuple[Route, ...] = (
    Route("PUT", "/doctor/events", False, b"[", _DOCTOR_EVENT + b",", _DOCTOR_EVENT + b"]"),
    Route("POST", "/v1/notifications", False,
          b'{"notification":{"type":"COMPUTE_HOST","hostname":"' + NO_SUCH_HOST.encode()
          + b'","generated_time":"2017-05-05T10:11:12","payload":{"event":"STOPPED",'
          b'"flood":[', _PAD + b",", _PAD + b"]}}}"),
    Route("POST", "/vnffm/v1/subscriptions", True,
          b'{"callbackUri":"http://127.0.0.1:9/flood","filter":{"notificationTypes":[',
          b'"FloodNotification",', b'"FloodNotification"]}}'),
    Route("PATCH", "/vnffm/v1/alarms/{alarm}", True, b'{"ackState":"FLOODED","flood":[',
          _PAD + b",", _PAD + b"]}"),
    Route("POST", "/v1/tokens", True, b'{"role":"flood","name":"flood","flood":[',
          _PAD + b",", _PAD + b"]}"),
)


def body(route: Route, shape: str, size: int) -> Body:
    """A body of about ``size`` bytes (at least the envelope) in ``shape``."""
    if shape == "json":
        n = max(0, (size - len(route.head) - len(route.last)) // len(route.item))
        return Body(((route.head, 1), (route.item, n), (route.last, 1)))
    if shape == "nested":
        depth = max(1, size // 2)
        return Body(((b"[", depth), (b"]", depth)))
    if shape == "number":
        return Body(((b'{"n":1', 1), (b"0", max(1, size - 7)), (b"}", 1)))
    raise ValueError(f"unknown body shape {shape!r}; valid: {', '.join(SHAPES)}")
