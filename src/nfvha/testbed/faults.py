"""Fault injection on a running test bed, for real: signals, cgroup freezer,
links, power. Every fault returns the CLOCK_MONOTONIC time it was injected,
so detection latency can be measured against the controller's receipt time.

VM faults hit the process that *is* the VM (ADR 0019): the guest program of a process
VM (its pid record ``vm.pid``), QEMU of a libvirt VM (the pid libvirt wrote for its
domain). A libvirt VM is in none of our cgroups: it hangs by SIGSTOP of its QEMU.
"""

from __future__ import annotations

import json
import signal
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nfvha.model.topology import Topology, load_topology
from nfvha.nfvi.cgroups import detect_cgroups
from nfvha.nfvi.fabric import set_host_link
from nfvha.nfvi.libvirt_domain import NMI_PANIC_ARG, vm_domain_name
from nfvha.nfvi.libvirtd import LibvirtdPaths, qemu_pid
from nfvha.nfvi.power import LocalPowerDevice, PowerError, vm_cgroup
from nfvha.testbed.deploy import RunInfo
from nfvha.testbed.observe import udp_request
from nfvha.util.files import atomic_write_json, read_json
from nfvha.util.procs import is_same_process, kill_pid, read_stat
from nfvha.util.runpaths import RunPaths

FAULT_KINDS = {
    "vnfc-crash": "VNFC",
    "vm-crash": "VM",
    "vm-hang": "VM",
    "vm-thaw": "VM",
    "vm-memory-exhaust": "VM",
    "guest-panic": "VM",
    "watchdog": "VM",
    "agent-crash": "HOST",
    "host-process-crash": "HOST",
    "host-down": "HOST",
    "host-up": "HOST",
    "link-down": "HOST",
    "link-up": "HOST",
    "sensor": "HOST",
    "controller-crash": "CONTROLLER",
}


# VM faults for one kind of VM only, and why; the others apply to both.
FAULT_HYPERVISOR: dict[str, tuple[str, str]] = {
    # NMI, which the guest kernel turns into a panic (it boots with unknown_nmi_panic):
    # a process VM has no kernel of its own.
    "guest-panic": ("libvirt", "a process VM has no guest kernel to panic"),
    # The guest program leaks memory on SIGUSR1; QEMU is no guest program.
    "vm-memory-exhaust": ("process", "a libvirt VM's QEMU has no memory-leak hook"),
}
WATCHDOG_STOP = "WATCHDOG STOP"
WATCHDOG_STOPPED = "OK watchdog stopped"


class FaultError(Exception):
    pass


def _kernel_cmdline(domain_xml: str) -> str:
    """The guest kernel's command line in a domain's XML ("" if none)."""
    found = ET.fromstring(domain_xml).findtext("os/cmdline")
    return found or ""


@dataclass
class Injected:
    kind: str
    target: str
    injected_mono_ns: int
    detail: str


def _pid_record(path: Any, what: str) -> tuple[int, int]:
    try:
        rec = read_json(path)
    except FileNotFoundError:
        raise FaultError(f"{what} has no pid record ({path}); is it running?") from None
    return int(rec["pid"]), int(rec["start_ticks"])


# -- controllers of a cluster run (ADR 0013) ------------------------------------------
SelfAsker = Callable[[str], dict[str, Any] | None]  # front URL -> its /v1/cluster/self


def cluster_members(run: RunPaths) -> list[dict[str, Any]]:
    """The controllers of a cluster run as ``run.json`` lists them (name, front_url, ...);
    empty for a run with one controller."""
    try:
        cluster = read_json(run.run_file).get("cluster") or {}
    except FileNotFoundError:
        return []
    return [dict(m) for m in cluster.get("controllers") or []]


def ask_self(front_url: str, timeout_s: float = 1.0) -> dict[str, Any] | None:
    """What a member's front says of itself; None if it does not answer."""
    import httpx

    try:
        r = httpx.get(front_url.rstrip("/") + "/v1/cluster/self", timeout=timeout_s)
        r.raise_for_status()
        body = r.json()
    except (httpx.HTTPError, ValueError):
        return None
    return body if isinstance(body, dict) else None


def deciding_member(members: list[dict[str, Any]], ask: SelfAsker = ask_self) -> str:
    """The member whose work is up (``deciding``). Two can say so only across a handover
    (the old one's gate is closing): the higher epoch is the current term."""
    deciding = [(int(s.get("epoch") or 0), str(m["name"])) for m in members
                if (s := ask(str(m["front_url"]))) is not None and s.get("deciding")]
    if not deciding:
        raise FaultError("no controller is deciding (no leader now); name a member instead:"
                         f" {', '.join(str(m['name']) for m in members)}")
    return max(deciding)[1]


def controller_pid_file(run: RunPaths, target: str, ask: SelfAsker = ask_self
                        ) -> tuple[Path, str]:
    """The pid record of the controller ``target`` names, and how to call it: the single
    controller (``controller``), a cluster member (``c1``, ...) or whichever member
    leads (``leader``, asked of the fronts now)."""
    if target == "controller":
        return run.controller_dir / "controller.pid", "the controller"
    name = deciding_member(cluster_members(run), ask) if target == "leader" else target
    what = f"controller {name}" + (" (the leader)" if target == "leader" else "")
    return run.controller_dir / f"controller-{name}.pid", what


class FaultInjector:
    def __init__(self, run: RunPaths, topology: Topology | None = None, *,
                 ask: SelfAsker = ask_self) -> None:
        """``ask``: how a cluster member's front is asked who it is (tests replace it)."""
        self.run = run
        self._ask = ask
        self.info = RunInfo.load(run)
        self.topology = topology or load_topology(self.info.topology_file)
        self.cgroups = detect_cgroups() if self.info.mode == "netns" else None

    # -- targets ---------------------------------------------------------------
    def valid_targets(self, kind: str) -> list[str]:
        t = self.topology
        what = FAULT_KINDS[kind]
        if what == "VNFC":
            return [c.name for _, c in t.components()]
        if what == "VM":
            placed = self._placement()
            return [v.name for v in t.vms if self._vm_problem(kind, v.name, placed) is None]
        if what == "CONTROLLER":
            members = [str(m["name"]) for m in cluster_members(self.run)]
            return [*members, "leader"] if members else ["controller"]
        return t.host_names()

    def _check(self, kind: str, target: str) -> None:
        if kind not in FAULT_KINDS:
            raise FaultError(f"unknown fault '{kind}'; valid: {', '.join(FAULT_KINDS)}")
        if FAULT_KINDS[kind] == "VM" and self.topology._index().vms.get(target) is not None:
            problem = self._vm_problem(kind, target, self._placement())
            if problem is not None:
                valid = self.valid_targets(kind)
                raise FaultError(f"{kind}: {problem}; valid: {', '.join(valid) or 'none'}")
            return
        valid = self.valid_targets(kind)
        if target not in valid:
            raise FaultError(
                f"{kind}: no {FAULT_KINDS[kind]} named '{target}'; valid: {', '.join(valid)}")

    def _vm_problem(self, kind: str, vm: str, placed: dict[str, str]) -> str | None:
        """Why fault ``kind`` does not apply to VM ``vm`` (None: it does)."""
        need = FAULT_HYPERVISOR.get(kind)
        if need is not None:
            host = placed.get(vm) or self.topology.vm(vm).host
            hv = self._hypervisor(host)
            if hv != need[0]:
                return (f"VM {vm} is a {hv} VM (on host {host}); {kind} is for {need[0]} VMs"
                        f" only: {need[1]}")
        if kind == "watchdog" and self._watchdog_vnfc(vm) is None:
            return (f"VM {vm} has no watchdog armed by a VNFC (the VM needs 'watchdog' and"
                    " a counter component with 'watchdog_ms')")
        return None

    def _placement(self) -> dict[str, str]:
        """The controller's placement of moved VMs (ADR 0011), read once per question."""
        try:
            placed = read_json(self.run.controller_dir / "placement.json")
        except (FileNotFoundError, ValueError):
            return {}
        return {str(k): str(v) for k, v in placed.items() if v} \
            if isinstance(placed, dict) else {}

    def _hypervisor(self, host: str) -> str:
        return self.topology.hypervisor_of(host) if self.topology.has_host(host) \
            else "process"

    def inject(self, kind: str, target: str, **opts: Any) -> Injected:
        self._check(kind, target)
        fn = getattr(self, "_" + kind.replace("-", "_"))
        detail: str = fn(target, **opts)
        return Injected(kind, target, getattr(self, "_t0", time.monotonic_ns()), detail)

    def _mark(self) -> None:
        self._t0 = time.monotonic_ns()

    # -- the faults --------------------------------------------------------------
    def _vnfc_crash(self, vnfc: str) -> str:
        vm = next(c.vm for _, c in self.topology.components() if c.name == vnfc)
        try:
            state = read_json(self.run.vm_dir(vm) / "vnfcs.json")[vnfc]
        except (FileNotFoundError, KeyError):
            raise FaultError(f"VNFC {vnfc} has no pid record; is VM {vm} running?") from None
        if state.get("state") != "running" or state.get("pid") is None:
            raise FaultError(f"VNFC {vnfc} is not running (state {state.get('state')})")
        self._mark()
        if not kill_pid(int(state["pid"]), signal.SIGKILL, ticks=state.get("start_ticks")):
            raise FaultError(f"VNFC {vnfc} (pid {state['pid']}) is already gone")
        return f"SIGKILL to VNFC {vnfc} pid {state['pid']}"

    def _is_libvirt(self, vm: str) -> bool:
        return self._hypervisor(self.host_of(vm)) == "libvirt"

    def _domain(self, vm: str) -> tuple[LibvirtdPaths, str]:
        """The private libvirtd of the VM's host, and the VM's domain there."""
        return (LibvirtdPaths.for_host(self.run, self.host_of(vm)),
                vm_domain_name(self.run.tag, vm))

    def _vm_pid(self, vm: str) -> tuple[int, int]:
        """The process that is the VM now: its guest program, or its QEMU."""
        if self._is_libvirt(vm):
            paths, domain = self._domain(vm)
            pid = qemu_pid(paths, domain)
            st = read_stat(pid) if pid is not None else None
            if pid is None or st is None:
                raise FaultError(f"VM {vm} has no running QEMU (domain {domain} of the"
                                 f" libvirtd of {self.host_of(vm)}); is it running?")
            return pid, st.start_ticks
        pid, ticks = _pid_record(self.run.vm_dir(vm) / "vm.pid", f"VM {vm}")
        if not is_same_process(pid, ticks):
            raise FaultError(f"VM {vm} (pid {pid}) is not running")
        return pid, ticks

    def _what(self, vm: str, pid: int) -> str:
        return f"QEMU of VM {vm} pid {pid}" if self._is_libvirt(vm) else f"VM {vm} pid {pid}"

    def _vm_crash(self, vm: str) -> str:
        pid, ticks = self._vm_pid(vm)
        what = self._what(vm, pid)
        self._mark()
        kill_pid(pid, signal.SIGKILL, ticks=ticks)
        return f"SIGKILL to {what}"

    def host_of(self, vm: str) -> str:
        """Where the VM runs now: the controller's placement (a VM moves when its host
        is evacuated, ADR 0011), else the topology's."""
        return self._placement().get(vm) or self.topology.vm(vm).host

    def _vm_cgroup(self, vm: str) -> str:
        return vm_cgroup(self.run, self.host_of(vm), vm)

    def _vm_hang(self, vm: str) -> str:
        pid, ticks = self._vm_pid(vm)
        what = self._what(vm, pid)
        # A libvirt VM is in none of our cgroups: the whole QEMU stops (its vCPUs and
        # its device emulation), as a hypervisor process that hangs would.
        freeze = self.cgroups is not None and not self._is_libvirt(vm)
        self._mark()
        if freeze:
            assert self.cgroups is not None
            self.cgroups.freeze(self._vm_cgroup(vm))
            return f"froze the cgroup of VM {vm}"
        kill_pid(pid, signal.SIGSTOP, ticks=ticks)
        return f"SIGSTOP to {what}"

    def _vm_thaw(self, vm: str) -> str:
        if self.cgroups is not None and not self._is_libvirt(vm):
            self._mark()
            self.cgroups.thaw(self._vm_cgroup(vm))
            return f"thawed the cgroup of VM {vm}"
        pid, ticks = self._vm_pid(vm)
        what = self._what(vm, pid)
        self._mark()
        kill_pid(pid, signal.SIGCONT, ticks=ticks)
        return f"SIGCONT to {what}"

    def _guest_panic(self, vm: str) -> str:
        """An NMI into the guest, which its kernel (booted with ``unknown_nmi_panic``)
        answers with a panic: pvpanic tells libvirt (CRASHED/PANICKED), and the domain
        is destroyed (on_crash). Through the hypervisor, so it works whatever the guest
        runs - the way an operator forces a crash dump of a stuck guest."""
        try:
            import libvirt
        except ImportError:
            raise FaultError("guest-panic needs the libvirt Python binding:"
                             " ./scripts/bootstrap") from None
        paths, domain = self._domain(vm)
        try:
            conn = libvirt.open(paths.uri)
        except libvirt.libvirtError as e:
            raise FaultError(f"VM {vm}: the libvirtd of {self.host_of(vm)} does not answer:"
                             f" {e.get_error_message()}") from None
        try:
            try:
                dom = conn.lookupByName(domain)
                cmdline = _kernel_cmdline(dom.XMLDesc(0))
            except libvirt.libvirtError:
                raise FaultError(f"VM {vm} is not running (no domain {domain})") from None
            if NMI_PANIC_ARG not in cmdline.split():
                # Without it the kernel logs "NMI received for unknown reason" and goes
                # on: the fault would be injected, and nothing would happen.
                raise FaultError(f"VM {vm}: its guest kernel was not booted with"
                                 f" '{NMI_PANIC_ARG}', so an NMI would not panic it (the"
                                 " libvirt driver puts it on the kernel command line)")
            self._mark()
            try:
                dom.injectNMI(0)
            except libvirt.libvirtError as e:
                raise FaultError(f"VM {vm}: NMI not injected: {e.get_error_message()}"
                                 ) from None
        finally:
            conn.close()
        return f"NMI to the guest of VM {vm} (domain {domain}): its kernel panics"

    def _watchdog_vnfc(self, vm: str) -> tuple[str, int] | None:
        """(name, topology port) of the VNFC that arms ``vm``'s watchdog, if any. A
        standby VM runs the VNFCs of the VM it stands by for (ADR 0010)."""
        t = self.topology
        spec = t.vm(vm)
        if spec.watchdog is None:
            return None
        runs = spec.standby_for or vm
        return next(((c.name, c.port) for _, c in t.components_on(runs)
                     if c.program == "counter" and c.watchdog_ms is not None), None)

    def _watchdog(self, vm: str) -> str:
        """The VNFC that kicks the VM's watchdog stops kicking (and goes on serving):
        the watchdog runs out after its timeout, whatever runs the VM."""
        found = self._watchdog_vnfc(vm)
        assert found is not None  # _check
        name, port = found
        plan = self.info.plan
        runs = self.topology.vm(vm).standby_for or vm
        if plan is not None:
            addr = (plan.vm(vm).data_ip, port)
        else:  # the loopback fallback spreads each VM's ports (Testbed._vnfc_port)
            addr = ("127.0.0.1", port + 10 * self.topology.vm_position(runs))
        self._mark()
        answer = udp_request(addr, WATCHDOG_STOP)
        if answer != WATCHDOG_STOPPED:
            raise FaultError(f"VNFC {name} of VM {vm} at {addr[0]}:{addr[1]} did not stop"
                             f" its watchdog: {answer or 'no answer'}")
        return f"VNFC {name} of VM {vm} stopped kicking its watchdog"

    def _vm_memory_exhaust(self, vm: str) -> str:
        pid, ticks = self._vm_pid(vm)
        self._mark()
        # The sample guest's fault hook: on SIGUSR1 it leaks memory without bound.
        kill_pid(pid, signal.SIGUSR1, ticks=ticks)
        return f"VM {vm} (pid {pid}) told to leak memory"

    def _controller_crash(self, target: str) -> str:
        # By the recorded pid and start time only: never a process found by its name.
        path, what = controller_pid_file(self.run, target, self._ask)
        pid, ticks = _pid_record(path, what)
        self._mark()
        if not kill_pid(pid, signal.SIGKILL, ticks=ticks):
            raise FaultError(f"{what} (pid {pid}) is not running")
        return f"SIGKILL to {what} pid {pid}"

    def _agent_crash(self, host: str) -> str:
        pid, ticks = _pid_record(self.run.host_dir(host) / "agent.pid", f"agent of {host}")
        self._mark()
        if not kill_pid(pid, signal.SIGKILL, ticks=ticks):
            raise FaultError(f"agent of {host} (pid {pid}) is not running")
        return f"SIGKILL to agent of {host} pid {pid}"

    def _host_process_crash(self, host: str, process: str = "vswitch") -> str:
        # The agent records a restarted process's pid just after reporting the restart.
        deadline = time.monotonic() + 2.0
        while True:
            state = read_json(self.run.host_dir(host) / "agent-state.json")
            procs = state.get("processes", {})
            if process not in procs:
                raise FaultError(f"host {host} has no process '{process}';"
                                 f" valid: {', '.join(procs)}")
            rec = procs[process]
            if rec.get("pid") is not None and is_same_process(int(rec["pid"]),
                                                              int(rec["start_ticks"])):
                break
            if time.monotonic() > deadline:
                raise FaultError(f"process {process} on {host} is not running")
            time.sleep(0.02)
        self._mark()
        if not kill_pid(int(rec["pid"]), signal.SIGKILL, ticks=rec.get("start_ticks")):
            raise FaultError(f"process {process} on {host} is not running")
        return f"SIGKILL to {process} on {host} pid {rec['pid']}"

    def _power(self, host: str) -> LocalPowerDevice:
        if self.cgroups is None or self.info.plan is None:
            raise FaultError("host power control needs the namespaced test bed (root)")
        return LocalPowerDevice(self.run, self.info.plan, host, self.cgroups)

    def _host_down(self, host: str) -> str:
        dev = self._power(host)
        self._mark()
        dev.off()
        return f"host {host} powered off"

    def _host_up(self, host: str) -> str:
        dev = self._power(host)
        self._mark()
        try:
            sp = dev.on()
        except PowerError as e:
            raise FaultError(str(e)) from None
        return f"host {host} powered on (supervisor pid {sp.pid})"

    def _link(self, host: str, link: str, up: bool) -> str:
        if self.info.plan is None:
            raise FaultError("link faults need the namespaced test bed (root)")
        if link not in ("mgmt0", "data0"):
            raise FaultError(f"unknown link '{link}'; valid: mgmt0, data0")
        self._mark()
        set_host_link(self.info.plan, host, link, up)
        return f"link {link} of {host} set {'up' if up else 'down'}"

    def _link_down(self, host: str, link: str = "data0") -> str:
        return self._link(host, link, False)

    def _link_up(self, host: str, link: str = "data0") -> str:
        return self._link(host, link, True)

    def _sensor(self, host: str, name: str = "", value: float | None = None,
                warn: float | None = None, crit: float | None = None, unit: str = "",
                clear: bool = False) -> str:
        path = self.run.host_dir(host) / "sensors.json"
        try:
            current: dict[str, Any] = read_json(path)
        except (FileNotFoundError, json.JSONDecodeError):
            current = {}
        if clear:
            current.pop(name, None) if name else current.clear()
        else:
            if not name or value is None:
                raise FaultError("sensor needs NAME=VALUE, e.g. 'temp1=95'")
            current[name] = {"value": value, "unit": unit, "warn": warn, "crit": crit}
        self._mark()
        atomic_write_json(path, current, fsync=False)
        return f"sensors of {host}: {current}"
