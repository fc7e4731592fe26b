"""The inventory API: ``/v1/status`` a summary (counts per state, what is not healthy,
bounded), ``/v1/hosts``, ``/v1/vms``, ``/v1/vnfcs`` in pages (``limit``, ``offset``,
``Link: rel="next"``, ``X-Total-Count``)."""

from __future__ import annotations

import io
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import httpx
import pytest
from rich.console import Console

from nfvha.api.app import PAGE_MAX, create_app
from nfvha.cli.render import list_everything, status_tables
from nfvha.controller.agents import AgentServer, AgentSession, HostInventory
from nfvha.controller.bus import EventBus
from nfvha.controller.hoststates import HostStates
from nfvha.controller.view import InventoryView
from nfvha.faults.manager import AlarmManager
from nfvha.faults.notifier import Notifier
from nfvha.faults.outbox import Outbox
from nfvha.faults.stream import AlarmStream
from nfvha.model.auth import AuthConfig, TokenEntry, token_hash
from nfvha.model.topology import Topology, default_topology_path, load_topology
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.testbed.apiclient import full_status, get_all
from nfvha.util.clock import ManualClock
from nfvha.wire.director import HostState as HostStateMsg
from nfvha.wire.frames import Hello, Inventory, ProcessInfo, VmInfo, VnfcInfo

TOKEN = "an-admin-token-for-the-inventory-test"


@dataclass
class Api:
    client: httpx.AsyncClient
    topology: Topology
    agents: AgentServer

    def report(self, host: str, *, vm_states: dict[str, str] | None = None,
               vnfc_states: dict[str, str] | None = None) -> None:
        """``host``'s agent reports its VMs and VNFCs: running unless said otherwise
        (standby VMs: stopped)."""
        t = self.topology
        vm_states, vnfc_states = vm_states or {}, vnfc_states or {}
        self.agents.inventories[host] = HostInventory(Inventory(
            host=host,
            vms=[VmInfo(name=v.name, since=1.0, pid=100 + i, state=vm_states.get(
                v.name, "stopped" if v.standby_for else "running"))  # type: ignore[arg-type]
                for i, v in enumerate(t.vms_on(host))],
            vnfcs=[VnfcInfo(name=c.name, vm=v.name, since=1.0, pid=200,
                            state=vnfc_states.get(c.name, "running"))  # type: ignore[arg-type]
                   for v in t.vms_on(host) for _, c in t.components_on(v.name)],
            processes=[ProcessInfo(name="vswitch", state="running", pid=7)]))


@pytest.fixture
async def api(tmp_path: Path) -> AsyncIterator[Api]:
    topology = load_topology(default_topology_path())
    clock = ManualClock()
    db = tmp_path / "events.db"
    store, alarm_store = SqliteEventStore(db), SqliteAlarmStore(db)
    outbox = Outbox(tmp_path / "notifications.db")
    notifier = Notifier(outbox, clock)
    await notifier.start()
    bus = EventBus(store, clock)
    liveness = HostStates(topology.host_names(), clock)
    agents = AgentServer(("127.0.0.1", 0), bus, liveness, clock)
    for host in topology.host_names():
        liveness.apply(HostStateMsg(host=host, state="up", reason="heartbeat received"))
        agents.sessions[host] = AgentSession(
            Hello(host=host, agent_pid=1, incarnation="i", started_time=1.0),
            cast(Any, None), 1.0)
    auth = AuthConfig(tokens=[TokenEntry(sha256=token_hash(TOKEN), role="admin")],
                      intake_trusted_networks=[])
    app = create_app("abcde", topology, InventoryView(topology, agents, liveness, clock),
                     bus, agents, AlarmManager(topology, alarm_store, clock,
                                               topology.settings),
                     notifier, AlarmStream(), "/vnffm/v1", auth, clock)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t",
                                 headers={"Authorization": f"Bearer {TOKEN}"}) as c:
        yield Api(c, topology, agents)
    bus.close()
    await notifier.close()
    outbox.close()
    alarm_store.close()
    store.close()


async def test_status_counts_every_state_and_lists_what_is_not_healthy(api: Api) -> None:
    api.report("host1", vm_states={"gw-vm1": "crashed"})
    api.report("host2", vnfc_states={"dns-1": "exited"})
    del api.agents.sessions["host3"]  # host3's agent is gone, and its inventory with it
    st = (await api.client.get("/v1/status")).json()
    assert st["run_id"] == "abcde" and st["last_event_id"] == 0
    assert st["hosts"] == {"total": 3, "by_state": {"up": 3}, "not_healthy": 1}
    assert st["agents_connected"] == 2
    # host3's VMs (gw-vm2, web-vm3, lb-vm2) are not reported: not healthy either.
    assert st["vms"]["total"] == 9 and st["vms"]["not_healthy"] == 4
    assert st["vms"]["by_state"] == {"running": 5, "crashed": 1, "unknown (no agent)": 3}
    bad = st["not_healthy"]
    assert [h["name"] for h in bad["hosts"]] == ["host3"]
    assert [v["name"] for v in bad["vms"]] == ["gw-vm1", "gw-vm2", "web-vm3", "lb-vm2"]
    assert {c["name"] for c in bad["vnfcs"]} == {"dns-1", "gw-b", "web-3", "web-lb-b"}
    assert st["vnfcs"]["by_state"]["exited"] == 1
    # Bounded: at most this many of each.
    st = (await api.client.get("/v1/status", params={"not_healthy_limit": 1})).json()
    assert [v["name"] for v in st["not_healthy"]["vms"]] == ["gw-vm1"]
    assert st["vms"]["not_healthy"] == 4 and st["not_healthy"]["limit"] == 1
    r = await api.client.get("/v1/status", params={"not_healthy_limit": 100_000})
    assert r.status_code == 400


async def test_a_healthy_deployment_lists_nothing_as_not_healthy(api: Api) -> None:
    for host in api.topology.host_names():
        api.report(host)
    st = (await api.client.get("/v1/status")).json()
    assert st["not_healthy"] == {"limit": 20, "hosts": [], "vms": [], "vnfcs": []}
    assert st["vnfcs"] == {"total": 9, "by_state": {"running": 9}, "not_healthy": 0}


@pytest.mark.parametrize("kind", ["hosts", "vms", "vnfcs"])
async def test_listings_come_in_pages_linked_to_the_next(api: Api, kind: str) -> None:
    for host in api.topology.host_names():
        api.report(host)
    everything = (await api.client.get(f"/v1/{kind}")).json()  # the default page holds all
    names = [x["name"] for x in everything]
    expected = {"hosts": api.topology.host_names(),
                "vms": [v.name for v in api.topology.vms],
                "vnfcs": [c.name for _, c in api.topology.components()]}[kind]
    assert names == expected  # topology order
    pages: list[list[str]] = []
    r = await api.client.get(f"/v1/{kind}", params={"limit": 2})
    while True:
        assert r.status_code == 200 and r.headers["x-total-count"] == str(len(names))
        pages.append([x["name"] for x in r.json()])
        following = r.links.get("next", {}).get("url")
        if following is None:
            break
        assert "limit=2" in following
        r = await api.client.get(following)
    assert [n for page in pages for n in page] == names
    assert all(len(p) == 2 for p in pages[:-1]) and 1 <= len(pages[-1]) <= 2
    r = await api.client.get(f"/v1/{kind}", params={"offset": 1000})
    assert r.json() == [] and "link" not in r.headers
    assert await get_all(api.client, f"/v1/{kind}") == everything
    for bad in ({"limit": 0}, {"limit": PAGE_MAX + 1}, {"offset": -1}, {"limit": "x"}):
        assert (await api.client.get(f"/v1/{kind}", params=bad)).status_code == 400


async def test_vms_and_vnfcs_of_one_vnf(api: Api) -> None:
    api.report("host1")
    vnfcs = (await api.client.get("/v1/vnfcs", params={"vnf": "web"})).json()
    assert [c["name"] for c in vnfcs] == ["web-1", "web-2", "web-3"]
    assert {c["vnf"] for c in vnfcs} == {"web"}
    r = await api.client.get("/v1/vms", params={"vnf": "gw", "limit": 1})
    assert [v["name"] for v in r.json()] == ["gw-vm1"] and r.headers["x-total-count"] == "2"
    assert "vnf=gw" in r.links["next"]["url"]
    for kind in ("vms", "vnfcs"):
        r = await api.client.get(f"/v1/{kind}", params={"vnf": "nope"})
        assert r.status_code == 404 and "no VNF named 'nope'" in r.json()["detail"]


async def test_one_host_and_the_full_status_for_tools(api: Api) -> None:
    api.report("host2")
    h = (await api.client.get("/v1/hosts/host2")).json()
    assert h["name"] == "host2" and h["agent"]["connected"] and h["processes"]
    assert (await api.client.get("/v1/hosts/nope")).status_code == 404
    full = await full_status(api.client)
    assert [v["name"] for v in full["vms"]] == [v.name for v in api.topology.vms]
    assert full["status"]["vms"]["total"] == 9 and full["last_event_id"] == 0


async def test_an_unknown_vm_or_vnfc_is_named_with_a_bounded_hint(api: Api) -> None:
    r = await api.client.post("/v1/vms/nope/start")
    assert r.status_code == 404 and "gw-vm1" in r.json()["detail"]
    r = await api.client.post("/v1/vnfcs/nope/start")
    assert r.status_code == 404 and "gw-a" in r.json()["detail"]


async def test_the_status_table_shows_everything_or_what_is_not_healthy(api: Api) -> None:
    """What ``nfvha status`` prints: every item of a small deployment, or (a large one,
    or lists=None) the counts and what is not healthy."""
    api.report("host1", vm_states={"gw-vm1": "crashed"})
    api.report("host2")
    api.report("host3")
    full = await full_status(api.client)
    status = full["status"]
    assert list_everything(status)

    def printed(lists: dict[str, Any] | None) -> str:
        out = Console(file=io.StringIO(), width=200)
        out.print(status_tables(status, lists, [], "http://t"))
        return cast(io.StringIO, out.file).getvalue()

    everything = printed({k: full[k] for k in ("hosts", "vms", "vnfcs")})
    assert all(v.name in everything for v in api.topology.vms)
    assert "VMs 9 (running 8, crashed 1)" in everything
    partial = printed(None)
    assert "gw-vm1" in partial and "web-vm1" not in partial
    assert "only the 1 of 9 not healthy" in partial and "--all" in partial
