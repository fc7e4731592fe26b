"""Fixtures for the intake APIs: a manual clock, an ``ingest`` that records what it is
handed, and an httpx client on an app with the Masakari and Doctor routers mounted the
way the lead mounts them (Masakari at ``/v1``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from intake_testutil import Recorder, intake_app, intake_topology

from nfvha.util.clock import ManualClock


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


@pytest.fixture
async def client(recorder: Recorder, clock: ManualClock) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: a crash must show up as the 500 a monitor would see.
    transport = httpx.ASGITransport(app=intake_app(intake_topology(), recorder, clock),
                                    raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as c:
        yield c
