"""``nfvha bench detect`` on a small deployment, one run of every fault kind: it
completes (host-down included: the VIM's own host repair runs meanwhile) and
reports a figure for each."""

from __future__ import annotations

from pathlib import Path

import pytest
from bedkit import SMALL

from nfvha.bench.detect import KINDS, bench
from nfvha.model.topology import parse_topology
from nfvha.testbed.deploy import namespaces_available


async def test_bench_detect_measures_every_kind(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    # A quick agent-crash step: the bench waits this long after an agent (re)start.
    topology = parse_topology({**SMALL, "settings": {**SMALL["settings"],
                                                     "restart_backoff_reset_s": 1.0}})
    rows = await bench(topology, list(KINDS), 1, lambda kind, n: None)
    assert [r for r in rows if "error" in r] == []
    assert {r["kind"]: r["n"] for r in rows} == {**dict.fromkeys(KINDS, 1), "agent-back": 1}
