"""``nfvha controller``: the VIM process - agent event streams, fault management,
VM and host repair, the API. Host liveness and the availability manager run in the
HA director beside it (``nfvha director``, ADR 0014), reached over ``DirectorLink``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

from nfvha.api.app import create_app
from nfvha.controller.agentrepair import AgentRepair
from nfvha.controller.agents import AgentServer
from nfvha.controller.bus import EventBus
from nfvha.controller.cluster import ClusterController, TermContext, gate_fencing
from nfvha.controller.config import ControllerConfig
from nfvha.controller.controlplane import ControlPlaneAlarms
from nfvha.controller.directorlink import DirectorLink, TermWork, director_socket
from nfvha.controller.faults import FaultManagement
from nfvha.controller.fencing import build_fencing
from nfvha.controller.health import HealthPublisher
from nfvha.controller.hostrepair import HostRepair
from nfvha.controller.hoststates import HostStates
from nfvha.controller.httpserver import QuietServer, server_config
from nfvha.controller.placement import PLACEMENT_FILE, Placement
from nfvha.controller.stores import open_stores
from nfvha.controller.view import InventoryView
from nfvha.controller.vmrepair import VmRepairPolicy
from nfvha.faults.manager import AlarmManager
from nfvha.faults.notifier import Notifier
from nfvha.faults.stream import AlarmStream
from nfvha.model.events import StoredEvent
from nfvha.model.topology import Topology, load_topology
from nfvha.store.tokens import TokenCheck
from nfvha.util.clock import SYSTEM_CLOCK, Clock
from nfvha.util.gcfreeze import freeze_long_lived
from nfvha.util.logs import setup_logging

log = logging.getLogger("nfvha.controller")
# The API root subscribers are told about (links in notifications).
FM_API_ROOT_URL = "http://127.0.0.1:{port}/vnffm/v1"


def up_hosts(liveness: HostStates, agents: AgentServer) -> Callable[[], list[str]]:
    """Hosts a VM can be re-created on: up, with their agent connected."""
    def hosts() -> list[str]:
        return [h for h in agents.sessions if liveness.up(h)]

    return hosts


async def serve(cfg: ControllerConfig, topology: Topology, clock: Clock = SYSTEM_CLOCK,
                stop: asyncio.Event | None = None, term: TermContext | None = None) -> None:
    """The controller's work. ``term``: one leader term of a cluster member (ADR 0013):
    every action is gated on the term and carries its epoch; ``stop`` ends it.
    Whatever was started is closed again, also when starting fails half-way (a member
    runs this once per term: nothing may stay bound or open)."""
    async with contextlib.AsyncExitStack() as done:
        link = term.link if term is not None else None
        if link is None:  # a single controller: its own link to its director
            link = DirectorLink(director_socket(cfg), cfg.run_id,
                                HostStates([h.name for h in cfg.hosts], clock), clock)
            link.start()
            done.push_async_callback(link.close)
        await _serve(cfg, topology, clock, stop, term, done, link)


async def _serve(cfg: ControllerConfig, topology: Topology, clock: Clock,
                 stop: asyncio.Event | None, term: TermContext | None,
                 done: contextlib.AsyncExitStack, link: DirectorLink) -> None:
    # Closed in the reverse order of these registrations (the deciders first, then the
    # API drains, then the stores).
    # Embedded SQLite, or PostgreSQL and etcd (ADR 0012).
    stores = term.open_stores() if term is not None else open_stores(cfg, clock)
    done.callback(stores.close)
    store, alarm_store, ager = stores.events, stores.alarms, stores.ager
    bus = EventBus(store, clock)
    faults = FaultManagement(AlarmManager(topology, alarm_store, clock, cfg.settings),
                             ager, cfg.settings, clock)
    bus.subscribe(faults.on_events)
    notifier = Notifier(stores.outbox, clock)
    done.push_async_callback(notifier.close)
    await notifier.start()
    done.callback(bus.close)
    stream = AlarmStream()
    # Subscribers are sent the address every member answers on (a cluster's front).
    fm_root = FM_API_ROOT_URL.format(
        port=cfg.cluster.front_port if cfg.cluster is not None else cfg.api_port)
    faults.notify_through(notifier, stream, fm_root)
    faults.replay(store)
    fencing = build_fencing(cfg, clock)
    done.push_async_callback(fencing.close)
    if term is not None:
        gate_fencing(fencing, term.gate)
    api: list[tuple[QuietServer, asyncio.Task[None]]] = []

    async def stop_api() -> None:
        for server, task in api:
            server.should_exit = True
            await task

    done.push_async_callback(stop_api)
    liveness = link.hosts  # the director's host states, mirrored
    agents = AgentServer((cfg.listen_ip, cfg.port), bus, liveness, clock,
                         gate=term.gate if term is not None else None,
                         command_queue_timeout_s=cfg.settings.agent_command_queue_timeout_s)
    done.push_async_callback(agents.close)
    await agents.start()
    placement = Placement(topology, cfg.db_path.with_name(PLACEMENT_FILE))
    host_repair = HostRepair(topology, cfg.settings, clock, fencing, placement, agents,
                             up_hosts(liveness, agents), bus.publish,
                             {v.name: v for v in cfg.vm_launch})
    bus.subscribe(host_repair.on_events)
    vm_repair = VmRepairPolicy(topology, agents, bus.publish, clock, host_of=placement.host_of,
                               host_up=lambda h: liveness.up(h) and h in agents.sessions,
                               snapshot_interval_s=cfg.settings.vm_snapshot_interval_s)

    host_repair.use_cold_standby_check(lambda vm: vm_repair.status_of(vm).role == "standby")

    def vm_failures(evs: Sequence[StoredEvent]) -> None:
        vm_repair.on_events([e for e in evs if placement.is_current(e)])

    # Subscribed before the director's forwarding: a VM's failure reaches the policy
    # first (ADR 0010).
    bus.subscribe(vm_failures)
    health = HealthPublisher(topology.host_names(), liveness, faults.alarms, notifier, stream,
                             fm_root, clock)
    faults.add_sink(health.on_changes)
    # The availability manager runs in the HA director (ADR 0014): it is sent the stored
    # events it acts on - without stale ones from a host a VM has left (ADR 0011) - and
    # its repairs are carried out here.
    link.attach(TermWork(bus, placement.is_current, AgentRepair(agents, vm_repair=vm_repair),
                         vm_repair.repair_vm, host_repair.vnfm_hook,
                         host_state_settled=health.on_host_state))
    done.callback(link.detach)
    host_repair.on_placed(link.placed)
    view = InventoryView(topology, agents, liveness, clock, placement.host_of,
                         link.heartbeat_ages)
    app = create_app(cfg.run_id, topology, view, bus, agents, faults.alarms, notifier, stream,
                     fm_root, cfg.auth, clock, health, _am_status(link), host_repair,
                     vm_repair=vm_repair,
                     tokens=None if stores.tokens is None
                     else TokenCheck(stores.tokens, cfg.auth.tokens, clock), limits=cfg.api)
    tasks = [asyncio.create_task(faults.run(), name="fault-management"),
             asyncio.create_task(vm_repair.run(), name="vm-repair")]
    if term is not None:  # the control plane's alarms: the leader's alone (FM-2)
        tasks.append(asyncio.create_task(ControlPlaneAlarms(
            term.member, term.watched, faults.alarms, bus.publish, clock,
            term.gate.is_leader).run(), name="control-plane-alarms"))
    for task in tasks:
        done.callback(task.cancel)
    api_host, api_port = cfg.api_listen()
    server = QuietServer(server_config(app, api_host, api_port, cfg.api,
                                       timeout_graceful_shutdown=2))
    stop = stop or asyncio.Event()
    if term is None:  # a cluster member's process owns its signals (serve_cluster)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
    api.append((server, asyncio.create_task(server.serve())))
    log.info("controller %s: agents on %s:%d, API on http://%s:%d%s", cfg.run_id,
             cfg.listen_ip, cfg.port, api_host, api_port,
             "" if cfg.api_internal_port is None
             else f" (its front on http://{cfg.api_host}:{cfg.api_port})")
    if term is not None:
        term.ready()
    freeze_long_lived()  # what is built so far lives as long as the process
    await stop.wait()


def _am_status(link: DirectorLink) -> Callable[[], Awaitable[list[dict[str, Any]]]]:
    async def status() -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = await link.query("availability")
        return found

    return status


async def serve_cluster(cfg: ControllerConfig, topology: Topology,
                        clock: Clock = SYSTEM_CLOCK, stop: asyncio.Event | None = None) -> None:
    """One of N controllers (ADR 0013): the front API always, ``serve``'s work while
    this one leads, a term at a time."""
    async def lead(term: TermContext, term_stop: asyncio.Event) -> None:
        await serve(cfg, topology, clock, stop=term_stop, term=term)

    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await ClusterController(cfg, lead, clock).run(stop)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nfvha controller")
    p.add_argument("--config", type=Path, required=True)
    args = p.parse_args(argv)
    setup_logging("controller")
    cfg = ControllerConfig.load(args.config)
    topology = load_topology(cfg.topology_file) if cfg.topology_file else None
    if topology is None:
        raise SystemExit("controller: topology_file is required")
    asyncio.run(serve_cluster(cfg, topology) if cfg.cluster is not None
                else serve(cfg, topology))
    return 0


if __name__ == "__main__":
    sys.exit(main())
