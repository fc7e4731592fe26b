"""What an agent (and its host supervisor) is told at boot: ``<host dir>/agent.json``."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field

from nfvha.model.settings import Settings, Strict
from nfvha.model.topology import Hypervisor


class VnfcLaunch(Strict):
    name: str
    argv: list[str]
    port: int


class VmLaunch(Strict):
    name: str
    cpu: float
    memory_mb: int
    # The VM's own network namespace, for a host whose driver gives it one (process);
    # None on the loopback fallback. A libvirt host ignores it (the guest's NIC is a
    # tap on the host namespace's br0) and creates no namespace, but the name stays in
    # the spec: the VIM may re-create the VM on a process host (ADR 0011).
    netns: str | None
    data_ip: str
    vnfcs: list[VnfcLaunch] = Field(default_factory=list)
    # Until its guest reports it is up, the VM is starting (not watched for hangs);
    # past this it is reported as failing to boot.
    boot_timeout_s: float = Field(60.0, gt=0, le=3600)
    # What the hypervisor does when the VM's watchdog runs out; None: no watchdog.
    watchdog_action: Literal["reset", "poweroff", "none"] | None = None


def launch_spec(args: dict[str, Any]) -> VmLaunch | None:
    """The ``spec`` argument of ``vm.start``: how to launch a VM this host may never
    have had (the VIM re-creates an evacuated VM here, ADR 0011)."""
    spec = args.get("spec")
    return None if spec is None else VmLaunch.model_validate(spec)


class ProcessLaunch(Strict):
    name: str
    argv: list[str]


class ControllerAddress(Strict):
    ip: str
    port: int  # TCP for the event stream, UDP for heartbeats


class AgentConfig(Strict):
    run_id: str
    host: str
    python: str
    controller_ip: str
    controller_port: int  # TCP for the event stream, UDP for heartbeats
    # A cluster's controllers (ADR 0013): the agent streams to the one that leads, the
    # host supervisor sends heartbeats to all. Empty: just controller_ip:controller_port.
    controllers: list[ControllerAddress] = Field(default_factory=list)
    # The host supervisor's UDP port (ADR 0015): heartbeats leave from it, and it
    # listens there on mgmt_ip (the director's probe requests) and on probe_ip (pings
    # from witness hosts, over the data network; None: mgmt_ip only).
    heartbeat_port: int
    mgmt_ip: str
    probe_ip: str | None = None
    settings: Settings = Field(default_factory=Settings)
    vms: list[VmLaunch] = Field(default_factory=list)
    processes: list[ProcessLaunch] = Field(default_factory=list)
    fabric: dict[str, Any] | None = None  # FabricPlan JSON; None on the loopback fallback
    links: list[str] = Field(default_factory=list)  # interfaces to watch
    cgroups: bool = True
    # What runs this host's VMs (the topology's host.hypervisor, ADR 0019).
    hypervisor: Hypervisor = "process"

    def controller_addresses(self) -> list[tuple[str, int]]:
        return [(c.ip, c.port) for c in self.controllers] or \
            [(self.controller_ip, self.controller_port)]

    def vm(self, name: str) -> VmLaunch:
        for v in self.vms:
            if v.name == name:
                return v
        raise KeyError(name)

    @classmethod
    def load(cls, path: Path) -> AgentConfig:
        return cls.model_validate_json(path.read_bytes())
