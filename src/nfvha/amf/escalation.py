"""Recovery escalation, AMF style (UC-9): restart a component a few times, then ask the
VIM to repair its VM a few times, then to repair the host.

Counting, as OpenSAF's AMF node director counts ``saAmfSGCompRestartMax`` within
``saAmfSGCompRestartProb``:

- A probation window starts at the first failure counted at a level and lasts
  ``probation_s``; a failure after it ends starts a new window with a count of 0.
- Within a window, ``max`` failures are recovered at the level itself (``max=3``:
  three restarts); the next one (the 4th) escalates one level and resets the
  level's count. ``max=0`` escalates at once.
- Levels: component (``vnfc_restart``, per component) -> VM (``vm_repair``, per
  VM on a host: a VM rebuilt on another host starts afresh, its old failures do
  not indict the new host) -> host. A VM failure reported by the host agent is
  counted at the VM level directly.

Pure: no I/O, time only from the injected clock's monotonic reading.
"""

from __future__ import annotations

from dataclasses import dataclass

from nfvha.amf.model import Recommendation
from nfvha.model.topology import EscalationPolicy, EscalationStep
from nfvha.util.clock import Clock


@dataclass
class _Window:
    start_ns: int
    count: int = 0


class _Level:
    """Failures of many entities counted against one escalation step."""

    def __init__(self, step: EscalationStep, clock: Clock) -> None:
        self._max = step.max
        self._probation_ns = int(step.probation_s * 1e9)
        self._clock = clock
        self._windows: dict[object, _Window] = {}

    def record(self, key: object) -> bool:
        """Count a failure of ``key``; True when it is recovered at this level,
        False when it exceeds the step and must escalate."""
        now = self._clock.mono_ns()
        window = self._windows.get(key)
        if window is None or now - window.start_ns >= self._probation_ns:
            window = self._windows[key] = _Window(start_ns=now)
        if window.count < self._max:
            window.count += 1
            return True
        del self._windows[key]
        return False

    def count(self, key: object) -> int:
        window = self._windows.get(key)
        if window is None or self._clock.mono_ns() - window.start_ns >= self._probation_ns:
            return 0
        return window.count


class EscalationTracker:
    def __init__(self, policy: EscalationPolicy, clock: Clock) -> None:
        self._components = _Level(policy.vnfc_restart, clock)
        self._vms = _Level(policy.vm_repair, clock)

    def record_component_failure(self, component: str, vm: str, *, has_standby: bool,
                                 host: str | None = None) -> Recommendation:
        """A component failed (process exit, failed health check, lost connection).

        Below the step: ``component-failover`` when a standby can take over its
        assignments (``has_standby``), else ``component-restart``. Beyond it:
        what a failure of ``vm`` (on ``host``, when known) calls for."""
        if self._components.record(component):
            return (Recommendation.COMPONENT_FAILOVER if has_standby
                    else Recommendation.COMPONENT_RESTART)
        return self.record_vm_failure(vm, host)

    def record_vm_failure(self, vm: str, host: str | None = None) -> Recommendation:
        """A VM failed, or a component's failures escalated to it: ``node-failover``
        (repair the VM) within the step, ``node-failfast`` (repair the host) beyond."""
        if self._vms.record((vm, host)):
            return Recommendation.NODE_FAILOVER
        return Recommendation.NODE_FAILFAST

    def component_failures(self, component: str) -> int:
        """Failures of ``component`` counted in its current probation window."""
        return self._components.count(component)

    def vm_failures(self, vm: str, host: str | None = None) -> int:
        return self._vms.count((vm, host))
