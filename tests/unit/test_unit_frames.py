"""Wire frames: every frame type survives encode() and the matching decoder."""

from __future__ import annotations

import json

import pydantic
import pytest

from nfvha.model.events import Event, EventType, Kind, Severity
from nfvha.wire.frames import (
    AGENT_FRAME,
    CONTROLLER_FRAME,
    Ack,
    Command,
    EventFrame,
    Frame,
    Hello,
    Inventory,
    ProcessInfo,
    Reply,
    VmInfo,
    VnfcInfo,
    Welcome,
    encode,
)

EVENT = Event(
    host="h1",
    seq=7,
    kind=Kind.VNFC_CRASHED,
    entity="vnfc/gw-a",
    severity=Severity.MAJOR,
    event_type=EventType.PROCESSING_ERROR_ALARM,
    probable_cause="process-crash",
    description="gw-a exited with status 1",
    event_time=1_800_000_000.5,
    detected_mono_ns=123_456_789,
    details={"exit": 1, "signal": None, "tags": ["a", "b"]},
)

AGENT_FRAMES: list[Frame] = [
    Hello(host="h1", agent_pid=42, incarnation="inc-1", started_time=1.5),
    Hello(host="h1", agent_pid=43, incarnation="inc-2", started_time=2.5,
          restarted_after="killed by signal 9"),
    EventFrame(event=EVENT),
    Inventory(host="h1"),
    Inventory(
        host="h1",
        vms=[
            VmInfo(name="vm1", state="running", pid=100, since=1.0, memory_bytes=1 << 20,
                   cpu_usage_ns=5),
            VmInfo(name="vm2", state="crashed", since=2.0),
        ],
        vnfcs=[VnfcInfo(name="c1", vm="vm1", state="running", pid=101, since=1.0)],
        processes=[ProcessInfo(name="vswitch", state="restarting", pid=None, restarts=3)],
        links={"eth0": True, "eth1": False},
        sensors={"temp_c": 40.5},
    ),
    Reply(id=1, ok=True, result={"pid": 5}),
    Reply(id=2, ok=False, error="no such VM"),
]

CONTROLLER_FRAMES: list[Frame] = [
    Welcome(last_seq=0),
    Welcome(last_seq=99),
    Ack(seq=12),
    Command(id=1, op="vm.start", target="vm1"),
    Command(id=2, op="vnfc.stop", target="c1", args={"grace_s": 1.5}),
]


def _ids(frames: list[Frame]) -> list[str]:
    return [f"{type(f).__name__}-{i}" for i, f in enumerate(frames)]


def test_every_frame_type_is_covered() -> None:
    assert {type(f) for f in AGENT_FRAMES} == {Hello, EventFrame, Inventory, Reply}
    assert {type(f) for f in CONTROLLER_FRAMES} == {Welcome, Ack, Command}


@pytest.mark.parametrize("frame", AGENT_FRAMES, ids=_ids(AGENT_FRAMES))
def test_agent_frame_round_trip(frame: Frame) -> None:
    line = encode(frame)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1  # one JSON object per line
    decoded = AGENT_FRAME.validate_json(line)
    assert type(decoded) is type(frame)
    assert decoded == frame


@pytest.mark.parametrize("frame", CONTROLLER_FRAMES, ids=_ids(CONTROLLER_FRAMES))
def test_controller_frame_round_trip(frame: Frame) -> None:
    line = encode(frame)
    assert line.endswith(b"\n")
    assert line.count(b"\n") == 1
    decoded = CONTROLLER_FRAME.validate_json(line)
    assert type(decoded) is type(frame)
    assert decoded == frame


def test_event_frame_keeps_event_enums() -> None:
    decoded = AGENT_FRAME.validate_json(encode(EventFrame(event=EVENT)))
    assert isinstance(decoded, EventFrame)
    assert decoded.event.kind is Kind.VNFC_CRASHED
    assert decoded.event.severity is Severity.MAJOR


def _with_extra(frame: Frame, path: list[str | int]) -> bytes:
    obj = json.loads(encode(frame))
    target = obj
    for part in path:
        target = target[part]
    target["surprise"] = 1
    return json.dumps(obj).encode()


@pytest.mark.parametrize(
    ("frame", "path"),
    [
        (AGENT_FRAMES[0], []),
        (AGENT_FRAMES[2], []),
        (AGENT_FRAMES[2], ["event"]),
        (AGENT_FRAMES[4], ["vms", 0]),
        (AGENT_FRAMES[4], ["processes", 0]),
        (AGENT_FRAMES[5], []),
    ],
)
def test_agent_frame_extra_fields_rejected(frame: Frame, path: list[str | int]) -> None:
    with pytest.raises(pydantic.ValidationError, match="surprise"):
        AGENT_FRAME.validate_json(_with_extra(frame, path))


@pytest.mark.parametrize("frame", CONTROLLER_FRAMES, ids=_ids(CONTROLLER_FRAMES))
def test_controller_frame_extra_fields_rejected(frame: Frame) -> None:
    with pytest.raises(pydantic.ValidationError, match="surprise"):
        CONTROLLER_FRAME.validate_json(_with_extra(frame, []))


def test_frames_of_the_other_direction_are_rejected() -> None:
    with pytest.raises(pydantic.ValidationError):
        AGENT_FRAME.validate_json(encode(Ack(seq=1)))
    with pytest.raises(pydantic.ValidationError):
        CONTROLLER_FRAME.validate_json(encode(AGENT_FRAMES[0]))


@pytest.mark.parametrize(
    "line",
    [
        b'{"t": "nope"}',
        b'{"seq": 1}',
        b'{"t": "command", "id": 1, "op": "host.reboot", "target": "h1"}',
        b"not json",
    ],
)
def test_invalid_controller_frames_rejected(line: bytes) -> None:
    with pytest.raises(pydantic.ValidationError):
        CONTROLLER_FRAME.validate_json(line)


def test_frames_are_immutable() -> None:
    ack = Ack(seq=1)
    with pytest.raises(pydantic.ValidationError):
        ack.seq = 2  # type: ignore[misc]
