"""Real deployments for the host-repair tests: one per test, torn down (``nfvha down``'s
own teardown) and checked to have left nothing behind."""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "testbed"))
from bedkit import Bed, started_bed

from nfvha.model.topology import Topology
from nfvha.testbed.deploy import namespaces_available

Deploy = Callable[[Topology], AbstractAsyncContextManager[Bed]]


@pytest.fixture
def deploy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Deploy:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))

    return started_bed
