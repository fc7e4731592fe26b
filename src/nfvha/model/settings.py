"""Timeouts and intervals: every one is configuration with a sane default.

They are validated against each other at start-up (the Patroni rule: a setting
that makes another meaningless is an error, not a surprise at 3 a.m.).
"""

from __future__ import annotations

import ipaddress
from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, model_validator

from nfvha.util.syslog import parse_destination

AlarmSeverity = Literal["CRITICAL", "MAJOR", "MINOR", "WARNING", "INDETERMINATE"]
DEFAULT_CLEARED_RETENTION_S: dict[AlarmSeverity, float] = {
    "CRITICAL": 30 * 86_400.0, "MAJOR": 30 * 86_400.0, "MINOR": 7 * 86_400.0,
    "WARNING": 7 * 86_400.0, "INDETERMINATE": 86_400.0,
}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Settings(Strict):
    # VM hang detection: guest heartbeat challenge/response (HV-2).
    guest_heartbeat_interval_ms: int = Field(100, ge=10, le=10_000)
    guest_heartbeat_misses: int = Field(3, ge=2, le=100)
    # Host liveness: host supervisor -> director heartbeats (HV-1, ADR 0015).
    host_heartbeat_interval_ms: int = Field(100, ge=10, le=10_000)
    host_heartbeat_misses: int = Field(3, ge=2, le=100)
    # A suspect host whose second signal (fence power status / witnesses) never confirms
    # stays suspect; this is how often the confirmation is retried.
    host_confirm_retry_ms: int = Field(100, ge=10, le=10_000)
    # Confirming a suspect host without a fence device (ADR 0015): this many witness
    # hosts are asked to ping it on the data network, each within this time.
    host_probe_witnesses: int = Field(3, ge=1, le=16)
    host_probe_timeout_ms: int = Field(60, ge=5, le=10_000)
    # A host never heard of since the controller started becomes suspect after this.
    host_boot_grace_s: float = Field(30.0, gt=0, le=3600)
    # Host running conditions to the controller (HW-4).
    condition_report_interval_s: float = Field(10.0, gt=0, le=3600)
    sensor_poll_interval_s: float = Field(1.0, gt=0, le=600)
    # VM records (NFVI-5, HV-6).
    vm_record_interval_s: float = Field(2.0, gt=0, le=600)
    vm_records_kept: int = Field(100, ge=1, le=100_000)
    # Disk snapshots of the VMs of restart-snapshot VNFs (REC-2, ADR 0010).
    vm_snapshot_interval_s: float = Field(60.0, gt=0, le=86_400)
    last_words_console_lines: int = Field(20, ge=1, le=1000)
    # A VM whose watchdog ran out (VNFHA-1) with action reset must be dead within this
    # time after it was killed, before it is booted again.
    watchdog_kill_timeout_s: float = Field(10.0, gt=0, le=600)
    # Local restart of the agent by the host supervisor (MW-1) and of host processes (FM-3).
    agent_restart_backoff_initial_s: float = Field(0.05, gt=0, le=60)
    agent_restart_backoff_max_s: float = Field(5.0, gt=0, le=600)
    process_restart_backoff_initial_s: float = Field(0.1, gt=0, le=60)
    process_restart_backoff_max_s: float = Field(10.0, gt=0, le=600)
    # A process that ran this long without failing gets its backoff reset.
    restart_backoff_reset_s: float = Field(10.0, gt=0, le=86_400)
    # Where the hypervisor (the host supervisor) reports its own failures and recovery
    # actions besides its host's report log (HV-3): RFC 5424 syslog over UDP.
    host_report_destinations: list[str] = Field(default_factory=list, max_length=8)
    # A command to an agent may wait this long for the agent to start it (the agent
    # may be busy with the host's other work, e.g. starting its other VMs); its own
    # time limit counts from that start.
    agent_command_queue_timeout_s: float = Field(10.0, gt=0, le=600)
    # Agent -> controller event stream.
    reconnect_backoff_initial_s: float = Field(0.02, gt=0, le=60)
    reconnect_backoff_max_s: float = Field(0.5, gt=0, le=60)
    event_spool_fsync_interval_s: float = Field(0.1, ge=0.001, le=60)
    # Fault management: correlation and ageing (FM-7, VNFHA-6).
    fm_correlation_window_s: float = Field(60.0, gt=0, le=86_400)
    fm_latent_fault_window_s: float = Field(600.0, gt=0, le=604_800)
    fm_latent_fault_min_vms: int = Field(2, ge=2, le=1000)
    fm_event_retention_s: float = Field(7 * 86_400, gt=0)
    fm_cleared_alarm_retention_s: dict[AlarmSeverity, float] = Field(
        default_factory=lambda: dict(DEFAULT_CLEARED_RETENTION_S))
    fm_ageing_interval_s: float = Field(60.0, gt=0, le=86_400)
    # Availability management (ADR 0008): every component asks for its active lease
    # each ping interval; a grant runs from the request's send time. An active whose
    # lease ran out quiesces itself, and the AM gives its role away only after lease
    # + margin since its last grant.
    amf_ping_interval_ms: int = Field(50, ge=5, le=10_000)
    amf_active_lease_ms: int = Field(300, ge=20, le=600_000)
    amf_lease_margin_ms: int = Field(100, ge=0, le=600_000)
    # After an AM (re)start - a new leader's term - components get this long on top of
    # lease + margin to reconnect before one it has not heard from is counted out: the
    # SDK's reconnect back-off is at most 250 ms (with jitter).
    amf_takeover_grace_ms: int = Field(500, ge=0, le=600_000)
    # Host repair (ADR 0011). A fence "off" counts only once the device reports the
    # power off, within this time (REC-1: nothing of the host restarts elsewhere before).
    fence_verify_timeout_s: float = Field(10.0, gt=0, le=600)
    fence_verify_interval_ms: int = Field(100, ge=10, le=60_000)
    # Power status of a fence agent (a process per query) for the liveness check is
    # cached this long; the local device is read directly.
    fence_status_cache_ms: int = Field(300, ge=10, le=600_000)
    # UC-9: repair requests for this many distinct VMs of one host within the window
    # make the VIM repair the host (fence, evacuate, power-cycle) instead of each VM.
    host_repair_window_s: float = Field(60.0, gt=0, le=86_400)
    host_repair_min_vms: int = Field(2, ge=2, le=1000)
    # After a host repair has evacuated the host, power it on again (empty, in service).
    host_repair_power_on: bool = True
    # Time limit for starting one evacuated VM on its new host.
    evacuate_vm_timeout_s: float = Field(30.0, gt=0, le=600)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        problems: list[str] = []
        if self.agent_restart_backoff_initial_s > self.agent_restart_backoff_max_s:
            problems.append(
                "agent_restart_backoff_initial_s must be <= agent_restart_backoff_max_s"
            )
        if self.process_restart_backoff_initial_s > self.process_restart_backoff_max_s:
            problems.append(
                "process_restart_backoff_initial_s must be <= process_restart_backoff_max_s"
            )
        problems.extend(_report_destination_problems(self.host_report_destinations))
        if self.reconnect_backoff_initial_s > self.reconnect_backoff_max_s:
            problems.append("reconnect_backoff_initial_s must be <= reconnect_backoff_max_s")
        if self.sensor_poll_interval_s > self.condition_report_interval_s:
            problems.append("sensor_poll_interval_s must be <= condition_report_interval_s")
        # Confirming a suspect host less often than it takes to suspect it would make
        # confirmation, not detection, the slow step.
        if self.host_confirm_retry_ms > self.host_suspect_after_ms:
            problems.append(
                "host_confirm_retry_ms must be <= host_heartbeat_interval_ms"
                " x host_heartbeat_misses"
            )
        # A probe round must end before the next one starts.
        if self.host_probe_timeout_ms > self.host_confirm_retry_ms:
            problems.append("host_probe_timeout_ms must be <= host_confirm_retry_ms")
        # Fewer than three pings per lease and one late ping would make a healthy
        # active quiesce itself.
        if self.amf_ping_interval_ms * 3 > self.amf_active_lease_ms:
            problems.append("amf_ping_interval_ms x 3 must be <= amf_active_lease_ms")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    @property
    def host_suspect_after_ms(self) -> int:
        return self.host_heartbeat_interval_ms * self.host_heartbeat_misses

    @property
    def guest_hang_after_ms(self) -> int:
        return self.guest_heartbeat_interval_ms * self.guest_heartbeat_misses


# The local test bed sends only to loopback and to its own fabric (never elsewhere).
REPORT_NETWORKS = (ipaddress.IPv4Network("127.0.0.0/8"), ipaddress.IPv4Network("198.18.0.0/15"))


def _report_destination_problems(destinations: list[str]) -> list[str]:
    problems = []
    for d in destinations:
        try:
            ip, _ = parse_destination(d)
        except ValueError as e:
            problems.append(f"host_report_destinations: {e}")
            continue
        if not any(ipaddress.IPv4Address(ip) in n for n in REPORT_NETWORKS):
            problems.append(f"host_report_destinations: {d!r}: only loopback (127.0.0.0/8)"
                            " and the test bed's fabric (198.18.0.0/15) are reachable")
    return problems
