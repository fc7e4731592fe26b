"""``VnfAm``: one VNF's own availability manager over the VIM's public API (ADR 0008).

The engine is the generic VNFM's (``AvailabilityManager``), given only this VNF's components: the
same readiness rules, records and orders, the same SDK wire protocol for the VNF's
components (``--am``/``NFVHA_AM``). What differs is what is under it:

- repairs are asked of the VIM through its API (``ApiRepair``); the VIM applies the
  VNF's repair_action, correlates asks per host (UC-9) and never repairs twice;
- the VIM's events arrive by long poll (``EventFeed``); an agent's event about a VM
  from a host the VM has left (it was evacuated, ADR 0011) is not acted on;
- the assignment records are the VNF's own, in its own store.

At start, before following events, it reads the VIM's state once (list, then watch):
where the VMs run, the VM failures still awaiting a repair (their events are handed
to the engine, which asks for the repair), and VNFCs that exited while no AM ran
(started again). Events from then on are followed from the VIM's last event id.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

from nfvha.amf.config import AmfConfig
from nfvha.amf.manager import AvailabilityManager, VnfAvailability
from nfvha.amf.own.feed import EventFeed
from nfvha.amf.own.placement import VmPlacement
from nfvha.amf.own.repair import ApiRepair
from nfvha.amf.own.vim import VimClient, VimError
from nfvha.model.events import Kind, StoredEvent
from nfvha.model.settings import Settings
from nfvha.model.topology import Topology
from nfvha.store.assignments import AssignmentStore
from nfvha.util.clock import SYSTEM_CLOCK, Clock

log = logging.getLogger(__name__)
PENDING_REPAIR = ("awaiting-confirmation", "repair-failed")


class VnfAm:
    """``amf``: where the VNF's components find this AM, and their endpoints (exactly
    the VNF's components). ``repair``: by default over ``vim``. ``poll_wait_s``: one
    long poll's wait; ``retry_min_s``..``retry_max_s``: pauses while the VIM is away."""

    def __init__(self, topology: Topology, vnf: str, amf: AmfConfig, vim: VimClient,
                 store: AssignmentStore, settings: Settings | None = None,
                 clock: Clock = SYSTEM_CLOCK, *, repair: ApiRepair | None = None,
                 poll_wait_s: float = 10.0, retry_min_s: float = 0.05,
                 retry_max_s: float = 2.0) -> None:
        try:
            spec = topology.vnf(vnf)
        except KeyError:
            raise ValueError(f"no VNF named {vnf!r} in topology {topology.name!r}") from None
        if spec.vnfm == "generic":
            raise ValueError(f"VNF {vnf} is managed by the generic VNFM (vnfm: generic):"
                             " a second AM would fight it; set vnfm: own")
        mine, given = {c.name for c in spec.components}, {c.name for c in amf.components}
        if mine != given:
            raise ValueError(f"the AM of {vnf} needs the endpoints of exactly its components"
                             f" {sorted(mine)}, got {sorted(given)}")
        self.vnf = vnf
        self._vim = vim
        self._vms = {c.vm for c in spec.components}
        self.repair = repair or ApiRepair(vim, clock)
        self.manager = AvailabilityManager(topology, amf, store, self.repair,
                                           settings or topology.settings, clock)
        self.placement = VmPlacement(topology)
        self._poll_wait_s = poll_wait_s
        self._retry_min_s = retry_min_s
        self._retry_max_s = retry_max_s
        self.feed: EventFeed | None = None
        self.synced = asyncio.Event()
        """Set once the VIM's state has been read and events are followed."""
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen for the components at once; follow the VIM as soon as it answers."""
        await self.manager.start()
        self._task = asyncio.create_task(self._follow(), name=f"vnf-am-{self.vnf}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        await self.manager.close()

    def status(self) -> VnfAvailability:
        return self.manager.status()[0]

    # -- the VIM --------------------------------------------------------------------------
    async def _follow(self) -> None:
        delay = self._retry_min_s
        while True:
            try:
                after = await self._sync()
                break
            except VimError as e:
                if delay >= self._retry_max_s:  # the VIM starting is no news: only a long wait
                    log.warning("the VIM's state could not be read (%s); trying again", e)
            except (KeyError, TypeError, ValueError):  # an answer not as documented
                log.exception("the VIM's state could not be read; trying again")
            await asyncio.sleep(delay)
            delay = min(delay * 2, self._retry_max_s)
        self.feed = EventFeed(self._vim, self.on_events, after=after, wait_s=self._poll_wait_s,
                              retry_min_s=self._retry_min_s, retry_max_s=self._retry_max_s)
        self.synced.set()
        log.info("AM of %s: following the VIM's events after %d", self.vnf, after)
        await self.feed.run()

    async def _sync(self) -> int:
        """Read the VIM's state; returns the event id it is current to."""
        status = await self._vim.status()
        for vm, host in (await self._vim.placement()).items():
            self._placed(vm, host)
        pending: list[StoredEvent] = []
        for st in await self._vim.vm_repairs():
            failure = st.get("failure_event")
            if st["vm"] in self._vms and failure and st.get("state") in PENDING_REPAIR:
                pending += [ev for ev in await self._vim.events(failure - 1, limit=1)
                            if ev.id == failure]
        if pending:
            log.info("AM of %s: VM failures awaiting repair: %s", self.vnf,
                     [(ev.entity, ev.id) for ev in pending])
            self.on_events(pending)
        # Read after the event id above: whatever changed since is in the events after it.
        vms, vnfcs = await self._vim.vms(self.vnf), await self._vim.vnfcs(self.vnf)
        for vnfc in self._exited(vms, vnfcs):
            log.warning("AM of %s: VNFC %s exited while no AM ran: starting it", self.vnf,
                        vnfc["name"])
            try:
                await self.repair.restart_component(vnfc.get("host", ""), vnfc["name"])
            except VimError as e:
                log.error("AM of %s: VNFC %s could not be started: %s", self.vnf,
                          vnfc["name"], e)
        last: int = status["last_event_id"]
        return last

    def _exited(self, vms: list[dict[str, Any]], vnfcs: list[dict[str, Any]]
                ) -> list[dict[str, Any]]:
        running = {vm["name"] for vm in vms if vm.get("state") == "running"}
        return [c for c in vnfcs if c.get("vnf") == self.vnf
                and c.get("state") == "exited" and c.get("vm") in running]

    def on_events(self, events: Sequence[StoredEvent]) -> None:
        """The VIM's events, in id order (the feed's sink; callable directly when the
        VNF gets them some other way)."""
        current = []
        for ev in events:
            if ev.kind == Kind.VM_EVACUATED and not ev.details.get("error"):
                self._placed(ev.entity.partition("/")[2], str(ev.details.get("to", "")))
            if self.placement.is_current(ev):
                current.append(ev)
            else:
                log.info("ignoring event %d (%s %s from %s): the VM runs elsewhere now",
                         ev.id, ev.kind, ev.entity, ev.host)
        self.repair.on_events(current)
        self.manager.on_events(current)

    def _placed(self, vm: str, host: str) -> None:
        try:
            if self.placement.host_of(vm) == host:
                return
            self.placement.move(vm, host)
        except KeyError:
            return  # a VM or host this topology does not have
        if vm in self._vms:
            self.manager.vm_placed(vm, host)
