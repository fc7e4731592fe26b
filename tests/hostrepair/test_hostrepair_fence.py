"""Fence drivers (ADR 0011): the fence-agent command protocol against a fake agent,
verification of "off" by status, the status cache for the liveness check, and the
validation of fence specs in a topology."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from hostrepair_testutil import THREE_RACKS, FakeAgentDir

from nfvha.controller.fencing import Fencing
from nfvha.model.settings import Settings
from nfvha.model.topology import FenceSpec, TopologyError, parse_topology
from nfvha.nfvi.fence import AgentFence, FenceError, encode_options, fence_driver, resolve_agent
from nfvha.nfvi.fence_nfvha import main as fence_nfvha_main
from nfvha.nfvi.fence_nfvha import parse_stdin
from nfvha.util.clock import ManualClock

pytestmark = pytest.mark.req("REC-1")


@pytest.fixture
def fake(tmp_path: Path) -> FakeAgentDir:
    return FakeAgentDir(tmp_path)


def driver(fake: FakeAgentDir, timeout_s: float = 10.0, **options: str | int | bool
           ) -> AgentFence:
    return AgentFence(str(fake.agent), "h1", options, timeout_s=timeout_s)


def test_options_go_on_stdin_one_per_line_with_ours_last() -> None:
    text = encode_options("off", "h1", {"ipaddr": "10.9.9.9", "lanplus": True, "delay": 0})
    assert text.splitlines() == ["ipaddr=10.9.9.9", "lanplus=1", "delay=0", "plug=h1",
                                 "nodename=h1", "action=off"]
    # A plug (or port) of the device's own numbering is kept, not replaced by the host.
    assert "plug=h1" not in encode_options("status", "h1", {"port": "7"})
    with pytest.raises(ValueError):
        encode_options("off", "h1", {"passwd": "a\nb"})


async def test_status_exit_codes_follow_the_fence_agent_api(fake: FakeAgentDir) -> None:
    d = driver(fake, ipaddr="pdu1")
    assert await d.status() == "on"  # exit 0
    fake.set(power="off")
    assert await d.status() == "off"  # exit 2
    fake.set(fail=["status"])
    with pytest.raises(FenceError, match=r"status unknown \(exit 1\).*device refused status"):
        await d.status()
    # What the agent read: the device options, then the node and the action.
    assert fake.calls()[0] == ["ipaddr=pdu1", "plug=h1", "nodename=h1", "action=status"]


async def test_off_and_on_change_the_power_and_failures_raise(fake: FakeAgentDir) -> None:
    d = driver(fake)
    await d.off()
    assert fake.device()["power"] == "off"
    await d.on()
    assert fake.device()["power"] == "on"
    fake.set(fail=["off"])
    with pytest.raises(FenceError, match=r"off failed \(exit 1\)"):
        await d.off()
    assert fake.device()["power"] == "on"


async def test_a_run_past_its_time_limit_is_killed_and_is_a_failure(
        fake: FakeAgentDir) -> None:
    fake.set(sleep=30)
    d = driver(fake, timeout_s=0.3)
    t0 = time.monotonic()
    with pytest.raises(FenceError, match=r"longer than 0\.3 s"):
        await d.off()
    assert time.monotonic() - t0 < 5.0
    assert fake.device()["power"] == "on"  # killed before it did anything


def test_agent_is_found_on_the_search_path_or_refused(fake: FakeAgentDir) -> None:
    assert resolve_agent("fence_fake", [str(fake.root)]) == str(fake.agent)
    with pytest.raises(FenceError, match="fence_nothere not found"):
        resolve_agent("fence_nothere", [str(fake.root)])
    assert fence_driver(FenceSpec(type="none"), "h1") is None
    assert fence_driver(FenceSpec(type="local"), "h1") is None  # loopback: no device


async def test_fence_off_waits_until_status_reports_off(fake: FakeAgentDir) -> None:
    # The device acknowledges "off" but still reports "on" twice: fencing is done
    # only when status says off (REC-1: nothing restarts elsewhere before that).
    fake.set(stay_on=2)
    s = Settings(fence_verify_interval_ms=10, fence_verify_timeout_s=5)
    fencing = Fencing({"h1": driver(fake)}, s, ManualClock())
    assert await fencing.fence_off("h1") == driver(fake).description
    actions = [c[-1] for c in fake.calls()]
    assert actions == ["action=off", "action=status", "action=status", "action=status"]


async def test_fence_off_that_never_verifies_is_a_failure(fake: FakeAgentDir) -> None:
    fake.set(stay_on=1000)
    s = Settings(fence_verify_interval_ms=10, fence_verify_timeout_s=0.3)
    fencing = Fencing({"h1": driver(fake)}, s, ManualClock())
    with pytest.raises(FenceError, match="still reports power on"):
        await fencing.fence_off("h1")
    with pytest.raises(FenceError, match="no fence device"):
        await fencing.fence_off("h2")


async def test_liveness_status_of_an_agent_comes_from_a_cache(fake: FakeAgentDir) -> None:
    clock = ManualClock()
    fencing = Fencing({"h1": driver(fake)}, Settings(fence_status_cache_ms=300), clock)
    fake.set(power="off")
    assert fencing.power_status("h1") is None  # never asked yet: a query starts
    assert fencing.power_status("h2") is None  # no device at all
    for _ in range(200):
        if fencing.power_status("h1") == "off":
            break
        await asyncio.sleep(0.02)
    assert fencing.power_status("h1") == "off"
    n = len(fake.calls())
    fencing.power_status("h1")
    assert len(fake.calls()) == n  # fresh: no new query
    await fencing.close()


def test_fence_specs_are_validated_with_their_path() -> None:
    def problems(fence: object) -> list[str]:
        data = {**THREE_RACKS, "sites": [{"name": "s", "racks": [
            {"name": "r", "hosts": [{"name": "h1", "fence": fence}]}]}],
            "vms": [], "vnfs": []}
        with pytest.raises(TopologyError) as e:
            parse_topology(data, "t.yaml")
        return e.value.problems

    where = "sites[0].racks[0].hosts[0].fence"
    assert problems({"type": "agent"}) == [
        f"{where}: fence type 'agent' needs 'agent' (e.g. fence_ipmilan)"]
    assert problems({"type": "agent", "agent": "rm -rf"}) == [
        f"{where}: fence agent 'rm -rf': not a fence_* executable name or an absolute"
        " path to one"]
    assert problems({"type": "agent", "agent": "fence_x", "options": {"action": "on"}}) == [
        f"{where}: fence option 'action' is set by nfvha itself"]
    assert problems({"type": "agent", "agent": "fence_x", "options": {"Bad Key": 1}}) == [
        f"{where}: fence option 'Bad Key': lowercase letters, digits and _"]
    assert problems({"type": "local", "agent": "fence_x"}) == [
        f"{where}: fence type 'local' takes no 'agent' or 'options'"]
    assert problems({"type": "ipmi"})[0].startswith(f"{where}.type:")
    ok = FenceSpec.model_validate({"type": "agent", "agent": "/usr/sbin/fence_ipmilan",
                                   "options": {"ipaddr": "198.18.0.9", "lanplus": True},
                                   "timeout_s": 5})
    assert ok.options == {"ipaddr": "198.18.0.9", "lanplus": True}


def test_fence_nfvha_reads_the_api_input_and_refuses_without_a_run(
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    assert parse_stdin("# comment\naction=off\n plug = h1\nplug=h2\nnoise\n") == {
        "action": "off", "plug": "h2"}
    monkeypatch.delenv("NFVHA_RUN", raising=False)
    assert fence_nfvha_main(["-o", "status", "-n", "h1"]) == 1
    assert "no run" in capsys.readouterr().err
    assert fence_nfvha_main(["-o", "metadata"]) == 0
    assert 'name="fence_nfvha"' in capsys.readouterr().out
