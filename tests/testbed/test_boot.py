"""Boot is not a hang (issue 11): a VM whose guest is slow to boot - its channel open,
then stalled as on a loaded host - is starting, not hung; one that does not boot
within its boot time is reported as failing to boot, not as hung.

The guests here run through a wrapper that stalls each one (its whole process,
``time.sleep`` on its event loop) right after it opened its guest channel, for as
long as ``NFVHA_TEST_BOOT_STALL`` says for its VM: the agent has connected by then
and would be sending heartbeats nobody answers."""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from bedkit import assert_nothing_left, run_pids

from nfvha.model.topology import parse_topology
from nfvha.testbed import deploy
from nfvha.testbed.deploy import Testbed, namespaces_available
from nfvha.testbed.observe import EventWaiter

SLOW_GUEST = '''
import json, os, sys, time
from nfvha.nfvi import guest

stalls = dict(kv.split("=") for kv in os.environ.get("NFVHA_TEST_BOOT_STALL", "").split(",")
              if kv)
_open = guest.Guest._open_channel

async def _open_then_stall(self):
    await _open(self)
    stall = float(stalls.get(self.config.vm, 0))
    self.console.log(f"test: stalling the boot for {stall} s")
    time.sleep(stall)  # the guest answers nothing meanwhile: a loaded host

crashes = dict(kv.split("=") for kv in os.environ.get("NFVHA_TEST_BOOT_CRASH", "").split(",")
               if kv)
_start = guest.Guest._start

def _start_or_crash(self, vnfc):
    how = crashes.get(self.config.vm)
    marker = self.vm_dir / "crashed-at-boot"  # outside its disk: a repair keeps it
    if how == "always" or (how == "once" and not marker.exists()):
        marker.touch()
        self.console.log("test: crashing at boot")
        os._exit(3)
    _start(self, vnfc)

guest.Guest._open_channel = _open_then_stall
guest.Guest._start = _start_or_crash
sys.exit(guest.main(sys.argv[1:]))
'''

WRAPPER = '''#!/bin/sh
if [ "$1" = "-m" ] && [ "$2" = "nfvha.nfvi.guest" ]; then
    shift 2
    exec {python} {slow_guest} "$@"
fi
exec {python} "$@"
'''

TOPOLOGY: dict[str, Any] = {
    "name": "slowboot",
    "sites": [{"name": "s1", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]}]}],
    "vms": [
        {"name": "vm-slow", "host": "h1", "memory_mb": 128},
        {"name": "vm-stuck", "host": "h1", "memory_mb": 128, "boot_timeout_s": 1.0},
    ],
    "vnfs": [
        {"name": "a", "redundancy": "none", "stateful": False, "vnfm": "none",
         "components": [{"name": "a-1", "vm": "vm-slow", "port": 7000}]},
        {"name": "b", "redundancy": "none", "stateful": False, "vnfm": "none",
         "components": [{"name": "b-1", "vm": "vm-stuck", "port": 7000}]},
    ],
}


def boot_python(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, stalls: dict[str, float],
                crashes: dict[str, str] | None = None) -> str:
    """A python for the test bed whose guests stall at boot (``stalls``: VM -> seconds)
    or crash at boot (``crashes``: VM -> ``once`` or ``always``)."""
    monkeypatch.setenv("NFVHA_TEST_BOOT_STALL", ",".join(f"{k}={v}" for k, v in stalls.items()))
    monkeypatch.setenv("NFVHA_TEST_BOOT_CRASH",
                       ",".join(f"{k}={v}" for k, v in (crashes or {}).items()))
    slow = tmp_path / "slow_guest.py"
    slow.write_text(SLOW_GUEST)
    wrapper = tmp_path / "python"
    wrapper.write_text(WRAPPER.format(python=sys.executable, slow_guest=slow))
    wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
    return str(wrapper)


@asynccontextmanager
async def slow_testbed(topology: dict[str, Any], stalls: dict[str, float], tmp_path: Path,
                       monkeypatch: pytest.MonkeyPatch
                       ) -> AsyncIterator[tuple[Testbed, httpx.AsyncClient]]:
    """A test bed of ``topology`` (hosts up, no VM started) whose guests stall at boot."""
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path / "runs"))
    python = boot_python(tmp_path, monkeypatch, stalls)
    tb = Testbed(parse_topology(topology, "test_boot.py"), python=python)
    pids: list[int] = []
    try:
        await asyncio.to_thread(tb.start_infrastructure)
        await tb.wait_ready()
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=60.0,
                                     headers=tb.headers) as client:
            yield tb, client
        pids = run_pids(tb)
    finally:
        await asyncio.to_thread(tb.down)
        assert_nothing_left(tb, pids)


@pytest.fixture
async def slow_bed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                   ) -> AsyncIterator[tuple[Testbed, httpx.AsyncClient]]:
    # 1 s stalled: more than three times the hang threshold (3 x 100 ms), well within
    # its boot time. 3 s stalled: past a boot time of 1 s.
    async with slow_testbed(TOPOLOGY, {"vm-slow": 1.0, "vm-stuck": 3.0}, tmp_path,
                            monkeypatch) as bed:
        yield bed


@pytest.mark.req("HV-2")
async def test_a_guest_slow_to_boot_is_starting_not_hung(
        slow_bed: tuple[Testbed, httpx.AsyncClient]) -> None:
    tb, client = slow_bed
    events = EventWaiter(client)
    await events.sync()
    r = await client.post("/v1/vms/vm-slow/start")
    assert r.status_code == 200, r.text
    assert r.json()["result"]["ready"] is True
    console = (tb.run.vm_dir("vm-slow") / "console.log").read_text()
    assert "stalling the boot for 1.0 s" in console
    # A hang would have been reported ~300 ms into the stall; the stall is over, and
    # the VM answers its heartbeat now. Nothing said it hung.
    hung = (await client.get("/v1/events", params={"kind": "vm.hung", "after": events.after}
                             )).json()
    assert hung == [], hung
    vm = next(v for v in (await client.get("/v1/vms")).json() if v["name"] == "vm-slow")
    assert vm["state"] == "running"
    # And once booted it is watched: a real hang is still detected.
    pid = vm["pid"]
    os.kill(pid, 19)  # SIGSTOP
    try:
        await events.wait("vm.hung", "vm/vm-slow", timeout_s=10.0)
    finally:
        os.kill(pid, 18)  # SIGCONT
    await events.wait("vm.responsive", "vm/vm-slow", timeout_s=10.0)


@pytest.mark.req("HV-2")
async def test_a_vm_that_does_not_boot_in_time_is_reported_not_hung(
        slow_bed: tuple[Testbed, httpx.AsyncClient]) -> None:
    _, client = slow_bed
    events = EventWaiter(client)
    await events.sync()
    r = await client.post("/v1/vms/vm-stuck/start")
    assert r.status_code == 409, r.text
    assert "did not boot within its boot time (1 s)" in r.text
    ev = await events.wait("vm.boot_timeout", "vm/vm-stuck", timeout_s=5.0)
    assert ev["details"]["boot_timeout_s"] == 1.0
    # It comes up after all (its stall ends): that clears it.
    late = await events.wait("vm.started", "vm/vm-stuck", timeout_s=10.0)
    assert late["details"]["late"] is True
    hung = (await client.get("/v1/events", params={"kind": "vm.hung", "after": events.after}
                             )).json()
    assert hung == [], hung


PARALLEL_VMS = 6
PARALLEL_STALL_S = 2.0


@pytest.mark.req("HV-2")
async def test_a_hosts_vms_start_in_parallel(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Six VMs of one host, each taking 2 s to boot, started at once: all start, and
    they boot side by side (one after another would take 12 s)."""
    vms = [f"vm{i}" for i in range(PARALLEL_VMS)]
    topology: dict[str, Any] = {
        "name": "parallel",
        "sites": [{"name": "s1", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]}]}],
        "vms": [{"name": vm, "host": "h1", "memory_mb": 64} for vm in vms],
        "vnfs": [{"name": f"v{i}", "redundancy": "none", "stateful": False, "vnfm": "none",
                  "components": [{"name": f"c{i}", "vm": vm, "port": 7000}]}
                 for i, vm in enumerate(vms)],
    }
    async with slow_testbed(topology, dict.fromkeys(vms, PARALLEL_STALL_S), tmp_path,
                            monkeypatch) as (tb, client):
        replies = await asyncio.wait_for(asyncio.gather(
            *(client.post(f"/v1/vms/{vm}/start") for vm in vms)), 60.0)
        for vm, r in zip(vms, replies, strict=True):
            assert r.status_code == 200 and r.json()["result"]["ready"] is True, (vm, r.text)
        # Each VM booted from its spawn (the agent's "start" record) to its vm.started.
        actions = [json.loads(line) for line in
                   (tb.run.host_dir("h1") / "vm-actions.log").read_text().splitlines()]
        spawned = {a["vm"]: a["time"] for a in actions if a["action"] == "start"}
        started = {e["entity"].removeprefix("vm/"): e["event_time"] for e in
                   (await client.get("/v1/events", params={"kind": "vm.started"})).json()}
        booting = [(spawned[vm], started[vm]) for vm in vms]
        for t0, t1 in booting:
            assert t1 - t0 >= PARALLEL_STALL_S * 0.9
        # The most VMs booting at one moment: one at a time would be 1.
        at_once = max(sum(1 for t0, t1 in booting if t0 <= t < t1) for t, _ in booting)
        assert at_once >= PARALLEL_VMS - 2, booting


def repaired_topology(vnfm: str) -> dict[str, Any]:
    return {
        "name": "repairs",
        "sites": [{"name": "s1", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]}]}],
        "vms": [{"name": "vm-ok", "host": "h1", "memory_mb": 64},
                {"name": "vm-flaky", "host": "h1", "memory_mb": 64}],
        "vnfs": [{"name": "a", "redundancy": "none", "stateful": False, "vnfm": vnfm,
                  "repair_action": "restart-initial",
                  "components": [{"name": "a-1", "vm": "vm-ok", "port": 7000}]},
                 {"name": "b", "redundancy": "none", "stateful": False, "vnfm": vnfm,
                  "repair_action": "restart-initial",
                  "components": [{"name": "b-1", "vm": "vm-flaky", "port": 7000}]}],
    }


@pytest.mark.req("REC-2")
async def test_start_waits_for_the_repair_the_vim_started(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A VM that dies while booting is repaired by the VIM's policy (restart-initial):
    the deployment's start waits for that repair instead of tearing everything down."""
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path / "runs"))
    python = boot_python(tmp_path, monkeypatch, {}, {"vm-flaky": "once"})
    tb = Testbed(parse_topology(repaired_topology("none"), "test_boot.py"), python=python)
    await tb.start()
    pids: list[int] = []
    try:
        pids = run_pids(tb)
        async with httpx.AsyncClient(base_url=tb.api_url, timeout=30.0,
                                     headers=tb.headers) as client:
            vms = {v["name"]: v["state"] for v in (await client.get("/v1/vms")).json()}
            assert vms == {"vm-ok": "running", "vm-flaky": "running"}
            crashed = (await client.get("/v1/events", params={"kind": "vm.crashed"})).json()
            assert [e["entity"] for e in crashed] == ["vm/vm-flaky"]
            repaired = (await client.get("/v1/events", params={"kind": "vm.repaired"})).json()
            assert [(e["entity"], e["details"]["ok"]) for e in repaired] == [
                ("vm/vm-flaky", True)]
    finally:
        await asyncio.to_thread(tb.down)
        assert_nothing_left(tb, pids)


@pytest.mark.req("REC-2")
async def test_start_fails_on_a_real_failure_naming_the_vm(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A VM that dies at every boot: its repair fails, and the start says so."""
    ok, why = namespaces_available()
    if not ok:
        pytest.skip(why)
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path / "runs"))
    python = boot_python(tmp_path, monkeypatch, {}, {"vm-flaky": "always"})
    tb = Testbed(parse_topology(repaired_topology("none"), "test_boot.py"), python=python)
    with pytest.raises(deploy.TestbedError) as failed:
        await tb.start()
    message = str(failed.value)
    assert message.startswith("VM vm-flaky did not start: 409"), message
    assert "died while booting" in message, message
    # Failed, or given up after its repairs failed again: either way not up.
    assert "the VIM's repair of it failed" in message \
        or "the VIM's repair of it was given up" in message, message
    assert_nothing_left(tb, [])
