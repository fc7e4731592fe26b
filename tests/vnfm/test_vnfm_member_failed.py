"""IF-2 at the generic VNFM: a load balancer's ``member_failed`` reports.

The VNFM runs for real on loopback with real SDK clients as the components (two web
members behind a 2N LB pair); only the VIM's repairs are a fake that records what it
was asked. The member timer is short (``member_confirm_s``) so each test waits for a
report's outcome, not a clock.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from vnfm_util import RecordingRepair, until

from nfvha.amf.config import AmfConfig, ComponentEndpoint
from nfvha.amf.manager import AvailabilityManager
from nfvha.amf.sdk import ComponentClient
from nfvha.model.events import EventType, Kind, Severity, StoredEvent
from nfvha.model.settings import Settings
from nfvha.model.topology import parse_topology
from nfvha.store.assignments import SqliteAssignmentStore
from nfvha.testbed.deploy import free_tcp_port as free_port
from nfvha.util.clock import SYSTEM_CLOCK

CONFIRM_S = 0.1
MEMBERS = ("w-1", "w-2", "w-3")
TOPOLOGY: dict[str, Any] = {
    "name": "t",
    "sites": [{"name": "s", "racks": [{"name": "r", "hosts": [{"name": "h1"}, {"name": "h2"}]}]}],
    "vms": [{"name": f"vm{i}", "host": f"h{1 + i % 2}"} for i in range(5)],
    "vnfs": [
        {"name": "web", "redundancy": "n-way-active", "stateful": False, "anti_affinity": "none",
         "service_address": {"kind": "lb", "port": 7100},
         "components": [{"name": m, "vm": f"vm{i}", "port": 7100}
                        for i, m in enumerate(MEMBERS)]},
        {"name": "web-lb", "redundancy": "2n", "stateful": False, "balances": "web",
         "service_address": {"kind": "vip", "port": 7100},
         "components": [{"name": "lb-a", "vm": "vm3", "program": "lb", "port": 7100},
                        {"name": "lb-b", "vm": "vm4", "program": "lb", "port": 7100}]},
    ],
}


class Site:
    def __init__(self, vnfm: AvailabilityManager, repair: RecordingRepair,
                 clients: dict[str, ComponentClient]) -> None:
        self.vnfm = vnfm
        self.repair = repair
        self.clients = clients

    def lb(self, role: str) -> ComponentClient:
        rec = self.vnfm.records("web-lb")["web-lb"]
        assert rec is not None
        name = rec.active[0] if role == "active" else rec.standby[0]
        return self.clients[name]

    async def silence(self, member: str) -> None:
        """The member stops answering the VNFM (hung, or dead before the VIM says so)."""
        await self.clients[member].close()

    async def restarted_hung(self, member: str) -> None:
        """A hung member is reported; its restart (kill first) is the marker that the
        member timer has run for every report sent before."""
        await self.silence(member)
        await self.lb("active").member_failed(member, "3 health checks missed")
        await until(lambda: "kill-restart" in self.repair.of(member),
                    f"{member} was not restarted")

    def crashed(self, member: str) -> None:
        now = time.time()
        self.vnfm.on_events([StoredEvent(
            id=1, host="h1", seq=1, kind=Kind.VNFC_CRASHED, entity=f"vnfc/{member}",
            severity=Severity.MAJOR, event_type=EventType.PROCESSING_ERROR_ALARM,
            probable_cause="vnfc-crash", event_time=now, detected_mono_ns=time.monotonic_ns(),
            received_time=now, received_mono_ns=time.monotonic_ns())])

    def failures(self, member: str) -> int:
        return self.vnfm._repairs.tracker("web").component_failures(member)



@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    topology = parse_topology(TOPOLOGY)
    port = free_port()
    endpoints = [ComponentEndpoint(name=c.name, vnf=v.name, vm=c.vm, host=topology.vm(c.vm).host,
                                   address="127.0.0.1", port=c.port, sync_port=c.port + 1)
                 for v, c in topology.components()]
    cfg = AmfConfig(listen_ip="127.0.0.1", port=port, components=endpoints,
                    balancers={"web-lb": "web"})
    store = SqliteAssignmentStore(tmp_path / "amf.db")
    repair = RecordingRepair()
    vnfm = AvailabilityManager(
        topology, cfg, store, repair, Settings(), SYSTEM_CLOCK,
        member_confirm_s=CONFIRM_S)
    await vnfm.start()
    clients = {e.name: ComponentClient(e.name, ("127.0.0.1", port)) for e in endpoints}
    try:
        for c in clients.values():
            await c.start()

        def assigned() -> bool:
            web, lb = vnfm.records("web")["web"], vnfm.records("web-lb")["web-lb"]
            return (web is not None and len(web.active) == len(MEMBERS)
                    and lb is not None and len(lb.active) == 1 and len(lb.standby) == 1)

        await until(assigned, "the VNFs were not assigned")
        yield Site(vnfm, repair, clients)
    finally:
        for c in clients.values():
            await c.close()
        await vnfm.close()
        store.close()


@pytest.mark.req("IF-2")
async def test_a_hung_member_reported_by_the_active_lb_is_killed_and_restarted(
        site: Site) -> None:
    await site.restarted_hung("w-1")
    assert site.repair.of("w-1") == ["kill-restart"]  # vnfc.start alone leaves it hanging
    assert site.failures("w-1") == 1  # counted like any component failure (escalation)
    assert site.vnfm.readiness("w-1").value in ("suspect", "out-of-service")


@pytest.mark.req("IF-2")
async def test_reports_from_the_standby_lb_or_about_strangers_are_ignored(site: Site) -> None:
    await site.silence("w-1")
    await site.lb("standby").member_failed("w-1", "3 health checks missed")
    await site.lb("active").member_failed("lb-b", "not a member")
    await site.lb("active").member_failed("nope", "unknown")
    await site.restarted_hung("w-2")  # sent after those: handled after them
    assert site.repair.of("w-1") == [] and site.repair.of("lb-b") == []
    assert site.failures("w-1") == 0


@pytest.mark.req("VNFHA-10")
@pytest.mark.parametrize("lb_first", [True, False], ids=["lb-first", "agent-first"])
async def test_a_crash_reported_by_both_the_agent_and_the_lb_is_recovered_once(
        site: Site, lb_first: bool) -> None:
    await site.silence("w-1")
    if lb_first:
        await site.lb("active").member_failed("w-1", "upstream: Connection refused")
        await until(lambda: site.vnfm.readiness("w-1").value == "suspect", "not suspect")
        site.crashed("w-1")
    else:
        site.crashed("w-1")
        await site.lb("active").member_failed("w-1", "upstream: Connection refused")
        await site.lb("active").member_failed("w-1", "again, after an LB failover")
    await site.restarted_hung("w-2")  # w-1's timer, if any, has run by now
    assert site.repair.of("w-1") == ["restart"]
    assert site.failures("w-1") == 1


async def test_a_stalled_member_that_still_answers_the_vnfm_is_not_restarted(
        site: Site) -> None:
    # It missed the LB's health checks (a loaded CPU) but its SDK session goes on.
    await site.lb("active").member_failed("w-1", "3 health checks missed")
    await site.restarted_hung("w-2")
    assert site.repair.of("w-1") == []
    assert site.failures("w-1") == 0
