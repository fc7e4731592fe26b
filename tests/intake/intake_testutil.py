"""Helpers for the intake API tests: topology, a recording ``ingest``, the app."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fastapi import FastAPI

from nfvha.api.doctor import doctor_router
from nfvha.api.masakari import masakari_router
from nfvha.model.events import Event
from nfvha.model.topology import Topology, parse_topology
from nfvha.util.clock import ManualClock

DEDUP_WINDOW_S = 180.0


def intake_topology() -> Topology:
    """Two sites: s1 (h1, h2 in rack r1) and s2 (h3); VMs vm1 on h1 and vm3 on h3."""
    return parse_topology({
        "name": "intake",
        "sites": [
            {"name": "s1", "racks": [{"name": "r1", "hosts": [{"name": "h1"}, {"name": "h2"}]}]},
            {"name": "s2", "racks": [{"name": "r2", "hosts": [{"name": "h3"}]}]},
        ],
        "vms": [{"name": "vm1", "host": "h1"}, {"name": "vm3", "host": "h3"}],
    })


class Recorder:
    """The controller's ``ingest``: records every batch; can be told to fail."""

    def __init__(self) -> None:
        self.batches: list[list[Event]] = []
        self.fail_with: Exception | None = None
        self.before: Callable[[], Awaitable[None]] | None = None  # runs before recording
        self.calls = 0

    async def __call__(self, events: list[Event]) -> None:
        self.calls += 1
        if self.before is not None:
            await self.before()
        if self.fail_with is not None:
            raise self.fail_with
        self.batches.append(list(events))

    @property
    def events(self) -> list[Event]:
        return [e for b in self.batches for e in b]


def intake_app(topology: Topology, ingest: Recorder, clock: ManualClock) -> FastAPI:
    app = FastAPI()
    app.include_router(masakari_router(topology, ingest, clock, dedup_window_s=DEDUP_WINDOW_S),
                       prefix="/v1")
    app.include_router(doctor_router(topology, ingest, clock), prefix="/doctor")
    return app
