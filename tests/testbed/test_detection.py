"""Failure detection on the real test bed: VNFC and VM crashes, VM hangs (HV-2),
with last words and records (NFVI-5, HV-6)."""

from __future__ import annotations

import asyncio

import pytest
from bedkit import Bed

from nfvha.testbed.observe import tcp_request, udp_request, wait_serving

pytestmark = [pytest.mark.testbed, pytest.mark.asyncio]

# The requirement is 1 s; the benchmark shows tens of ms. A loaded CI machine
# gets the whole margin.
REQUIRED_MS = 1000.0


def latency_ms(ev: dict[str, object], t0_ns: int) -> float:
    return (int(ev["received_mono_ns"]) - t0_ns) / 1e6  # type: ignore[call-overload]


async def test_vnfcs_serve_real_udp_and_tcp_state(bed: Bed) -> None:
    addr = bed.tb.vm_address("vm-a")
    assert await wait_serving(addr) == "PONG gw-a"
    assert udp_request(addr, "INC s1") == "OK s1 1 gw-a"
    assert tcp_request(addr, "INC s1") == "OK s1 2 gw-a"
    assert tcp_request(addr, "GET s1") == "VAL s1 2 gw-a"


@pytest.mark.req("HV-2")
async def test_vnfc_crash_reported_with_cause(bed: Bed) -> None:
    await bed.events.sync()
    inj = bed.faults.inject("vnfc-crash", "gw-a")
    ev = await bed.events.wait("vnfc.crashed", "vnfc/gw-a")
    assert latency_ms(ev, inj.injected_mono_ns) < REQUIRED_MS
    assert ev["details"]["exit_desc"] == "killed by SIGKILL"
    assert ev["severity"] == "MAJOR" and ev["host"] == "h1"
    # Restart through the controller; the crash alarm is cleared by the start event.
    r = await bed.client.post("/v1/vnfcs/gw-a/start")
    assert r.status_code == 200, r.text
    started = await bed.events.wait("vnfc.started", "vnfc/gw-a")
    assert started["clears"] is True
    assert await wait_serving(bed.tb.vm_address("vm-a")) == "PONG gw-a"


@pytest.mark.req("HV-2")
@pytest.mark.req("REC-3")
async def test_vm_crash_reported_and_its_vnfcs_with_it(bed: Bed) -> None:
    await bed.events.sync()
    inj = bed.faults.inject("vm-crash", "vm-b")
    ev = await bed.events.wait("vm.crashed", "vm/vm-b")
    assert latency_ms(ev, inj.injected_mono_ns) < REQUIRED_MS
    assert ev["severity"] == "CRITICAL" and ev["probable_cause"] == "vm-crash"
    lost = await bed.events.wait("vnfc.crashed", "vnfc/gw-b")
    assert lost["details"]["cause_entity"] == "vm/vm-b"
    # Nothing of the VM survives: its VNFC stopped answering.
    assert udp_request(bed.tb.vm_address("vm-b"), "PING", timeout_s=0.3) is None
    r = await bed.client.post("/v1/vms/vm-b/start")
    assert r.status_code == 200 and r.json()["result"]["ready"], r.text
    assert await wait_serving(bed.tb.vm_address("vm-b")) == "PONG gw-b"


@pytest.mark.req("HV-2")
async def test_vm_hang_detected_by_guest_heartbeat_and_cleared(bed: Bed) -> None:
    await bed.events.sync()
    inj = bed.faults.inject("vm-hang", "vm-c")
    try:
        ev = await bed.events.wait("vm.hung", "vm/vm-c")
        ms = latency_ms(ev, inj.injected_mono_ns)
        # Not before the configured 3 x 100 ms of silence (minus one interval of phase),
        # and within the requirement.
        assert 150.0 < ms < REQUIRED_MS, ms
        await bed.wait_vm_state("vm-c", "hung")
    finally:
        bed.faults.inject("vm-thaw", "vm-c")
    cleared = await bed.events.wait("vm.responsive", "vm/vm-c")
    assert cleared["clears"] is True
    await bed.wait_vm_state("vm-c", "running")


@pytest.mark.req("NFVI-5")
@pytest.mark.req("HV-6")
async def test_vm_records_and_last_words_after_death(bed: Bed) -> None:
    records = bed.tb.run.vm_dir("vm-a") / "records.jsonl"
    # Records are taken every 0.2 s in this topology; wait for a few.
    for _ in range(100):
        if records.exists() and len(records.read_text().splitlines()) >= 3:
            break
        await asyncio.sleep(0.05)
    lines = records.read_text().splitlines()
    assert len(lines) >= 3
    assert '"memory_bytes"' in lines[-1] and '"cpu_usage_ns"' in lines[-1]
    r = await bed.client.get("/v1/vms/vm-a/last-words")
    assert r.status_code == 404  # alive: nothing to say yet
    await bed.events.sync()
    bed.faults.inject("vm-crash", "vm-a")
    ev = await bed.events.wait("vm.last_words", "vm/vm-a")
    words = ev["details"]
    assert words["exit_desc"] == "killed by SIGKILL"
    assert words["last_sample"]["memory_bytes"] > 0
    assert any("gw-a" in line for line in words["console"]), words["console"]
    r = await bed.client.get("/v1/vms/vm-a/last-words")
    assert r.status_code == 200 and r.json()["exit_desc"] == "killed by SIGKILL"
    # VM actions are logged for diagnosis (HV-6).
    actions = (bed.tb.run.host_dir("h1") / "vm-actions.log").read_text()
    assert '"action": "start"' in actions and '"action": "crash"' in actions


async def test_controller_restart_loses_no_event(bed: Bed) -> None:
    """Events raised while the controller is down are kept by the agents (on disk)
    and delivered, exactly once, when it is back."""
    await bed.events.sync()
    bed.faults.inject("controller-crash", "controller")
    bed.faults.inject("vnfc-crash", "gw-b")
    bed.faults.inject("vm-crash", "vm-c")
    bed.tb.start_controller()
    await bed.tb.wait_ready()
    for kind, entity in (("vnfc.crashed", "vnfc/gw-b"), ("vm.crashed", "vm/vm-c"),
                         ("vnfc.crashed", "vnfc/db-1"), ("vm.last_words", "vm/vm-c")):
        await bed.events.wait(kind, entity, timeout_s=15)
    r = await bed.client.get("/v1/events", params={"after": bed.events.after, "limit": 2000})
    seen = [(e["host"], e["seq"]) for e in r.json() if e["seq"] > 0]
    assert len(seen) == len(set(seen)), "an agent event was stored twice"
    # Each agent's sequence has no gap: nothing was lost in between.
    for host in ("h1", "h2"):
        seqs = sorted(s for h, s in seen if h == host)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), (host, seqs)


@pytest.mark.req("VNFHA-5")
@pytest.mark.req("VNFHA-13")
async def test_vnf_initiated_vm_repair_replaces_the_vm_in_its_initial_state(bed: Bed) -> None:
    addr = bed.tb.vm_address("vm-a")
    await wait_serving(addr)
    assert udp_request(addr, "INC r1") == "OK r1 1 gw-a"
    before = (await bed.vm("vm-a"))["pid"]
    await bed.events.sync()
    r = await bed.client.post("/v1/vms/vm-a/repair")
    assert r.status_code == 200, r.text
    await bed.events.wait("vm.stopped", "vm/vm-a")
    await bed.events.wait("vm.started", "vm/vm-a")
    await wait_serving(addr)
    after = await bed.vm("vm-a")
    assert after["state"] == "running" and after["pid"] != before
    # A new VM in the same initial state: the VNFC's in-memory state is gone.
    assert udp_request(addr, "GET r1") == "VAL r1 0 gw-a"
    bad = await bed.client.post("/v1/vms/vm-a/reboot-harder")
    assert bad.status_code == 400  # ProblemDetails: not one of start, stop, repair
