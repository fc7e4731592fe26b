"""Deploy a topology on the local NFVI: fabric, controller, hosts, VMs, VNFCs.

``Testbed.start()`` is what ``nfvha up``, the integration tests and the
benchmarks share. Everything it creates is named ``nfvha-<run>`` and listed in
``<run dir>/run.json`` so that ``nfvha down`` can remove it even after a crash.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from nfvha.agent.config import AgentConfig, ProcessLaunch, VmLaunch, VnfcLaunch
from nfvha.amf.own.config import VnfAmConfig
from nfvha.controller.config import AmfConfig, ComponentEndpoint, ControllerConfig, HostEntry
from nfvha.model.auth import AuthConfig, TokenEntry, new_token, token_hash
from nfvha.model.topology import ComponentSpec, FenceSpec, Topology, VnfSpec
from nfvha.nfvi.cgroups import CgroupDriver, cgroup_procs_paths, detect_cgroups
from nfvha.nfvi.cleanup import RUN_MARKER, teardown_run
from nfvha.nfvi.fabric import FabricPlan, create_fabric, plan_fabric
from nfvha.nfvi.power import (
    controller_cgroup,
    director_cgroup,
    front_cgroup,
    host_cgroup,
    host_system_cgroup,
    save_boot_spec,
)
from nfvha.nfvi.spawn import Spawned, spawn_detached_sync
from nfvha.testbed.apiclient import get_all
from nfvha.testbed.hypervisors import hypervisor_problems
from nfvha.util.files import atomic_write_json, read_json
from nfvha.util.procs import is_same_process
from nfvha.util.runpaths import RunPaths, new_run_id, run_root

CONTROLLER_PORT = 7700
HEARTBEAT_PORT = 7701
AMF_PORT = 7702  # the generic VNFM, for the components' SDK connections
VNF_AM_PORT_BASE = 7710  # + k: the own AM of the k-th VNF with vnfm: own (ADR 0008)
# IF-2: a load balancer's retry helps a client only before the client gives up (the
# scenario probe: 20 ms), so it is shorter than the LB's default (its health-check
# detection time, 30 ms). A member merely slow past it is excluded until its next
# health-check answer; the VNFM restarts it only if it stopped answering the VNFM too.
LB_REQUEST_TIMEOUT_MS = 15
# The HA director's share of the CPU beside the run's other cgroups when all want one
# (cgroup v2 weight; 100 is everyone else's): it uses a few % of a core, but must have
# one the moment it wakes. Sharing the controller's cgroup, it waited for a CPU 32 % of
# a flood of the API (its lease grants up to 122 ms late); in a cgroup of its own with
# this weight 7 % (24 ms): ``nfvha bench abuse``.
DIRECTOR_CPU_WEIGHT = 1000
# The API front's share (ADR 0014 "The API front"): bulk work - parsing whatever the
# clients send, refusing what is too much - that may wait whenever the controller, its
# director, the hosts or the VNFs want a CPU. It gets one when they leave it one.
FRONT_CPU_WEIGHT = 10
# A host's share (its supervisor, agent and VMs together): a host of the test bed stands
# for a machine of its own, whose VNFs do not wait for the control plane's bulk work.
# Three times the controller's: under a flood of the API the 2N VNF's components waited
# for a CPU 13-22 % of the time at the default weight, and a probe request timed out.
# Each VM's own CPU limit (cpu.max) still caps what a host's VMs take.
HOST_CPU_WEIGHT = 300


class TestbedError(RuntimeError):
    pass


def _still_runs(pidfile: Path) -> bool:
    """Whether the process recorded in ``pidfile`` (``spawn_detached_sync``'s) runs."""
    with contextlib.suppress(FileNotFoundError, ValueError, KeyError, TypeError):
        rec = read_json(pidfile)
        return is_same_process(int(rec["pid"]), int(rec["start_ticks"]))
    return False


def namespaces_available() -> tuple[bool, str]:
    """Whether the real (namespaced) test bed can run here, and why not."""
    if os.environ.get("NFVHA_LOOPBACK") == "1":
        return False, "NFVHA_LOOPBACK=1 is set"
    if os.geteuid() != 0:
        return False, "not running as root: no network namespaces or cgroups"
    if shutil.which("ip") is None:
        return False, "iproute2 ('ip') is not installed"
    if not Path("/run/netns").exists() and not os.access("/run", os.W_OK):
        return False, "/run/netns is not usable"
    return True, ""


def free_tcp_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RunInfo:
    """What ``run.json`` says about a run."""

    run_id: str
    api_url: str
    mode: str
    topology_file: Path
    plan: FabricPlan | None
    owner_pid: int
    tokens: dict[str, str]

    @classmethod
    def load(cls, run: RunPaths) -> RunInfo:
        d = read_json(run.run_file)
        try:
            tokens = read_json(run.controller_dir / "tokens.json")
        except (FileNotFoundError, PermissionError, ValueError):
            tokens = {}
        return cls(
            run_id=d["run_id"], api_url=d["api_url"], mode=d["mode"],
            topology_file=Path(d["topology_file"]),
            plan=FabricPlan.from_json(d["plan"]) if d.get("plan") else None,
            owner_pid=int(d["owner_pid"]), tokens=dict(tokens),
        )

    @property
    def headers(self) -> dict[str, str]:
        token = self.tokens.get("admin") or self.tokens.get("operator") \
            or self.tokens.get("reader")
        return {"Authorization": f"Bearer {token}"} if token else {}


def run_owner_alive(run_id: str) -> bool:
    """Whether the process that started the run (``nfvha up``, a test) still runs."""
    try:
        owner = int(read_json(RunPaths(run_id).run_file)["owner_pid"])
    except (FileNotFoundError, KeyError, ValueError, TypeError):
        return False
    if owner == os.getpid():
        return False
    try:
        os.kill(owner, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def find_active_run(run_id: str | None = None) -> RunPaths:
    """The run named, or the newest run on this machine."""
    if run_id is not None:
        run = RunPaths(run_id)
        if not run.run_file.exists():
            raise TestbedError(f"no run '{run_id}' ({run.run_file} not found)")
        return run
    candidates = sorted(run_root().glob("nfvha-?????/run.json"), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise TestbedError("no nfvha run found on this machine; start one with 'nfvha up'")
    return RunPaths(candidates[-1].parent.name.removeprefix("nfvha-"))


class Testbed:
    __test__ = False  # not a pytest test class, despite the name

    def __init__(self, topology: Topology, *, run_id: str | None = None,
                 python: str | None = None, api_port: int | None = None) -> None:
        self.topology = topology
        self.run = RunPaths(run_id or new_run_id())
        self.python = python or sys.executable
        ok, why = namespaces_available()
        self.namespaced = ok
        self.fallback_reason = why
        self.api_port = api_port or free_tcp_port()
        self.api_url = f"http://127.0.0.1:{self.api_port}"
        self.plan: FabricPlan | None = None
        self.cgroups: CgroupDriver | None = detect_cgroups() if ok else None
        self.pids: list[dict[str, int]] = []
        self.tokens = {role: new_token() for role in ("admin", "operator", "reader")}
        self.amf_port = 0
        self.own_ams: dict[str, AmfConfig] = {}  # VNF -> its own AM's (vnfm: own)
        # id(AM config) -> (it, its endpoints by component name)
        self._endpoints: dict[int, tuple[AmfConfig, dict[str, ComponentEndpoint]]] = {}

    @property
    def headers(self) -> dict[str, str]:
        """What an administrator's client sends."""
        return {"Authorization": f"Bearer {self.tokens['admin']}"}

    # -- configuration ---------------------------------------------------------
    def _addresses(self) -> tuple[str, dict[str, tuple[str, int]], dict[str, str]]:
        """controller ip, host -> (mgmt ip, heartbeat port), vm -> data ip."""
        t = self.topology
        if self.plan is not None:
            hosts = {h.name: (h.mgmt_ip, HEARTBEAT_PORT) for h in self.plan.hosts}
            vms = {v.name: v.data_ip for v in self.plan.vms}
            return self.plan.controller_ip, hosts, vms
        hosts = {h: ("127.0.0.1", free_tcp_port()) for h in t.host_names()}
        return "127.0.0.1", hosts, {v.name: "127.0.0.1" for v in t.vms}

    def _vnfc_port(self, vm_index: int, port: int) -> int:
        # On loopback every VM shares one address, so ports are spread per VM.
        return port if self.plan is not None else port + 10 * vm_index

    def _amf_config(self, vm_ips: dict[str, str]) -> AmfConfig:
        t = self.topology
        self.amf_port = AMF_PORT if self.plan is not None else free_tcp_port()
        endpoints: dict[str, list[ComponentEndpoint]] = {}
        for vnf, c in t.components():
            port = self._vnfc_port(t.vm_position(c.vm), c.port)
            endpoints.setdefault(vnf.name, []).append(ComponentEndpoint(
                name=c.name, vnf=vnf.name, vm=c.vm, host=t.vm(c.vm).host,
                address=vm_ips[c.vm], port=port, sync_port=port + 1))
        components = [e for v in t.vnfs if v.vnfm == "generic" for e in endpoints[v.name]]
        vips: dict[str, str] = {}
        if self.plan is not None:
            addressed = [v for v in t.vnfs if v.service_address is not None]
            for k, v in enumerate(addressed):
                assert v.service_address is not None
                if v.service_address.kind == "vip":
                    ip = v.service_address.address or self.plan.vips[k]
                    vips[v.name] = f"{ip}/{self.plan.prefixlen}"
        listen = self.plan.root_data_ip if self.plan is not None else "127.0.0.1"
        # Reports about members go to the VNFM only if it manages both sides.
        balancers = {v.name: v.balances for v in t.vnfs if v.balances is not None
                     and v.vnfm == "generic" and t.vnf(v.balances).vnfm == "generic"}
        # A VNF's own AM listens beside the controller, for that VNF's components only.
        self.own_ams = {v.name: AmfConfig(
            listen_ip=listen, components=endpoints[v.name],
            port=VNF_AM_PORT_BASE + k if self.plan is not None else free_tcp_port(),
            vips={v.name: vips[v.name]} if v.name in vips else {})
            for k, v in enumerate(x for x in t.vnfs if x.vnfm == "own")}
        return AmfConfig(listen_ip=listen, port=self.amf_port, components=components,
                         vips=vips, balancers=balancers)

    def _endpoint(self, amf: AmfConfig, component: str) -> ComponentEndpoint:
        """``component``'s endpoint in ``amf``, by name (indexed once per AM config)."""
        known = self._endpoints.get(id(amf))
        if known is None or known[0] is not amf:
            known = (amf, {c.name: c for c in reversed(amf.components)})  # the first wins
            self._endpoints[id(amf)] = known
        return known[1][component]

    def _ha_args(self, amf: AmfConfig, state: str, component: str) -> list[str]:
        """The counter's availability-management flags: it registers with the VNFM."""
        ep = self._endpoint(amf, component)
        args = ["--am", f"{amf.listen_ip}:{amf.port}", "--component", component,
                "--state", state]
        return [*args, "--sync-port", str(ep.sync_port)] if state == "sync" else args

    def _vnfc_argv(self, vnf: VnfSpec, c: ComponentSpec, amf: AmfConfig,
                   vm_ips: dict[str, str]) -> list[str]:
        """How a VNFC is started: the counter, or (program ``lb``, IF-2) the load
        balancer in front of the members of the VNF its VNF balances."""
        t = self.topology
        port = self._vnfc_port(t.vm_position(c.vm), c.port)
        bind = "0.0.0.0" if self.plan is not None else "127.0.0.1"
        am = amf if vnf.vnfm == "generic" else self.own_ams.get(vnf.name)
        if c.program == "counter":
            return [self.python, "-m", "nfvha.samples.counter", "--name", c.name,
                    "--port", str(port), "--bind", bind,
                    *(self._ha_args(am, vnf.state, c.name) if am is not None else []),
                    *(["--watchdog-ms", str(c.watchdog_ms)] if c.watchdog_ms else [])]
        assert vnf.balances is not None  # the topology check: lb only in a balancer VNF
        members = [f"{m.name}={vm_ips[m.vm]}:{self._vnfc_port(t.vm_position(m.vm), m.port)}"
                   for m in t.vnf(vnf.balances).components]
        # A member without the active role answers GET with "ERR not-active": not
        # eligible (N+M spares), without counting as a failure. A request is retried on
        # another member after LB_REQUEST_TIMEOUT_MS, within the probe's own timeout.
        return [self.python, "-m", "nfvha.samples.lb", "--name", c.name, "--port", str(port),
                "--bind", bind, *(f"--member={m}" for m in members),
                "--check-request", "GET lb-check",
                "--request-timeout-ms", str(LB_REQUEST_TIMEOUT_MS),
                *(["--am", f"{am.listen_ip}:{am.port}", "--component", c.name]
                  if am is not None else [])]

    def component_address(self, component: str) -> tuple[str, int]:
        """Where a VNFC serves, as seen from the root namespace."""
        t = self.topology
        c = t.component(component)[1]
        ip = self.plan.vm(c.vm).data_ip if self.plan is not None else "127.0.0.1"
        return ip, self._vnfc_port(t.vm_position(c.vm), c.port)

    def vip(self, vnf: str) -> tuple[str, int] | None:
        """A VNF's service address (VIP and port), if it has one on this test bed."""
        spec = next(v for v in self.topology.vnfs if v.name == vnf)
        info = read_json(self.run.controller_dir / "controller.json")
        cidr = (info.get("amf") or {}).get("vips", {}).get(vnf)
        if cidr is None or spec.service_address is None:
            return None
        return cidr.split("/")[0], spec.service_address.port

    def _fence(self, host: str) -> FenceSpec:
        """The host's fence device as the topology says; none on the loopback fallback
        (no power to cut). ``fence_nfvha`` drives this run's power devices."""
        if self.plan is None:
            return FenceSpec(type="none")
        return self.topology.host(host).fence

    def write_configs(self) -> tuple[ControllerConfig, dict[str, AgentConfig]]:
        """Every process's configuration, in time linear in hosts + VMs + VNFCs (but
        (ADR 0015: no peer lists any more)."""
        t, run = self.topology, self.run
        controller_ip, hosts, vm_ips = self._addresses()
        controller_port = CONTROLLER_PORT if self.plan is not None else free_tcp_port()
        settings = t.settings
        plan_json = self.plan.to_json() if self.plan is not None else None
        agents: dict[str, AgentConfig] = {}
        amf = self._amf_config(vm_ips)
        # Where witnesses ping a host (ADR 0015): its data address, another path than
        # the management network its heartbeats take.
        probe_ips = {h.name: h.data_ip for h in self.plan.hosts} if self.plan is not None \
            else dict.fromkeys(hosts, "127.0.0.1")
        for host in t.host_names():
            vms = []
            for vm in t.vms_on(host):
                # A standby VM (ADR 0010) is launched with the VNFCs of the VM it stands
                # by for, exactly as they run there.
                runs = vm.standby_for or vm.name
                idx = t.vm_position(runs)
                vnfcs = [
                    VnfcLaunch(name=c.name, port=self._vnfc_port(idx, c.port),
                               argv=self._vnfc_argv(vnf, c, amf, vm_ips))
                    for vnf, c in t.components_on(runs)
                ]
                vms.append(VmLaunch(name=vm.name, cpu=vm.cpu, memory_mb=vm.memory_mb,
                                    netns=run.vm_netns(vm.name) if self.plan else None,
                                    data_ip=vm_ips[vm.name], vnfcs=vnfcs,
                                    boot_timeout_s=vm.boot_timeout_s,
                                    watchdog_action=vm.watchdog.action
                                    if vm.watchdog is not None else None))
            mgmt_ip, hb_port = hosts[host]
            hspec = t.host(host)
            host_ip = self.plan.host(host).data_ip if self.plan is not None else "127.0.0.1"
            procs = [
                ProcessLaunch(name=p.name, argv=[
                    self.python, "-m", "nfvha.samples.vswitch", "--name", f"{host}-{p.name}",
                    "--port", str(p.port if self.plan else free_tcp_port()),
                    "--bind", host_ip,
                ])
                for p in hspec.processes
            ]
            agents[host] = AgentConfig(
                run_id=run.run_id, host=host, python=self.python,
                controller_ip=controller_ip, controller_port=controller_port,
                heartbeat_port=hb_port, mgmt_ip=mgmt_ip, probe_ip=probe_ips[host],
                settings=settings, vms=vms, processes=procs, fabric=plan_json,
                links=["mgmt0", "data0"] if self.plan is not None else [],
                cgroups=self.cgroups is not None, hypervisor=hspec.hypervisor,
            )
        trusted = ["127.0.0.0/8"] + ([self.plan.mgmt_subnet] if self.plan is not None else [])
        auth = AuthConfig(
            tokens=[TokenEntry(sha256=token_hash(t), role=r, name=f"{r} of run {run.run_id}")
                    for r, t in self.tokens.items()],
            intake_trusted_networks=trusted)
        ctl = ControllerConfig(
            auth=auth,
            run_id=run.run_id, listen_ip=controller_ip, port=controller_port,
            api_port=self.api_port, api_internal_port=free_tcp_port(),
            db_path=run.controller_dir / "events.db",
            hosts=[HostEntry(name=h.name, fence=self._fence(h.name),
                             rack=f"{site.name}/{rack.name}", mgmt_ip=hosts[h.name][0],
                             probe_ip=probe_ips[h.name], probe_port=hosts[h.name][1])
                   for site, rack, h in t.hosts()],
            settings=settings, fabric=plan_json, topology_file=run.topology_file,
            amf=amf, vm_launch=[v for a in agents.values() for v in a.vms],
        )
        run.controller_dir.mkdir(parents=True, exist_ok=True)
        (run.controller_dir / "controller.json").write_text(ctl.model_dump_json(indent=1))
        # The tokens themselves are shown once, to root only.
        tokens_file = run.controller_dir / "tokens.json"
        fd = os.open(tokens_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(self.tokens, f, indent=1)
        for host, cfg in agents.items():
            d = run.host_dir(host)
            (d / "exits").mkdir(parents=True, exist_ok=True)
            (d / "agent.json").write_text(cfg.model_dump_json(indent=1))
        self._write_own_am_configs()
        return ctl, agents

    def own_am_dir(self, vnf: str) -> Path:
        return self.run.root / "vnfam" / vnf

    def _write_own_am_configs(self) -> None:
        """Per VNF with vnfm: own, its AM's config, an operator token (repairs are
        writes) and its own database (ADR 0008)."""
        for vnf, amf in self.own_ams.items():
            d = self.own_am_dir(vnf)
            d.mkdir(parents=True, exist_ok=True)
            token = d / "token"
            fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(self.tokens["operator"])
            cfg = VnfAmConfig(vnf=vnf, vim_url=self.api_url, token_file=token,
                              topology_file=self.run.topology_file, db_path=d / "am.db",
                              amf=amf)
            (d / "vnf-am.json").write_text(cfg.model_dump_json(indent=1))

    def _write_run_file(self) -> None:
        atomic_write_json(self.run.run_file, {
            "run_id": self.run.run_id, "api_url": self.api_url,
            "mode": "netns" if self.plan is not None else "loopback",
            "topology_file": str(self.run.topology_file),
            "plan": self.plan.to_json() if self.plan is not None else None,
            "owner_pid": os.getpid(), "pids": self.pids, "created": time.time(),
        })

    # -- start -----------------------------------------------------------------
    def hypervisor_problems(self) -> list[str]:
        """Why this machine cannot run the topology's hypervisors (libvirt hosts)."""
        return hypervisor_problems(self.topology, namespaced=self.namespaced,
                                   why_not=self.fallback_reason)

    def start_infrastructure(self) -> None:
        """Fabric, controller and hosts (their supervisors and agents)."""
        t, run = self.topology, self.run
        problems = self.hypervisor_problems()
        if problems:  # before anything exists: nothing to clean up
            raise TestbedError("cannot start this topology here:\n"
                               + "\n".join(f"  {p}" for p in problems))
        run.root.mkdir(parents=True, exist_ok=False)
        run.topology_file.write_text(yaml.safe_dump(t.model_dump(mode="json"), sort_keys=False))
        if self.namespaced:
            self.plan = plan_fabric(run.run_id, t.host_names(),
                                    [(v.name, v.host) for v in t.vms],
                                    n_vips=sum(1 for v in t.vnfs if v.service_address))
        self._write_run_file()  # before creating anything, so 'down' finds it
        if self.plan is not None:
            create_fabric(self.plan)
        self.write_configs()
        env = {**os.environ, RUN_MARKER: run.run_id}
        self.start_controller(env)
        for vnf in self.own_ams:
            self.start_own_am(vnf, env)
        for host in t.host_names():
            self.boot_host(host, env)
        self._write_run_file()

    def start_controller(self, env: dict[str, str] | None = None) -> None:
        """Start (or restart, after a crash) the controller with the run's config, and
        its HA director and its API front unless they still run (they outlive the
        controller, ADR 0014)."""
        d = self.run.controller_dir
        self.start_director(d / "controller.json", d / "director.log", d / "director.pid",
                            env)
        self.spawn_control(["nfvha.controller.main", "--config", str(d / "controller.json")],
                           d / "controller.log", d / "controller.pid", env)
        self.start_front(env)

    def start_front(self, env: dict[str, str] | None = None) -> None:
        """Start the controller's API front (the run's API address, ``api_url``) unless
        it still runs: in a cgroup of its own with a low CPU weight."""
        d = self.run.controller_dir
        if _still_runs(d / "front.pid"):
            return
        self.spawn_control(["nfvha.controller.frontmain", "--config",
                            str(d / "controller.json")], d / "front.log", d / "front.pid",
                           env, cgroup=front_cgroup(self.run), cpu_weight=FRONT_CPU_WEIGHT)

    def start_director(self, config: Path, log: Path, pidfile: Path,
                       env: dict[str, str] | None = None) -> None:
        """Start the HA director of the controller configured in ``config`` (the same
        file), unless the one recorded in ``pidfile`` still runs."""
        if _still_runs(pidfile):
            return
        self.spawn_control(["nfvha.director.main", "--config", str(config)], log, pidfile, env,
                           cgroup=director_cgroup(self.run), cpu_weight=DIRECTOR_CPU_WEIGHT)

    def spawn_control(self, module_argv: list[str], log: Path, pidfile: Path,
                      env: dict[str, str] | None = None, *, cgroup: str | None = None,
                      cpu_weight: int | None = None) -> Spawned:
        """Start ``python -m <module_argv>`` as a control-plane process of the run: in the
        controller's cgroup (or ``cgroup``, with ``cpu_weight``), with the run's marker,
        its pid recorded (``nfvha down`` removes it)."""
        run = self.run
        cg: list[str] = []
        if self.cgroups is not None:
            rel = cgroup or controller_cgroup(run)
            self.cgroups.create(rel, cpu_weight=cpu_weight)
            cg = cgroup_procs_paths(self.cgroups, rel)
        sp = spawn_detached_sync(
            [self.python, "-m", *module_argv],
            env=env or {**os.environ, RUN_MARKER: run.run_id}, cgroup_procs=cg,
            log=str(log), pidfile=str(pidfile), python=self.python)
        self.pids.append({"pid": sp.pid, "start_ticks": sp.start_ticks})
        if run.run_file.exists():
            self._write_run_file()
        return sp

    def start_own_am(self, vnf: str, env: dict[str, str] | None = None) -> int:
        """Start (or restart) the own AM of ``vnf`` beside the controller: its network
        and cgroup, the run's marker (``nfvha down`` removes it). Returns its pid."""
        d = self.own_am_dir(vnf)
        return self.spawn_control(["nfvha.amf.own.main", "--config", str(d / "vnf-am.json")],
                                  d / "vnf-am.log", d / "vnf-am.pid", env).pid

    def boot_host(self, host: str, env: dict[str, str]) -> None:
        run = self.run
        argv = [self.python, "-m", "nfvha.agent.hostd", "--config",
                str(run.host_dir(host) / "agent.json")]
        log = str(run.host_dir(host) / "hostd.log")
        save_boot_spec(run, host, argv=argv, env=env, log=log)
        cg: list[str] = []
        if self.cgroups is not None:
            self.cgroups.create(host_cgroup(run, host), cpu_weight=HOST_CPU_WEIGHT)
            self.cgroups.create(host_system_cgroup(run, host))
            cg = cgroup_procs_paths(self.cgroups, host_system_cgroup(run, host))
        sp = spawn_detached_sync(
            argv, env=env, netns=self.plan.host(host).netns if self.plan else None,
            cgroup_procs=cg, log=log, python=self.python,
        )
        self.pids.append({"pid": sp.pid, "start_ticks": sp.start_ticks})

    async def wait_ready(self, timeout_s: float = 60.0) -> None:
        """Until the API answers and every host's agent is connected."""
        deadline = time.monotonic() + timeout_s
        async with httpx.AsyncClient(base_url=self.api_url, timeout=2.0,
                                     headers=self.headers) as client:
            while True:
                try:
                    r = await client.get("/v1/hosts")
                    if r.status_code == 200 and all(
                        h["agent"]["connected"] and h["state"] == "up" for h in r.json()
                    ):
                        return
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise TestbedError(
                        f"run {self.run.run_id}: hosts not ready after {timeout_s:.0f} s;"
                        f" see {self.run.root}/*/*.log")
                await asyncio.sleep(0.05)

    async def start_vms(self, timeout_s: float = 60.0, repair_wait_s: float = 120.0,
                        repair_grace_s: float = 5.0) -> None:
        """Start every VM but the standbys. A VM whose start fails (it died while
        booting, or is not up yet) may be under repair by the VIM's own policy
        (ADR 0010) - e.g. a slow boot on a loaded machine taken for a failure: that
        repair is waited for (``repair_wait_s``) and the VM confirmed running. Only a
        real failure - the repair failed or was given up, nobody repairs it, or it is
        not running in time - fails the start, naming the VM and why."""
        async with httpx.AsyncClient(base_url=self.api_url, timeout=timeout_s,
                                     headers=self.headers) as client:
            async def vm_state(vm: str) -> str | None:
                vms = await get_all(client, "/v1/vms")
                return next((str(v["state"]) for v in vms if v["name"] == vm), None)

            async def settle(vm: str, why: str) -> None:
                """Until the VM runs and no repair is under way (or it cannot be)."""
                loop = asyncio.get_running_loop()
                end = loop.time() + repair_wait_s
                grace_end = loop.time() + repair_grace_s
                while True:
                    r = await client.get(f"/v1/vms/{vm}/repair")
                    if r.status_code == 404:  # no VM repair policy in this controller
                        raise TestbedError(f"VM {vm} did not start: {why}")
                    r.raise_for_status()
                    repair = r.json()
                    state, vm_is = repair["state"], await vm_state(vm)
                    last = repair.get("last_repair") or {}
                    if state in ("repair-failed", "gave-up"):
                        raise TestbedError(
                            f"VM {vm} did not start: {why}; the VIM's repair of it"
                            f" {'failed' if state == 'repair-failed' else 'was given up'}"
                            f": {last.get('error') or 'it failed again after each repair'}")
                    if state == "ok" and vm_is == "running":
                        return
                    now = loop.time()
                    if state == "awaiting-confirmation" and now > grace_end:
                        raise TestbedError(
                            f"VM {vm} did not start: {why}; its repair action is"
                            " 'confirm' and nobody asked for a repair")
                    if now > end:
                        raise TestbedError(
                            f"VM {vm} did not start: {why}; still {vm_is} (repair state"
                            f" {state}) after waiting {repair_wait_s:g} s")
                    if state == "ok" and vm_is not in ("starting", "running") \
                            and now > grace_end:
                        # Failed, and no repair started: its failure event arrived
                        # long ago (the grace), so none is coming.
                        raise TestbedError(f"VM {vm} did not start: {why}; it is {vm_is}"
                                           " and the VIM is not repairing it")
                    await asyncio.sleep(0.1)

            async def post_start(vm: str) -> httpx.Response:
                """``POST .../start``, again after its Retry-After while the API is busy
                (503: its front passes a few requests on at a time, ADR 0014)."""
                loop = asyncio.get_running_loop()
                end = loop.time() + timeout_s
                while True:
                    r = await client.post(f"/v1/vms/{vm}/start")
                    if r.status_code != 503 or "retry-after" not in r.headers \
                            or loop.time() > end:
                        return r
                    await asyncio.sleep(min(5.0, float(r.headers["retry-after"] or 1)))

            async def start(vm: str) -> None:
                try:
                    r = await post_start(vm)
                except httpx.TimeoutException:
                    why = f"no answer within {timeout_s:g} s"
                else:
                    if r.status_code == 200 and r.json()["result"].get("ready", True):
                        return
                    why = f"{r.status_code} {r.text}"
                await settle(vm, why)

            # A standby VM stays stopped until a failover starts it (ADR 0010).
            await asyncio.gather(*(start(v.name) for v in self.topology.vms
                                   if v.standby_for is None))

    async def start(self) -> None:
        try:
            await asyncio.to_thread(self.start_infrastructure)
            await self.wait_ready()
            await self.start_vms()
        except BaseException:
            await asyncio.to_thread(self.down)
            raise

    def down(self) -> list[str]:
        return teardown_run(self.run.run_id)

    def vm_address(self, vm: str) -> tuple[str, int]:
        """Where the (first) VNFC of a VM serves, as seen from the root namespace (for
        a standby VM: where the VNFCs it stands by for serve once it runs them)."""
        runs = self.topology.vm(vm).standby_for or vm
        comps = self.topology.components_on(runs)
        if not comps:
            raise KeyError(f"VM {vm} has no VNFC")
        idx = self.topology.vm_position(runs)
        ip = self.plan.vm(vm).data_ip if self.plan is not None else "127.0.0.1"
        return ip, self._vnfc_port(idx, comps[0][1].port)

    def info(self) -> dict[str, Any]:
        return read_json(self.run.run_file)  # type: ignore[no-any-return]
