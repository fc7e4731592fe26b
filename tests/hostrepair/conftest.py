"""Real deployments for the host-repair tests: one per test, torn down (``nfvha down``'s
own teardown) and checked to have left nothing behind."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
from bedkit import Bed, assert_nothing_left, run_pids

from nfvha.model.topology import Topology
from nfvha.testbed.deploy import Testbed, namespaces_available

Deploy = Callable[[Topology], AbstractAsyncContextManager[Bed]]


@pytest.fixture
def deploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deploy:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))

    @asynccontextmanager
    async def up(topology: Topology) -> AsyncIterator[Bed]:
        tb = Testbed(topology)
        await tb.start()
        pids: list[int] = []
        try:
            pids = run_pids(tb)
            async with httpx.AsyncClient(base_url=tb.api_url, timeout=30.0,
                                         headers=tb.headers) as client:
                yield Bed(tb, client)
            pids = sorted(set(pids) | set(run_pids(tb)))
        finally:
            tb.down()
            assert_nothing_left(tb, pids)

    return up
