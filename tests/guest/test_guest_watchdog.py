"""The guest's side of a process VM's watchdog (VNFHA-1): what a VNFC sends through
``nfvha.amf.watchdog`` reaches the agent as one message each, bounded and checked."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from nfvha.amf.watchdog import Watchdog, WatchdogError
from nfvha.nfvi.guestwatchdog import WatchdogDevice


async def test_arm_kick_disarm_reach_the_agent_and_the_state_follows(tmp_path: Path) -> None:
    got: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    logs: list[str] = []
    device = WatchdogDevice(got.put_nowait, logs.append)
    path = await device.open(tmp_path)
    wd = Watchdog(str(path))
    try:
        wd.kick()  # not armed: nothing to kick
        wd.arm(0.25)
        assert await asyncio.wait_for(got.get(), 5) == {"op": "watchdog", "do": "arm",
                                                         "timeout_ms": 250}
        assert device.state() == {"armed": True, "timeout_ms": 250}
        wd.kick()
        assert await asyncio.wait_for(got.get(), 5) == {"op": "watchdog", "do": "kick"}
        wd.disarm()
        assert await asyncio.wait_for(got.get(), 5) == {"op": "watchdog", "do": "disarm"}
        assert device.state() == {"armed": False, "timeout_ms": None}
        assert got.empty()
    finally:
        wd.close()
        device.close()
    assert not path.exists()


@pytest.mark.parametrize("request_", [b"arm 5", b"arm 999999999", b"arm x", b"arm", b"",
                                      b"reboot", b"arm 200 300", b"\xff" * 100])
async def test_bad_requests_are_ignored_and_logged(tmp_path: Path, request_: bytes) -> None:
    got: list[dict[str, Any]] = []
    logs: list[str] = []
    device = WatchdogDevice(got.append, logs.append)
    device.datagram_received(request_, None)
    assert got == [] and device.state()["armed"] is False
    assert logs and "ignored" in logs[-1]


def test_the_sdk_refuses_what_the_guest_would_ignore(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NFVHA_WATCHDOG", raising=False)
    with pytest.raises(WatchdogError, match="no watchdog"):
        Watchdog()
    wd = Watchdog(str(tmp_path / "absent.sock"))
    try:
        with pytest.raises(ValueError):
            wd.arm(0.01)
        with pytest.raises(WatchdogError):
            wd.arm(1.0)  # nobody listens there
    finally:
        wd.close()
