"""``nfvha bench detect`` on a small deployment, one run of every fault kind: it
completes (host-down included: the VIM's own host repair runs meanwhile) and
reports a figure for each."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from bedkit import SMALL

from nfvha.bench.detect import BASE_KINDS, bench, default_kinds
from nfvha.model.topology import parse_topology
from nfvha.testbed.deploy import namespaces_available
from nfvha.testbed.hypervisors import hypervisor_problems


async def test_bench_detect_measures_every_kind(tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    # A quick agent-crash step: the bench waits this long after an agent (re)start.
    topology = parse_topology({**SMALL, "settings": {**SMALL["settings"],
                                                     "restart_backoff_reset_s": 1.0}})
    assert default_kinds(topology) == list(BASE_KINDS)
    rows = await bench(topology, list(BASE_KINDS), 1, lambda kind, n: None)
    assert [r for r in rows if "error" in r] == []
    assert {r["kind"]: r["n"] for r in rows} == {**dict.fromkeys(BASE_KINDS, 1),
                                                 "agent-back": 1}


# One real VM (a QEMU guest of the project's image) whose VNFC kicks its watchdog.
REAL: dict[str, Any] = {
    "name": "real",
    "settings": {"guest_heartbeat_interval_ms": 200, "guest_heartbeat_misses": 5},
    "sites": [{"name": "site1", "racks": [
        {"name": "rack1", "hosts": [{"name": "h1", "hypervisor": "libvirt"}]}]}],
    "vms": [{"name": "vm-real", "host": "h1", "cpu": 1, "memory_mb": 256,
             "boot_timeout_s": 120, "watchdog": {"action": "reset"}}],
    "vnfs": [{"name": "svc", "redundancy": "none", "stateful": False, "vnfm": "none",
              "components": [{"name": "svc-1", "vm": "vm-real", "port": 7000,
                              "watchdog_ms": 1000}]}],
}


@pytest.mark.req("HV-2")
async def test_bench_detect_on_a_real_vm_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real-VM kinds, two runs each: vm-crash (QEMU killed), guest-panic, vm-hang
    (QEMU stopped), watchdog (the device runs out)."""
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    topology = parse_topology(REAL)
    problems = hypervisor_problems(topology, namespaced=True)
    if problems:
        pytest.skip("; ".join(problems))
    monkeypatch.delenv("NFVHA_RUN_ROOT", raising=False)  # libvirtd: short socket paths
    kinds = ["vm-crash", "guest-panic", "vm-hang", "watchdog"]
    assert set(kinds) <= set(default_kinds(topology))
    rows = await bench(topology, kinds, 2, lambda kind, n: None)
    assert [r for r in rows if "error" in r] == []
    got = {r["kind"]: r for r in rows}
    assert {k: got[k]["runs"] for k in kinds} == dict.fromkeys(kinds, 2)
    assert got["watchdog"]["timeout_ms"] == 1000
