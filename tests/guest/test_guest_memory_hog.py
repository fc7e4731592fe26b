"""A VM that exhausts its memory limit dies alone: the OOM killer takes the guest, its
VNFCs die with it, and a VM next to it keeps running.  Needs root (a memory cgroup)."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator

import pytest
from guest_testutil import GuestChannel, GuestLauncher, is_dead, udp_request, wait_until

from nfvha.nfvi.cgroups import CgroupDriver, detect_cgroups
from nfvha.util.runpaths import RunPaths, new_run_id

MiB = 1 << 20


@pytest.fixture
def memory_cgroup() -> Iterator[tuple[CgroupDriver, str]]:
    if os.geteuid() != 0:
        pytest.skip("needs root (a memory cgroup)")
    cg = detect_cgroups()
    run = RunPaths(new_run_id())
    rel = f"{run.tag}/vm-hog"
    cg.create(rel, memory_bytes=256 * MiB)
    try:
        yield cg, rel
    finally:
        cg.remove(run.tag)
        assert not cg.exists(run.tag)


def _join_cgroup(procs_files: list[str]) -> Callable[[], None]:
    """A preexec_fn putting the child in the cgroup before it runs (its VNFCs inherit it)."""

    def join() -> None:
        for path in procs_files:
            with open(path, "w") as f:
                f.write(str(os.getpid()))

    return join


@pytest.mark.testbed
@pytest.mark.parametrize("trigger", ["channel", "SIGUSR1"])
async def test_memory_hog_gets_only_that_vm_oom_killed(
    guests: GuestLauncher, memory_cgroup: tuple[CgroupDriver, str], trigger: str
) -> None:
    cg, rel = memory_cgroup
    hog = guests.start(
        ["gw-a", "gw-b"],
        vm_dir=guests.workdir / "vm-hog",
        preexec_fn=_join_cgroup(cg.procs_files(rel)),
    )
    neighbour = guests.start(["gw-n"], vm_dir=guests.workdir / "vm-neighbour")
    hog_vnfcs = hog.vnfcs()
    assert set(cg.pids(rel)) == {hog.proc.pid} | {r["pid"] for r in hog_vnfcs.values()}

    if trigger == "SIGUSR1":
        hog.proc.send_signal(signal.SIGUSR1)
    else:
        channel = await GuestChannel.connect(hog.socket_path)
        try:
            await channel.send({"op": "memory-hog"})
            await channel.send({"op": "ping", "n": 1})
            assert await channel.recv() == {"op": "pong", "n": 1}  # no reply to the order
        finally:
            await channel.close()

    assert hog.proc.wait(timeout=60) == -signal.SIGKILL
    assert (cg.oom_kill_count(rel) or 0) >= 1
    wait_until(
        lambda: all(is_dead(r["pid"], r["start_ticks"]) for r in hog_vnfcs.values()),
        5.0,
        "the hog VM's VNFCs to die with their guest",
    )
    assert "memory-hog: allocating 16 MiB every 10 ms" in hog.console.read_text()

    # The VM next door is untouched.
    assert neighbour.proc.poll() is None
    assert neighbour.vnfcs()["gw-n"]["state"] == "running"
    port = neighbour.ports["gw-n"]
    assert udp_request(port, b"PING") == b"PONG gw-n"
