"""The VNF-level AM's repair port over the VIM's API (ADR 0008, 0010): what it asks,
when a VM counts as stopped, how the VIM's answers become the engine's outcomes."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from vnfam_testutil import TOKEN, FakeVim, outcome, until

from nfvha.amf.own.repair import ApiRepair
from nfvha.amf.own.vim import VimClient
from nfvha.model.events import Kind


class Rig:
    def __init__(self, fake: FakeVim, repair: ApiRepair) -> None:
        self.fake, self.repair = fake, repair

    async def event(self, kind: Kind, entity: str) -> int:
        """Published by the VIM and handed to the port as the feed does."""
        ev = await self.fake.publish(kind, entity)
        self.repair.on_events([ev])
        return ev.id


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    fake = FakeVim()
    client = VimClient("http://vim.test", TOKEN, transport=fake.client_transport())
    try:
        yield Rig(fake, ApiRepair(client, unsent_retry_s=5.0, retry_pause_s=0.001,
                                  poll_s=0.001))
    finally:
        await client.close()


@pytest.mark.req("VNFHA-5")
async def test_a_vnfc_is_restarted_through_the_api(rig: Rig) -> None:
    await rig.repair.restart_component("h1", "gw-a")
    assert [(c.path, c.params) for c in rig.fake.posts()] == [("/v1/vnfcs/gw-a/start", {})]


async def test_a_possibly_hung_vnfc_is_stopped_then_started_once_it_has_exited(
        rig: Rig) -> None:
    rig.fake.already["gw-a"] = 2  # the VIM sees it exit only after two asks
    await rig.repair.kill_and_restart_component("h1", "gw-a")
    assert [c.path for c in rig.fake.posts()] == [
        "/v1/vnfcs/gw-a/stop", *["/v1/vnfcs/gw-a/start"] * 3]


@pytest.mark.req("VNFHA-5")
async def test_a_crashed_vm_is_repaired_by_the_vim_about_its_failure(rig: Rig) -> None:
    crash = await rig.event(Kind.VM_CRASHED, "vm/vm1")
    ticket = rig.repair.repair_vm("vm1", requested_by="vnfm", failure=crash)
    assert ticket.how == "started" and ticket.job is not None
    stopped: list[bool] = []
    ticket.job.when_stopped(lambda: stopped.append(True))
    assert stopped == [True]  # a crashed VM runs nothing: at once
    done = await ticket.job.outcome()
    assert done.ok and done.replacement == "vm1" and done.failure_event == crash
    [ask] = rig.fake.posts("/v1/vms/")
    assert (ask.path, ask.params) == ("/v1/vms/vm1/repair", {"failure": str(crash)})


async def test_a_hung_vm_counts_as_stopped_only_when_the_vim_reports_it_stopped(
        rig: Rig) -> None:
    hang = await rig.event(Kind.VM_HUNG, "vm/vm1")
    rig.fake.repair_gate.clear()  # the repair is under way until the gate opens
    ticket = rig.repair.repair_vm("vm1", requested_by="vnfm", failure=hang)
    assert ticket.job is not None
    stopped: list[bool] = []
    ticket.job.when_stopped(lambda: stopped.append(True))
    await until(lambda: len(rig.fake.posts("/v1/vms/")) == 1, "no repair asked")
    await rig.event(Kind.VM_STOPPED, "vm/vm2")  # another VM's
    assert stopped == []
    await rig.event(Kind.VM_STOPPED, "vm/vm1")
    assert stopped == [True]
    # A second ask (the hang, then a crash of the same VM) joins the one out.
    again = rig.repair.repair_vm("vm1", requested_by="vnfm", failure=hang)
    assert again.how == "joined" and again.job is ticket.job
    rig.fake.repair_gate.set()
    assert (await ticket.job.outcome()).ok
    assert len(rig.fake.posts("/v1/vms/")) == 1


async def test_the_vims_outcome_is_the_engines_even_a_failover_to_a_standby_vm(
        rig: Rig) -> None:
    rig.fake.repair_answer = lambda vm, failure: (200, {"ok": True, "host": "h1", "result": {
        "how": "started", "outcome": outcome(vm, failure, replacement="vm1-sb",
                                             stopped_first=True,
                                             action="failover-standby-vm")}})
    ticket = rig.repair.repair_vm("vm1", requested_by="vnfm")
    assert ticket.job is not None
    stopped: list[bool] = []
    ticket.job.when_stopped(lambda: stopped.append(True))
    done = await ticket.job.outcome()
    assert (done.action, done.replacement, done.stopped_first) == (
        "failover-standby-vm", "vm1-sb", True)
    assert stopped == [True]  # no vm.stopped seen: the VIM's answer says it was
    assert ticket.job.action == "failover-standby-vm"


@pytest.mark.parametrize(("answer", "ok", "says"), [
    ((409, {"detail": "VM vm1 is the standby of vm2"}), False, "standby of vm2"),
    ((200, {"ok": True, "host": "h1", "result": {
        "verdict": "repair-host", "reason": "3 VMs of h1 reported", "vms": ["vm1"]}}),
     True, "repair-host"),
    ((200, {"ok": True, "host": "h1", "result": {"how": "resolved", "outcome": None}}),
     True, "resolved"),
])
async def test_a_refusal_a_host_repair_or_nothing_to_do_settles_the_job(
        rig: Rig, answer: tuple[int, dict[str, Any]], ok: bool, says: str) -> None:
    rig.fake.repair_answer = lambda vm, failure: answer
    ticket = rig.repair.repair_vm("vm1", requested_by="vnfm", failure=7)
    assert ticket.job is not None
    done = await ticket.job.outcome()
    assert done.ok is ok and done.replacement == "vm1"
    assert says in (done.error or done.fallback or ""), done
    # Settled, the next ask is a new one.
    assert rig.repair.repair_vm("vm1", requested_by="vnfm").how == "started"


async def test_an_ask_the_vim_never_received_is_sent_again_one_it_received_is_not(
        rig: Rig) -> None:
    rig.fake.faults["/v1/vms/vm1/repair"] = ["refused", "refused"]
    ticket = rig.repair.repair_vm("vm1", requested_by="vnfm")
    assert ticket.job is not None and (await ticket.job.outcome()).ok
    assert len(rig.fake.posts("/v1/vms/vm1/repair")) == 1
    # Received, but its answer lost: the VIM may be repairing; not asked twice.
    rig.fake.faults["/v1/vms/vm1/repair"] = ["lost"]
    ticket = rig.repair.repair_vm("vm1", requested_by="vnfm")
    assert ticket.job is not None
    done = await ticket.job.outcome()
    assert not done.ok and "ReadError" in (done.error or "")
    assert len(rig.fake.posts("/v1/vms/vm1/repair")) == 2
