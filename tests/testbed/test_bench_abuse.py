"""``nfvha bench abuse`` on a small deployment, twice, short: a 3 s flood with 2 faults
in each phase. It completes, prints the six figures first in the JSON, every figure
measured and sane, the flood actually sent, and nothing of it is left afterwards. No
timing thresholds: the figures are the benchmark's (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from nfvha.bench.abuse import bench
from nfvha.bench.abuseplan import FIGURES, AbuseOptions
from nfvha.cli import main
from nfvha.model.topology import parse_topology
from nfvha.nfvi.cleanup import find_runs
from nfvha.testbed.deploy import namespaces_available

pytestmark = [pytest.mark.testbed]

# A 2N VNF under test (gw) and a VNF without redundancy to fault (dns), both under the
# generic VNFM.
ABUSE: dict[str, Any] = {
    "name": "abuse",
    "sites": [{"name": "site1", "racks": [
        {"name": "rack1", "hosts": [{"name": "h1"}]},
        {"name": "rack2", "hosts": [{"name": "h2"}]},
    ]}],
    "vms": [
        {"name": "gw-vm1", "host": "h1", "memory_mb": 128},
        {"name": "gw-vm2", "host": "h2", "memory_mb": 128},
        {"name": "dns-vm1", "host": "h1", "cpu": 0.25, "memory_mb": 96},
    ],
    "vnfs": [
        {"name": "gw", "redundancy": "2n", "stateful": True, "state": "sync",
         "service_address": {"kind": "vip", "port": 7000}, "anti_affinity": "rack",
         "components": [{"name": "gw-a", "vm": "gw-vm1", "port": 7000},
                        {"name": "gw-b", "vm": "gw-vm2", "port": 7000}]},
        {"name": "dns", "redundancy": "none", "stateful": False,
         "repair_action": "restart-initial",
         "components": [{"name": "dns-1", "vm": "dns-vm1", "port": 7300}]},
    ],
}
SHORT = AbuseOptions(duration_s=3.0, faults=2, connections=20, slow=10, body_workers=2,
                     settle_s=1.0)


def assert_sane(out: dict[str, Any]) -> None:
    assert list(out)[:6] == list(FIGURES)
    assert out["errors"] == []
    assert all(out[k] is not None for k in FIGURES), out
    assert out["actives_lost"] >= 0 and out["watched_vnfs"] == ["gw"]
    assert out["probe_outage_ms"] >= 0 and out["lease_late_max_ms"] >= 0
    assert out["detect_p99_ms"] > 0 and out["detect_p99_idle_ms"] > 0
    assert len(out["detect_ms"]) == len(out["detect_idle_ms"]) == 2
    assert out["rss_before_mb"] > 0 and out["rss_after_mb"] > 0
    assert out["probe_requests"] > 0
    flood = out["flood"]
    assert set(flood) == {"bodies", "connections", "slow"}
    for mode, stats in flood.items():
        assert stats["sent"] > 0, (mode, stats)
    assert flood["connections"]["answered"] > 0
    assert out["component_watch"]["gw"]["rounds"] > 0
    assert out["availability_poll"]["polls"] > 0


def assert_run_gone(out: dict[str, Any]) -> None:
    assert out["run_id"] not in find_runs(), "the benchmark's run was not removed"


def test_bench_abuse_twice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))

    result = asyncio.run(bench(parse_topology(ABUSE), SHORT, lambda line: None))
    out = json.loads(json.dumps(result.to_json()))
    assert_sane(out)
    assert out["targets"] == ["dns-1"]
    assert_run_gone(out)

    # Again through the command line, as a user runs it.
    topology = tmp_path / "abuse.yaml"
    topology.write_text(yaml.safe_dump(ABUSE))
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        code = main(["bench", "abuse", "--json", "-f", str(topology), "--duration", "3",
                     "--faults", "2", "--connections", "20", "--slow", "10",
                     "--body-workers", "2", "--settle", "1"])
    out = json.loads(stdout.getvalue())
    assert code == 0, out["errors"]
    assert_sane(out)
    assert_run_gone(out)
