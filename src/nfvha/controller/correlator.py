"""UC-9 at the VIM: VM repair requests correlated per host.

Each request to repair a VM (the VNFM's escalation, ``POST /v1/vms/{vm}/repair``) is
counted against the host the VM runs on. When requests name ``host_repair_min_vms``
distinct VMs of one host within ``host_repair_window_s``, the fault is more likely
the host's than each VM's (VNFHA-6): the VIM repairs the host (fence, evacuate,
power-cycle) instead of each VM. A ``node-failfast`` escalation asks for the host
repair directly. While a host repair is under way, further requests for its VMs are
absorbed by it.

Pure: no I/O, time only from the injected clock.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from nfvha.model.settings import Settings
from nfvha.util.clock import Clock


class Verdict(StrEnum):
    REPAIR_VM = "repair-vm"  # below the threshold: repair the VM as asked
    REPAIR_HOST = "repair-host"  # start a host repair now
    HOST_REPAIR_UNDER_WAY = "host-repair-under-way"  # already being repaired with its host


@dataclass(frozen=True)
class Correlation:
    verdict: Verdict
    host: str
    vms: tuple[str, ...]  # the VMs of the host reported within the window
    reason: str


class RepairCorrelator:
    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._window_ns = int(settings.host_repair_window_s * 1e9)
        self._min_vms = settings.host_repair_min_vms
        self._clock = clock
        self._reports: dict[str, dict[str, int]] = {}  # host -> vm -> last report (mono ns)
        self._repairing: set[str] = set()

    def report(self, host: str, vm: str, source: str, *, failfast: bool = False
               ) -> Correlation:
        """Count a request to repair ``vm`` on ``host`` (from ``source``); ``failfast``:
        the requester itself asks for the host to be repaired."""
        if host in self._repairing:
            return Correlation(Verdict.HOST_REPAIR_UNDER_WAY, host, (vm,),
                               f"host {host} is being repaired")
        now = self._clock.mono_ns()
        seen = {v: t for v, t in self._reports.get(host, {}).items()
                if now - t < self._window_ns}
        seen[vm] = now
        self._reports[host] = seen
        vms = tuple(sorted(seen))
        if failfast:
            reason = f"{source}: VM {vm} failed too often on host {host} (node-failfast)"
        elif len(vms) >= self._min_vms:
            reason = (f"repair requested for {len(vms)} VMs of host {host} within"
                      f" {self._window_ns / 1e9:g} s: {', '.join(vms)}")
        else:
            return Correlation(Verdict.REPAIR_VM, host, vms,
                               f"{len(vms)} of {self._min_vms} VMs of {host} reported")
        self._repairing.add(host)
        del self._reports[host]
        return Correlation(Verdict.REPAIR_HOST, host, vms, reason)

    def begin(self, host: str) -> bool:
        """Mark a host repair started for another reason (host down); False if one
        already is."""
        if host in self._repairing:
            return False
        self._repairing.add(host)
        self._reports.pop(host, None)
        return True

    def done(self, host: str) -> None:
        """The host repair ended: requests count afresh."""
        self._repairing.discard(host)

    def repairing(self, host: str) -> bool:
        return host in self._repairing

    def reported(self, host: str) -> dict[str, int]:
        """VMs of ``host`` with a request in the current window (vm -> mono ns)."""
        now = self._clock.mono_ns()
        return {v: t for v, t in self._reports.get(host, {}).items()
                if now - t < self._window_ns}
