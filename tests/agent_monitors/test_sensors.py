"""SensorSource on a fake sysfs tree, and SensorEvaluator thresholds and trends (HW-1)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from nfvha.agent.sensors import (
    SensorEvaluator,
    SensorFinding,
    SensorReading,
    SensorSource,
    Severity,
    parse_injected,
)
from nfvha.util.clock import ManualClock
from nfvha.util.files import atomic_write_json


@pytest.fixture
def sysfs() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="nfvha-test-"))
    try:
        yield root
    finally:
        shutil.rmtree(root)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _hwmon(sysfs: Path, n: int, name: str | None, files: dict[str, int], sub: str = "") -> Path:
    dev = sysfs / "class" / "hwmon" / f"hwmon{n}"
    dev.mkdir(parents=True, exist_ok=True)
    if name is not None:
        _write(dev / "name", name)
    for fname, value in files.items():
        _write(dev / sub / fname if sub else dev / fname, str(value))
    return dev


def _edac(sysfs: Path, mc: int, ce: int, ue: int) -> None:
    base = sysfs / "devices" / "system" / "edac" / "mc" / f"mc{mc}"
    _write(base / "ce_count", str(ce))
    _write(base / "ue_count", str(ue))


def _reading(
    name: str, value: float, warn: float | None = None, crit: float | None = None, unit: str = "C"
) -> SensorReading:
    return SensorReading(name, value, unit, warn, crit, "injected")


# -- SensorSource ----------------------------------------------------------------------


def test_empty_sysfs_gives_no_readings(sysfs: Path) -> None:
    assert SensorSource(sysfs).read() == {}


def test_hwmon_units_and_thresholds(sysfs: Path) -> None:
    _hwmon(
        sysfs,
        0,
        "nct6775",
        {
            "temp1_input": 95000,
            "temp1_max": 80000,
            "temp1_crit": 90000,
            "temp2_input": 41500,  # no thresholds
            "temp3_max": 0,  # a limit without an input is not a sensor
            "in0_input": 1212,
            "in0_max": 1500,
            "fan1_input": 1830,
            "power1_input": 45_250_000,
            "power1_crit": 0,  # 0 means "not set"
            "curr1_input": 2500,
            "temp1_label": 0,
        },
    )
    (sysfs / "class" / "hwmon" / "hwmon0" / "temp4_input").write_text("garbage\n")
    readings = SensorSource(sysfs).read()
    assert readings["hwmon.nct6775.temp1"] == SensorReading(
        "hwmon.nct6775.temp1", 95.0, "C", 80.0, 90.0, "hwmon"
    )
    assert readings["hwmon.nct6775.temp2"].value == 41.5
    assert readings["hwmon.nct6775.temp2"].warn is None
    assert readings["hwmon.nct6775.in0"] == SensorReading(
        "hwmon.nct6775.in0", 1.212, "V", 1.5, None, "hwmon"
    )
    assert readings["hwmon.nct6775.fan1"].value == 1830.0
    assert readings["hwmon.nct6775.fan1"].unit == "RPM"
    assert readings["hwmon.nct6775.power1"] == SensorReading(
        "hwmon.nct6775.power1", 45.25, "W", None, None, "hwmon"
    )
    assert readings["hwmon.nct6775.curr1"].value == 2.5
    assert set(readings) == {
        f"hwmon.nct6775.{s}" for s in ("temp1", "temp2", "in0", "fan1", "power1", "curr1")
    }


def test_hwmon_duplicate_chips_and_old_device_layout(sysfs: Path) -> None:
    _hwmon(sysfs, 0, "coretemp", {"temp1_input": 50000})
    _hwmon(sysfs, 10, "coretemp", {"temp1_input": 52000})
    _hwmon(sysfs, 2, None, {"name": 0, "temp1_input": 33000}, sub="device")
    _write(sysfs / "class" / "hwmon" / "hwmon2" / "device" / "name", "w83627hf")
    _hwmon(sysfs, 3, None, {"temp1_input": 20000})  # no name file at all
    readings = SensorSource(sysfs).read()
    assert readings["hwmon.coretemp-0.temp1"].value == 50.0
    assert readings["hwmon.coretemp-10.temp1"].value == 52.0
    assert readings["hwmon.w83627hf.temp1"].value == 33.0
    assert readings["hwmon.hwmon3.temp1"].value == 20.0


def test_edac_counters(sysfs: Path) -> None:
    _edac(sysfs, 0, ce=3, ue=0)
    _edac(sysfs, 1, ce=0, ue=2)
    readings = SensorSource(sysfs).read()
    assert readings["edac.mc0.ce_count"] == SensorReading(
        "edac.mc0.ce_count", 3.0, "count", None, None, "edac"
    )
    assert readings["edac.mc0.ue_count"].crit == 1.0
    assert readings["edac.mc1.ue_count"].value == 2.0
    assert len(readings) == 4


def test_injected_file_overrides_adds_and_is_reread(sysfs: Path) -> None:
    _hwmon(sysfs, 0, "coretemp", {"temp1_input": 50000, "temp1_crit": 100000})
    injected = sysfs / "injected.json"
    source = SensorSource(sysfs, injected_file=injected)
    assert source.read()["hwmon.coretemp.temp1"].source == "hwmon"  # file absent: fine

    atomic_write_json(
        injected,
        {
            "hwmon.coretemp.temp1": {"value": 97, "unit": "C", "warn": 85, "crit": 95},
            "psu1.power_ok": {"value": 0, "crit": None},
        },
    )
    readings = source.read()
    assert readings["hwmon.coretemp.temp1"] == SensorReading(
        "hwmon.coretemp.temp1", 97.0, "C", 85.0, 95.0, "injected"
    )
    assert readings["psu1.power_ok"] == SensorReading(
        "psu1.power_ok", 0.0, "", None, None, "injected"
    )

    atomic_write_json(injected, {"hwmon.coretemp.temp1": {"value": 60, "unit": "C"}})
    assert source.read()["hwmon.coretemp.temp1"].value == 60.0
    assert "psu1.power_ok" not in source.read()

    # a broken file keeps the last good values
    injected.write_text('{"hwmon.coretemp.temp1": {"value": "hot"}}')
    assert source.read()["hwmon.coretemp.temp1"].value == 60.0
    injected.write_text("{not json")
    assert source.read()["hwmon.coretemp.temp1"].value == 60.0

    os.unlink(injected)
    assert source.read()["hwmon.coretemp.temp1"].source == "hwmon"


def test_injected_file_is_parsed_only_when_changed(
    sysfs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    injected = sysfs / "injected.json"
    atomic_write_json(injected, {"x": {"value": 1}})
    source = SensorSource(sysfs, injected_file=injected)
    calls = 0
    real = json.loads

    def counting_loads(data: bytes) -> object:
        nonlocal calls
        calls += 1
        return real(data)

    monkeypatch.setattr("nfvha.agent.sensors.json.loads", counting_loads)
    for _ in range(5):
        assert source.read()["x"].value == 1.0
    assert calls == 1
    atomic_write_json(injected, {"x": {"value": 2}})
    assert source.read()["x"].value == 2.0
    assert calls == 2


@pytest.mark.parametrize(
    "bad",
    [
        [],
        {"x": 5},
        {"x": {"unit": "C"}},
        {"x": {"value": True}},
        {"x": {"value": 1, "unit": 3}},
        {"x": {"value": 1, "warn": "9"}},
        {"x": {"value": 1, "colour": "red"}},
    ],
)
def test_parse_injected_rejects_malformed(bad: object) -> None:
    with pytest.raises(ValueError):
        parse_injected(bad)


# -- SensorEvaluator -------------------------------------------------------------------


@pytest.mark.req("HW-1")
def test_thresholds_raise_and_clear() -> None:
    ev = SensorEvaluator(ManualClock())
    temp = "temp1"
    assert ev.evaluate({temp: _reading(temp, 70.0, warn=80.0, crit=90.0)}) == []
    (warn,) = ev.evaluate({temp: _reading(temp, 85.0, warn=80.0, crit=90.0)})
    assert warn == SensorFinding(temp, Severity.WARNING, "temp1 85.0 C >= warn 80.0", 85.0)
    assert ev.evaluate({temp: _reading(temp, 86.0, warn=80.0, crit=90.0)}) == []  # no repeat
    (crit,) = ev.evaluate({temp: _reading(temp, 95.0, warn=80.0, crit=90.0)})
    assert crit == SensorFinding(temp, Severity.CRITICAL, "temp1 95.0 C >= crit 90.0", 95.0)
    (back,) = ev.evaluate({temp: _reading(temp, 85.0, warn=80.0, crit=90.0)})
    assert back.severity is Severity.WARNING
    (ok,) = ev.evaluate({temp: _reading(temp, 60.0, warn=80.0, crit=90.0)})
    assert ok.severity is Severity.OK and ok.value == 60.0
    assert "within limits" in ok.reason
    # an uncorrected memory error is critical at once
    (ue,) = ev.evaluate(
        {"edac.mc0.ue_count": _reading("edac.mc0.ue_count", 1, crit=1.0, unit="count")}
    )
    assert ue.severity is Severity.CRITICAL
    assert ue.reason == "edac.mc0.ue_count 1.0 count >= crit 1.0"


def test_vanished_sensor_clears() -> None:
    ev = SensorEvaluator(ManualClock())
    (crit,) = ev.evaluate({"psu1": _reading("psu1", 1.0, crit=1.0), "t": _reading("t", 1.0)})
    assert crit.severity is Severity.CRITICAL
    (gone,) = ev.evaluate({"t": _reading("t", 1.0)})
    assert gone == SensorFinding("psu1", Severity.OK, "psu1 no longer reported", 1.0)
    assert ev.evaluate({}) == []  # an OK sensor vanishing is not a change


@pytest.mark.req("HW-1")
def test_rising_corrected_errors_predict_failure() -> None:
    clock = ManualClock()
    ev = SensorEvaluator(clock, trend_window_s=60.0, ce_rate_warn=10)
    name = "edac.mc0.ce_count"

    def at(value: int) -> list[SensorFinding]:
        return ev.evaluate({name: SensorReading(name, float(value), "count", None, None, "edac")})

    assert at(100) == []
    clock.advance(30)
    assert at(105) == []  # +5 in 30 s: below the rate
    clock.advance(30)
    (warn,) = at(112)  # +12 in 60 s, no threshold crossed
    assert warn == SensorFinding(
        name,
        Severity.WARNING,
        "edac.mc0.ce_count rising: +12 in 60 s (predicted memory failure)",
        112.0,
    )
    clock.advance(10)
    assert at(113) == []  # +8 since t=30, but the warning is held for a window (no flapping)
    clock.advance(40)
    assert at(113) == []  # t=110: still within a window of the last hit (t=60)
    clock.advance(10)
    (ok,) = at(113)  # t=120: a whole window without reaching the rate
    assert ok.severity is Severity.OK
    assert ok.reason == "edac.mc0.ce_count 113.0 count normal"


@pytest.mark.req("HW-1")
def test_slow_corrected_errors_and_counter_reset_do_not_warn() -> None:
    clock = ManualClock()
    ev = SensorEvaluator(clock, trend_window_s=60.0, ce_rate_warn=10)
    name = "mlx5.port1.pcie_ce_count"  # any *ce_count counter is trended
    value = 0
    for _ in range(30):  # +3 every 20 s: 9 per 60 s window, forever below 10
        assert ev.evaluate({name: _reading(name, value, unit="count")}) == []
        clock.advance(20)
        value += 3
    # a reset to 0 followed by a small rise is a new series, not a drop or a jump
    assert ev.evaluate({name: _reading(name, 0, unit="count")}) == []
    clock.advance(10)
    assert ev.evaluate({name: _reading(name, 9, unit="count")}) == []
    clock.advance(10)
    (warn,) = ev.evaluate({name: _reading(name, 10, unit="count")})
    assert warn.reason == f"{name} rising: +10 in 20 s (predicted failure)"


def test_threshold_outranks_trend() -> None:
    clock = ManualClock()
    ev = SensorEvaluator(clock, trend_window_s=60.0, ce_rate_warn=10)
    name = "edac.mc0.ce_count"
    assert ev.evaluate({name: _reading(name, 0, crit=1000, unit="count")}) == []
    clock.advance(1)
    (warn,) = ev.evaluate({name: _reading(name, 500, crit=1000, unit="count")})
    assert warn.severity is Severity.WARNING and "predicted" in warn.reason
    clock.advance(1)
    (crit,) = ev.evaluate({name: _reading(name, 1000, crit=1000, unit="count")})
    assert crit.severity is Severity.CRITICAL and ">= crit 1000.0" in crit.reason


def test_source_and_evaluator_end_to_end(sysfs: Path) -> None:
    clock = ManualClock()
    source = SensorSource(sysfs)
    ev = SensorEvaluator(clock)
    _hwmon(sysfs, 0, "k10temp", {"temp1_input": 45000, "temp1_max": 70000, "temp1_crit": 90000})
    _edac(sysfs, 0, ce=0, ue=0)
    assert ev.evaluate(source.read()) == []
    _write(sysfs / "class" / "hwmon" / "hwmon0" / "temp1_input", "91000")
    _write(sysfs / "devices" / "system" / "edac" / "mc" / "mc0" / "ce_count", "40")
    clock.advance(15)
    findings = {f.sensor: f for f in ev.evaluate(source.read())}
    assert findings["hwmon.k10temp.temp1"].severity is Severity.CRITICAL
    assert findings["hwmon.k10temp.temp1"].reason == "hwmon.k10temp.temp1 91.0 C >= crit 90.0"
    assert findings["edac.mc0.ce_count"].reason == (
        "edac.mc0.ce_count rising: +40 in 15 s (predicted memory failure)"
    )
