"""Fixtures: the real controller API app with its default limits, and an httpx client
on it (from loopback, with an admin token)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from api_limits_util import AUTH, Controller, controller_app


@pytest.fixture
async def controller(tmp_path: Path) -> AsyncIterator[Controller]:
    async with controller_app(tmp_path) as c:
        yield c


@pytest.fixture
async def client(controller: Controller) -> AsyncIterator[httpx.AsyncClient]:
    # raise_app_exceptions=False: a crash must show up as the 500 a client would see.
    transport = httpx.ASGITransport(app=controller.app, raise_app_exceptions=False,
                                    client=("127.0.0.1", 40000))
    async with httpx.AsyncClient(transport=transport, base_url="http://nfvha",
                                 headers=AUTH) as c:
        yield c
