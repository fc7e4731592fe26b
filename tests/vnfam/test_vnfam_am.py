"""A VNF's own AM (``VnfAm``) between real SDK components and a fake VIM API: the VIM's
events reach the engine as they reach the generic VNFM, repairs go to the VIM's API,
and what the VIM knew before the AM started is read once, not lost."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from vnfam_testutil import TOKEN, FakeVim, until

from nfvha.amf.config import AmfConfig, ComponentEndpoint
from nfvha.amf.own.am import VnfAm
from nfvha.amf.own.vim import VimClient
from nfvha.amf.sdk import ComponentClient
from nfvha.model.events import Kind
from nfvha.model.settings import Settings
from nfvha.model.topology import Topology, parse_topology
from nfvha.store.assignments import SqliteAssignmentStore
from nfvha.testbed.deploy import free_tcp_port as free_port

TOPOLOGY: dict[str, Any] = {
    "name": "t",
    "sites": [{"name": "s", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]},
                                      {"name": "r2", "hosts": [{"name": "h2"}]}]}],
    "vms": [{"name": "vm1", "host": "h1"}, {"name": "vm2", "host": "h2"}],
    "vnfs": [{"name": "gw", "redundancy": "2n", "stateful": False, "vnfm": "own",
              "components": [{"name": "gw-a", "vm": "vm1", "port": 7000},
                             {"name": "gw-b", "vm": "vm2", "port": 7000}]}],
}
VM_OF = {"gw-a": "vm1", "gw-b": "vm2"}
HOST_OF = {"gw-a": "h1", "gw-b": "h2"}



def amf_for(topology: Topology, port: int, names: list[str] | None = None) -> AmfConfig:
    return AmfConfig(listen_ip="127.0.0.1", port=port, components=[
        ComponentEndpoint(name=c.name, vnf=v.name, vm=c.vm, host=topology.vm(c.vm).host,
                          address="127.0.0.1", port=c.port, sync_port=c.port + 1)
        for v, c in topology.components() if names is None or c.name in names])


class Site:
    def __init__(self, tmp: Path, fake: FakeVim) -> None:
        self.topology = parse_topology(TOPOLOGY)
        self.fake = fake
        self.port = free_port()
        self.vim = VimClient("http://vim.test", TOKEN, transport=fake.client_transport())
        self.store = SqliteAssignmentStore(tmp / "gw-am.db")
        self.am = VnfAm(self.topology, "gw", amf_for(self.topology, self.port), self.vim,
                        self.store, Settings(), poll_wait_s=1.0, retry_min_s=0.01,
                        retry_max_s=0.05)
        self.clients: dict[str, ComponentClient] = {}

    async def component(self, name: str) -> ComponentClient:
        """A (new) process of component ``name``: a new incarnation."""
        c = ComponentClient(name, ("127.0.0.1", self.port), reconnect_max_s=0.1)
        await c.start()
        self.clients[name] = c
        return c

    async def dies(self, name: str) -> None:
        await self.clients.pop(name).close()

    def record(self) -> tuple[tuple[str, ...], tuple[str, ...], int]:
        rec = self.am.manager.records("gw")["gw"]
        return (rec.active, rec.standby, rec.epoch) if rec else ((), (), 0)

    async def assigned(self, active: str, standby: str, above: int = 0) -> int:
        await until(lambda: self.record()[:2] == ((active,), (standby,))
                    and self.record()[2] > above, f"not active {active}, standby {standby}")
        await until(lambda: self.clients[active].ha_state("gw") == "active", "never served")
        return self.record()[2]

    async def close(self) -> None:
        for c in self.clients.values():
            await c.close()
        await self.am.close()
        await self.vim.close()
        self.store.close()


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    s = Site(tmp_path, FakeVim(placement={"vm1": "h1", "vm2": "h2"}))
    try:
        yield s
    finally:
        await s.close()


@pytest.mark.req("VNFHA-5")
async def test_failover_on_a_vnfc_crash_and_a_vm_repair_asked_of_the_vim(site: Site) -> None:
    await site.am.start()
    await site.am.synced.wait()
    await site.component("gw-a")
    await site.component("gw-b")
    await until(lambda: len(site.record()[0]) == 1 and len(site.record()[1]) == 1,
                "gw not assigned")
    [active], [standby], epoch = site.record()
    await until(lambda: site.clients[active].ha_state("gw") == "active", "no active")

    # The active's process exits; the agent reports it through the VIM.
    await site.dies(active)
    await site.fake.publish(Kind.VNFC_CRASHED, f"vnfc/{active}", host=HOST_OF[active],
                            vm=VM_OF[active])
    await until(lambda: site.record()[0] == (standby,), "no failover")
    assert site.record()[2] > epoch
    assert "VNFC exited" in site.am.manager.decisions[-1].reason  # the VIM's word, no lease
    await until(lambda: any(c.path == f"/v1/vnfcs/{active}/start"
                            for c in site.fake.posts()), "the VNFC was not restarted")
    await site.component(active)  # the VIM started it again
    epoch = await site.assigned(standby, active)

    # The new active's VM crashes: failover back, the VM repaired through the VIM.
    await site.dies(standby)
    crash = await site.fake.publish(Kind.VM_CRASHED, f"vm/{VM_OF[standby]}",
                                    host=HOST_OF[standby])
    await until(lambda: site.record()[0] == (active,), "no failover on the VM crash")
    assert f"VM {VM_OF[standby]} crashed" in site.am.manager.decisions[-1].reason
    await until(lambda: len(site.fake.posts("/v1/vms/")) == 1, "no VM repair asked")
    [ask] = site.fake.posts("/v1/vms/")
    assert (ask.path, ask.params) == (f"/v1/vms/{VM_OF[standby]}/repair",
                                      {"failure": str(crash.id)})
    await site.component(standby)  # the repaired VM started it again
    await site.assigned(active, standby, epoch)


async def test_what_the_vim_knew_before_the_am_started_is_read_once(site: Site) -> None:
    """List, then watch: a VM failure awaiting its repair is asked about (once: its event
    is before the feed's cursor), a VNFC that exited meanwhile is started again."""
    crash = await site.fake.publish(Kind.VM_CRASHED, "vm/vm1")
    site.fake.repairs = [
        {"vm": "vm1", "state": "awaiting-confirmation", "failure_event": crash.id},
        {"vm": "vm2", "state": "ok", "failure_event": None}]
    site.fake.vms = [{"name": "vm1", "state": "crashed"}, {"name": "vm2", "state": "running"}]
    site.fake.vnfcs = [
        {"name": "gw-a", "vnf": "gw", "vm": "vm1", "host": "h1", "state": "exited"},
        {"name": "gw-b", "vnf": "gw", "vm": "vm2", "host": "h2", "state": "exited"}]
    site.fake.faults["/v1/status"] = ["refused", 503]  # the VIM is not up yet
    await site.am.start()
    await site.am.synced.wait()
    assert site.am.feed is not None and site.am.feed.after == crash.id
    await until(lambda: len(site.fake.posts("/v1/vms/")) == 1, "no VM repair asked")
    assert sorted((c.path, str(c.params)) for c in site.fake.posts()) == [
        ("/v1/vms/vm1/repair", str({"failure": str(crash.id)})),
        ("/v1/vnfcs/gw-b/start", "{}")]  # gw-a's VM is down: its repair brings it back
    assert site.am.manager.readiness("gw-a").value == "out-of-service"
    await site.fake.publish(Kind.VNFC_STARTED, "vnfc/gw-b")
    await until(lambda: site.am.feed is not None and site.am.feed.after == crash.id + 1,
                "the feed stopped")
    assert len(site.fake.posts("/v1/vms/")) == 1


async def test_an_event_from_a_host_the_vm_has_left_is_not_acted_on(site: Site) -> None:
    await site.am.start()
    await site.am.synced.wait()
    await site.fake.publish(Kind.VM_EVACUATED, "vm/vm1", host="h2", to="h2", error=None)
    await until(lambda: site.am.placement.host_of("vm1") == "h2", "placement not followed")
    # h1 comes back and sends what it spooled about vm1 (running on h2 now).
    await site.fake.publish(Kind.VM_CRASHED, "vm/vm1", host="h1")
    await site.fake.publish(Kind.VNFC_STARTED, "vnfc/gw-b", host="h2")
    await until(lambda: site.am.feed is not None and site.am.feed.after == 3, "feed stuck")
    assert site.fake.posts() == []
    assert site.am.manager.readiness("gw-a").value != "out-of-service"


def test_an_own_am_manages_its_vnf_and_only_its_components(tmp_path: Path) -> None:
    fake = FakeVim()
    vim = VimClient("http://vim.test", TOKEN, transport=fake.client_transport())
    store = SqliteAssignmentStore(tmp_path / "am.db")
    try:
        topology = parse_topology(TOPOLOGY)
        with pytest.raises(ValueError, match="exactly its components"):
            VnfAm(topology, "gw", amf_for(topology, 1, ["gw-a"]), vim, store)
        generic = parse_topology({**TOPOLOGY, "vnfs": [
            {**TOPOLOGY["vnfs"][0], "vnfm": "generic"}]})
        with pytest.raises(ValueError, match="generic VNFM"):
            VnfAm(generic, "gw", amf_for(generic, 1), vim, store)
        with pytest.raises(ValueError, match="no VNF named"):
            VnfAm(topology, "db", amf_for(topology, 1), vim, store)
    finally:
        store.close()
