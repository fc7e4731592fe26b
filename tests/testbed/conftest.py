"""A real deployment per test: namespaces, cgroups, processes. Torn down afterwards,
and checked to have left nothing behind."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from bedkit import Bed, small_topology, started_bed

from nfvha.model.topology import Topology
from nfvha.testbed.deploy import namespaces_available


@pytest.fixture
def bed_topology() -> Topology:
    """What ``bed`` deploys; a test module overrides it for a deployment of its own."""
    return small_topology()


@pytest.fixture
async def bed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
              bed_topology: Topology) -> AsyncIterator[Bed]:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    async with started_bed(bed_topology, 10.0) as bed:
        yield bed


