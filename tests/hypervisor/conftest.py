"""Fixtures for the hypervisor driver tests. Everything a test creates is removed
afterwards, even when it fails: the run fixture tears the whole run down by its tag."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
from driverkit import HOST, agent_config, libvirt_missing

from nfvha.agent.hypervisor.contract import HypervisorDriver
from nfvha.agent.hypervisor.process import ProcessDriver
from nfvha.nfvi.cgroups import CgroupDriver, detect_cgroups
from nfvha.nfvi.cleanup import teardown_run
from nfvha.nfvi.fabric import list_fabric_objects
from nfvha.util.runpaths import RunPaths, new_run_id


def _require_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root (network namespaces, cgroups)")


@pytest.fixture
def run(monkeypatch: pytest.MonkeyPatch) -> Iterator[RunPaths]:
    """A fresh run under /tmp (a libvirtd's sockets need short paths); torn down
    completely afterwards, as ``nfvha down`` would."""
    _require_root()
    monkeypatch.delenv("NFVHA_RUN_ROOT", raising=False)
    paths = RunPaths(new_run_id())
    paths.root.mkdir(parents=True)
    try:
        yield paths
    finally:
        teardown_run(paths.run_id)
        netnses, links = list_fabric_objects(paths.run_id)
        assert not netnses and not links, f"left behind: {netnses + links}"
        assert not detect_cgroups().exists(paths.tag)
        assert not paths.root.exists()


@pytest.fixture
def cg() -> CgroupDriver:
    _require_root()
    return detect_cgroups()


@pytest.fixture(params=["process", "libvirt"])
async def driver(request: pytest.FixtureRequest, run: RunPaths, cg: CgroupDriver
                 ) -> AsyncIterator[HypervisorDriver]:
    run.host_dir(HOST).mkdir(parents=True, exist_ok=True)
    if request.param == "process":
        yield ProcessDriver(agent_config(run), run, cg, None)
        return
    why = libvirt_missing()
    if why:
        pytest.skip(f"libvirt driver: {why}")
    from nfvha.agent.hypervisor.libvirt import LibvirtDriver
    from nfvha.nfvi.fabric import create_fabric, plan_fabric
    from nfvha.nfvi.libvirtd import LibvirtdPaths, start_libvirtd, stop_libvirtd

    plan = plan_fabric(run.run_id, [HOST], [("vm1", HOST)], n_vips=0)
    create_fabric(plan)
    # Its own reaper above it: no host supervisor here to reap the QEMUs it daemonizes.
    daemon = await start_libvirtd(LibvirtdPaths.for_host(run, HOST),
                                  netns=plan.host(HOST).netns, subreaper=True)
    lv = LibvirtDriver(agent_config(run, plan.to_json()), run, plan)
    await lv.start()
    try:
        yield lv
    finally:
        await lv.close()
        await stop_libvirtd(daemon)
