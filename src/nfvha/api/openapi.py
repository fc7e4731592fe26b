"""The controller's OpenAPI document, built from the real app without running it
(committed as ``docs/openapi.json``; a test keeps the two equal)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

from nfvha.api.app import create_app
from nfvha.controller.agents import AgentServer
from nfvha.controller.bus import EventBus
from nfvha.controller.hoststates import HostStates
from nfvha.controller.view import InventoryView
from nfvha.faults.manager import AlarmManager
from nfvha.faults.notifier import Notifier
from nfvha.faults.outbox import Outbox
from nfvha.faults.stream import AlarmStream
from nfvha.model.auth import AuthConfig
from nfvha.model.topology import default_topology_path, load_topology
from nfvha.store.alarms import SqliteAlarmStore
from nfvha.store.sqlite import SqliteEventStore
from nfvha.util.clock import SYSTEM_CLOCK


def openapi_document() -> dict[str, Any]:
    topology = load_topology(default_topology_path())
    with tempfile.TemporaryDirectory(prefix="nfvha-openapi-") as tmp:
        db = Path(tmp) / "events.db"
        store, alarm_store = SqliteEventStore(db), SqliteAlarmStore(db)
        outbox = Outbox(Path(tmp) / "notifications.db")
        try:
            bus = EventBus(store, SYSTEM_CLOCK)
            liveness = HostStates(topology.host_names(), SYSTEM_CLOCK)
            agents = AgentServer(("127.0.0.1", 0), bus, liveness, SYSTEM_CLOCK)
            app = create_app(
                "-----", topology, InventoryView(topology, agents, liveness, SYSTEM_CLOCK), bus,
                agents, AlarmManager(topology, alarm_store, SYSTEM_CLOCK, topology.settings),
                Notifier(outbox, SYSTEM_CLOCK), AlarmStream(), "/vnffm/v1", AuthConfig())
            return app.openapi()
        finally:
            outbox.close()
            alarm_store.close()
            store.close()


def main() -> int:
    print(json.dumps(openapi_document(), indent=1, sort_keys=True))
    return 0
