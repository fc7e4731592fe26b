"""A real deployment per test: namespaces, cgroups, processes. Torn down afterwards,
and checked to have left nothing behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from bedkit import Bed, assert_nothing_left, run_pids, small_topology

from nfvha.testbed.deploy import Testbed, namespaces_available


@pytest.fixture
async def bed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Bed]:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    tb = Testbed(small_topology())
    await tb.start()
    pids: list[int] = []
    try:
        pids = run_pids(tb)
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=10.0,
                                     headers=tb.headers) as client:
            yield Bed(tb, client)
        pids = sorted(set(pids) | set(run_pids(tb)))
    finally:
        tb.down()
        assert_nothing_left(tb, pids)


