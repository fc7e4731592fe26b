"""Hardware sensors of a host (HW-1 detection and prediction, HW-4 running conditions).

``SensorSource`` reads what the host has: hwmon (temperatures, voltages, fans, power,
currents) and EDAC memory-controller error counters, plus an *injected* JSON file with
which the local NFVI simulates hardware.  ``SensorEvaluator`` turns readings into
severity changes: thresholds (warn/crit) detect failures, and a rising corrected-error
counter predicts one before it happens.
"""

from __future__ import annotations

import enum
import json
import logging
import math
import os
import re
from collections import deque
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nfvha.util.clock import Clock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SensorReading:
    name: str
    value: float
    unit: str
    warn: float | None  # value >= warn: WARNING
    crit: float | None  # value >= crit: CRITICAL
    source: str  # "hwmon" | "edac" | "injected"


# -- sources ---------------------------------------------------------------------------

# hwmon sysfs ABI: kind -> (unit, divisor from the raw sysfs integer)
_HWMON_KINDS: dict[str, tuple[str, float]] = {
    "temp": ("C", 1000.0),  # millidegree Celsius
    "in": ("V", 1000.0),  # millivolt
    "fan": ("RPM", 1.0),
    "power": ("W", 1_000_000.0),  # microwatt
    "curr": ("A", 1000.0),  # milliampere
}
_HWMON_INPUT_RE = re.compile(r"^(temp|in|fan|power|curr)(\d+)_input$")
_HWMON_DIR_RE = re.compile(r"^hwmon(\d+)$")
_EDAC_MC_RE = re.compile(r"^mc(\d+)$")


def _read_number(path: Path) -> float | None:
    """A sysfs integer, or None if absent or unreadable (many drivers answer EIO/ENODATA
    for a sensor that is not wired)."""
    try:
        return float(int(path.read_text().strip()))
    except (OSError, ValueError):
        return None


def _dir_number(path: Path, pattern: re.Pattern[str]) -> int:
    m = pattern.match(path.name)
    return int(m.group(1)) if m else -1


def read_hwmon(sysfs_root: Path) -> dict[str, SensorReading]:
    """``hwmon.<chip>.<sensor>`` for every *_input, e.g. ``hwmon.coretemp.temp1``.

    A chip name shared by several devices (two CPU sockets) gets the device number:
    ``hwmon.coretemp-1.temp1``.  Thresholds: ``*_max`` is warn, ``*_crit`` is crit;
    only upper limits are evaluated, and a limit <= 0 is taken as "not set".
    """
    base = sysfs_root / "class" / "hwmon"
    try:
        devices = sorted(
            (d for d in base.iterdir() if _HWMON_DIR_RE.match(d.name)),
            key=lambda d: _dir_number(d, _HWMON_DIR_RE),
        )
    except OSError:
        return {}
    chips: list[tuple[Path, str, Path]] = []  # (attribute dir, chip name, device dir)
    for dev in devices:
        attr_dir = dev
        # Old drivers keep the attributes in the parent device's directory.
        if not any(_HWMON_INPUT_RE.match(p.name) for p in _safe_listdir(dev)):
            attr_dir = dev / "device"
        chip = _read_text(dev / "name") or _read_text(dev / "device" / "name") or dev.name
        chips.append((attr_dir, chip, dev))
    counts: dict[str, int] = {}
    for _, chip, _ in chips:
        counts[chip] = counts.get(chip, 0) + 1

    readings: dict[str, SensorReading] = {}
    for attr_dir, chip, dev in chips:
        label = chip if counts[chip] == 1 else f"{chip}-{_dir_number(dev, _HWMON_DIR_RE)}"
        for entry in sorted(_safe_listdir(attr_dir), key=lambda p: p.name):
            m = _HWMON_INPUT_RE.match(entry.name)
            if m is None:
                continue
            raw = _read_number(entry)
            if raw is None:
                continue
            kind, sensor = m.group(1), f"{m.group(1)}{m.group(2)}"
            unit, divisor = _HWMON_KINDS[kind]
            name = f"hwmon.{label}.{sensor}"
            readings[name] = SensorReading(
                name=name,
                value=raw / divisor,
                unit=unit,
                warn=_threshold(attr_dir / f"{sensor}_max", divisor),
                crit=_threshold(attr_dir / f"{sensor}_crit", divisor),
                source="hwmon",
            )
    return readings


def read_edac(sysfs_root: Path) -> dict[str, SensorReading]:
    """``edac.mcN.ce_count`` (corrected: evaluated by trend) and ``edac.mcN.ue_count``
    (uncorrected: one is already critical)."""
    base = sysfs_root / "devices" / "system" / "edac" / "mc"
    readings: dict[str, SensorReading] = {}
    controllers = sorted(
        (d for d in _safe_listdir(base) if _EDAC_MC_RE.match(d.name)),
        key=lambda d: _dir_number(d, _EDAC_MC_RE),
    )
    for mc in controllers:
        for counter, crit in (("ce_count", None), ("ue_count", 1.0)):
            value = _read_number(mc / counter)
            if value is None:
                continue
            name = f"edac.{mc.name}.{counter}"
            readings[name] = SensorReading(
                name=name, value=value, unit="count", warn=None, crit=crit, source="edac"
            )
    return readings


def _threshold(path: Path, divisor: float) -> float | None:
    raw = _read_number(path)
    return raw / divisor if raw is not None and raw > 0 else None


def _read_text(path: Path) -> str | None:
    try:
        return path.read_text().strip() or None
    except OSError:
        return None


def _safe_listdir(path: Path) -> list[Path]:
    try:
        return list(path.iterdir())
    except OSError:
        return []


def parse_injected(obj: Any) -> dict[str, SensorReading]:
    """``{"<name>": {"value": v, "unit": "C", "warn": w, "crit": c}}``; unit, warn and
    crit may be left out.  Raises ValueError on anything else."""
    if not isinstance(obj, dict):
        raise ValueError("injected sensors: top level must be an object")
    readings: dict[str, SensorReading] = {}
    for name, spec in obj.items():
        if not isinstance(spec, dict):
            raise ValueError(f"injected sensor {name!r}: must be an object")
        unknown = set(spec) - {"value", "unit", "warn", "crit"}
        if unknown:
            raise ValueError(f"injected sensor {name!r}: unknown keys {sorted(unknown)}")
        unit = spec.get("unit", "")
        if not isinstance(unit, str):
            raise ValueError(f"injected sensor {name!r}: unit must be a string")
        readings[name] = SensorReading(
            name=name,
            value=_number(name, "value", spec.get("value")),
            unit=unit,
            warn=_optional_number(name, "warn", spec.get("warn")),
            crit=_optional_number(name, "crit", spec.get("crit")),
            source="injected",
        )
    return readings


def _number(name: str, key: str, value: Any) -> float:
    # bool is an int in Python; "value": true is a mistake, not 1.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"injected sensor {name!r}: {key} must be a finite number")
    return float(value)


def _optional_number(name: str, key: str, value: Any) -> float | None:
    return None if value is None else _number(name, key, value)


class SensorSource:
    """All readings of this host; the injected file overrides or adds readings.

    ``read()`` is blocking file I/O, and some hwmon drivers (I2C/SMBus chips) take
    milliseconds per attribute: call it from the event loop via ``asyncio.to_thread``.
    """

    def __init__(self, sysfs_root: Path = Path("/sys"), injected_file: Path | None = None) -> None:
        self._sysfs_root = sysfs_root
        self._injected_file = injected_file
        self._injected_key: tuple[int, int, int] | None = None  # (ino, size, mtime_ns)
        self._injected: dict[str, SensorReading] = {}

    def read(self) -> dict[str, SensorReading]:
        readings = read_hwmon(self._sysfs_root)
        readings.update(read_edac(self._sysfs_root))
        readings.update(self._read_injected())
        return readings

    def _read_injected(self) -> dict[str, SensorReading]:
        path = self._injected_file
        if path is None:
            return {}
        try:
            st = path.stat()
        except FileNotFoundError:
            self._injected_key, self._injected = None, {}
            return {}
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key != self._injected_key:
            # Parse only when the file changed; a bad file is reported once and the
            # last good values stay in force (the injector is expected to write
            # atomically, so a bad file is an injector bug, not a torn write).
            self._injected_key = key
            try:
                with open(path, "rb") as f:
                    self._injected = parse_injected(json.loads(f.read()))
            except (OSError, ValueError) as e:
                log.warning("ignoring injected sensor file %s: %s", os.fspath(path), e)
        return dict(self._injected)


# -- evaluation ------------------------------------------------------------------------


class Severity(enum.Enum):
    OK = "OK"
    WARNING = "WARNING"
    CRITICAL = "CRITICAL"

    @property
    def rank(self) -> int:
        return _SEVERITY_RANK[self]


_SEVERITY_RANK = {Severity.OK: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


@dataclass(frozen=True)
class SensorFinding:
    sensor: str
    severity: Severity
    reason: str  # e.g. "hwmon.coretemp.temp1 95.0 C >= crit 90.0"
    value: float


def _fmt(value: float) -> str:
    """95.0, 1.05, 45.125: sysfs values are integers in milli-/micro-units."""
    return str(round(float(value), 3))


def _fmt_plain(value: float) -> str:
    """12, 60, 2.5: counts and seconds without a needless ".0"."""
    return str(int(value)) if float(value).is_integer() else _fmt(value)


class SensorEvaluator:
    """Severity per sensor from thresholds and from corrected-error trends.

    ``evaluate()`` returns only *changes* of severity since the previous call, including
    the way back to OK, so the caller raises an alarm on a non-OK finding and clears it
    on an OK one.  A sensor that was non-OK and is no longer reported comes back as OK
    (reason "... no longer reported"), so its alarm does not stay raised forever.
    """

    def __init__(self, clock: Clock, trend_window_s: float = 60.0, ce_rate_warn: int = 10) -> None:
        self._clock = clock
        self._window_ns = int(trend_window_s * 1e9)
        self._ce_rate_warn = ce_rate_warn
        self._severity: dict[str, Severity] = {}  # only sensors that are not OK
        self._last_value: dict[str, float] = {}
        self._history: dict[str, deque[tuple[int, float]]] = {}  # ce counters: (ns, value)
        self._trend_hit: dict[str, tuple[int, str]] = {}  # last time the rate was hit, why

    def evaluate(self, readings: dict[str, SensorReading]) -> list[SensorFinding]:
        now = self._clock.mono_ns()
        findings: list[SensorFinding] = []
        for name in sorted(readings):
            reading = readings[name]
            severity, reason = self._assess(reading, now)
            previous = self._severity.get(name, Severity.OK)
            if severity is not previous:
                findings.append(SensorFinding(name, severity, reason, reading.value))
            if severity is Severity.OK:
                self._severity.pop(name, None)
            else:
                self._severity[name] = severity
            self._last_value[name] = reading.value
        for name in sorted(set(self._last_value) - set(readings)):
            value = self._last_value.pop(name)
            self._history.pop(name, None)
            self._trend_hit.pop(name, None)
            if self._severity.pop(name, None) is not None:
                findings.append(
                    SensorFinding(name, Severity.OK, f"{name} no longer reported", value)
                )
        return findings

    def _assess(self, r: SensorReading, now: int) -> tuple[Severity, str]:
        severity, reason = Severity.OK, self._ok_reason(r)
        if r.crit is not None and r.value >= r.crit:
            severity = Severity.CRITICAL
            reason = f"{r.name} {_fmt(r.value)} {r.unit} >= crit {_fmt(r.crit)}"
        elif r.warn is not None and r.value >= r.warn:
            severity = Severity.WARNING
            reason = f"{r.name} {_fmt(r.value)} {r.unit} >= warn {_fmt(r.warn)}"
        if r.name.endswith("ce_count"):
            trend = self._ce_trend(r, now)
            if trend is not None and severity.rank < Severity.WARNING.rank:
                severity, reason = Severity.WARNING, trend
        return severity, reason

    def _ce_trend(self, r: SensorReading, now: int) -> str | None:
        """A warning if the counter rose by >= ce_rate_warn within the trend window.

        The warning is held for one window after the rate was last reached: errors come
        in bursts, and an alarm that clears whenever the trailing window dips just under
        the rate would flap at every sample.
        """
        history = self._history.setdefault(r.name, deque())
        if history and r.value < history[-1][1]:
            history.clear()  # counter reset (driver reload, reboot): a new series
        history.append((now, r.value))
        while history[0][0] < now - self._window_ns:
            history.popleft()
        # Counters only grow, so the largest rise inside the window is newest - oldest.
        oldest_ns, oldest_value = history[0]
        rise = r.value - oldest_value
        if rise >= self._ce_rate_warn:
            what = "memory failure" if r.name.startswith("edac.") else "failure"
            span = _fmt_plain((now - oldest_ns) / 1e9)
            reason = f"{r.name} rising: +{_fmt_plain(rise)} in {span} s (predicted {what})"
            self._trend_hit[r.name] = (now, reason)
            return reason
        hit = self._trend_hit.get(r.name)
        if hit is not None and now - hit[0] < self._window_ns:
            return hit[1]
        self._trend_hit.pop(r.name, None)
        return None

    def _ok_reason(self, r: SensorReading) -> str:
        limits = [
            f"{label} {_fmt(v)}"
            for label, v in (("warn", r.warn), ("crit", r.crit))
            if v is not None
        ]
        within = f" within limits ({', '.join(limits)})" if limits else " normal"
        return f"{r.name} {_fmt(r.value)} {r.unit}{within}"
