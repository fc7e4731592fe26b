"""``nfvha controller``: receives agent events, keeps host liveness, serves the API."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import uvicorn

from nfvha.api.app import create_app
from nfvha.controller.agents import AgentServer
from nfvha.controller.bus import EventBus
from nfvha.controller.config import ControllerConfig
from nfvha.controller.faults import FaultManagement
from nfvha.controller.health import HealthPublisher
from nfvha.controller.liveness import HostLiveness, PowerStatus
from nfvha.controller.view import InventoryView
from nfvha.controller.vnfm import AgentRepair, Vnfm
from nfvha.faults.manager import AlarmManager
from nfvha.faults.notifier import Notifier
from nfvha.faults.outbox import Outbox
from nfvha.faults.stream import AlarmStream
from nfvha.model.topology import Topology, load_topology
from nfvha.nfvi.cgroups import detect_cgroups
from nfvha.nfvi.fabric import FabricPlan
from nfvha.nfvi.power import LocalPowerDevice
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.assignments import SqliteAssignmentStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.util.clock import SYSTEM_CLOCK, Clock
from nfvha.util.runpaths import RunPaths

log = logging.getLogger("nfvha.controller")
# The API root subscribers are told about (links in notifications).
FM_API_ROOT_URL = "http://127.0.0.1:{port}/vnffm/v1"


class _ApiServer(uvicorn.Server):
    """uvicorn without its own signal handling: the controller owns SIGTERM/SIGINT."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def local_power_status(cfg: ControllerConfig) -> PowerStatus | None:
    """The fence devices' power status, for hosts that have one."""
    if cfg.fabric is None:
        return None
    plan = FabricPlan.from_json(cfg.fabric)
    run = RunPaths(cfg.run_id)
    cgroups = detect_cgroups()
    devices = {h.name: LocalPowerDevice(run, plan, h.name, cgroups)
               for h in cfg.hosts if h.fence == "local"}

    def status(host: str) -> Literal["on", "off"] | None:
        dev = devices.get(host)
        return None if dev is None else dev.status()

    return status


async def serve(cfg: ControllerConfig, topology: Topology, clock: Clock = SYSTEM_CLOCK,
                stop: asyncio.Event | None = None) -> None:
    store = SqliteEventStore(cfg.db_path, fsync=cfg.db_fsync)
    bus = EventBus(store, clock)
    alarm_store = SqliteAlarmStore(cfg.db_path, fsync=cfg.db_fsync)
    ager = SqliteAlarmStore(cfg.db_path, fsync=cfg.db_fsync)
    faults = FaultManagement(AlarmManager(topology, alarm_store, clock, cfg.settings),
                             ager, cfg.settings, clock)
    bus.subscribe(faults.on_events)
    outbox = Outbox(cfg.db_path.with_name("notifications.db"), fsync=cfg.db_fsync)
    notifier = Notifier(outbox, clock)
    await notifier.start()
    stream = AlarmStream()
    fm_root = FM_API_ROOT_URL.format(port=cfg.api_port)
    faults.notify_through(notifier, stream, fm_root)
    faults.replay(store)
    liveness = HostLiveness([h.name for h in cfg.hosts], cfg.settings, clock,
                            local_power_status(cfg))
    agents = AgentServer((cfg.listen_ip, cfg.port), bus, liveness, clock,
                         tick_s=cfg.settings.host_heartbeat_interval_ms / 4000)
    await agents.start()
    vnfm: Vnfm | None = None
    amf_store: SqliteAssignmentStore | None = None
    if cfg.amf is not None:
        amf_store = SqliteAssignmentStore(cfg.db_path.with_name("amf.db"), fsync=cfg.db_fsync)
        vnfm = Vnfm(topology, cfg.amf, amf_store, AgentRepair(agents), cfg.settings, clock)
        bus.subscribe(vnfm.on_events)
        await vnfm.start()
    view = InventoryView(topology, agents, liveness, clock)
    health = HealthPublisher(topology.host_names(), liveness, faults.alarms, notifier, stream,
                             fm_root, clock)
    faults.add_sink(health.on_changes)
    app = create_app(cfg.run_id, topology, view, bus, agents, faults.alarms, notifier, stream,
                     fm_root, cfg.auth, clock, health, vnfm)
    fm_task = asyncio.create_task(faults.run(), name="fault-management")
    health_task = asyncio.create_task(health.run(), name="host-health")
    server = _ApiServer(uvicorn.Config(app, host=cfg.api_host, port=cfg.api_port,
                                           log_level="warning", lifespan="off"))
    stop = stop or asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    api = asyncio.create_task(server.serve())
    log.info("controller %s: agents on %s:%d, API on http://%s:%d", cfg.run_id,
             cfg.listen_ip, cfg.port, cfg.api_host, cfg.api_port)
    await stop.wait()
    server.should_exit = True
    await api
    if vnfm is not None:
        await vnfm.close()
    await agents.close()
    bus.close()
    fm_task.cancel()
    health_task.cancel()
    await notifier.close()
    outbox.close()
    alarm_store.close()
    ager.close()
    store.close()
    if amf_store is not None:
        amf_store.close()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="nfvha controller")
    p.add_argument("--config", type=Path, required=True)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s controller %(levelname)s %(name)s: %(message)s")
    cfg = ControllerConfig.load(args.config)
    topology = load_topology(cfg.topology_file) if cfg.topology_file else None
    if topology is None:
        raise SystemExit("controller: topology_file is required")
    asyncio.run(serve(cfg, topology))
    return 0


if __name__ == "__main__":
    sys.exit(main())
