"""``vnfm: own`` in the topology and on the test bed: validated, configured with an AM
of its own that the VNF's components register with, and left alone by the controller's
generic VNFM. (Configuration only: the running test bed is test_vnfam_testbed.py.)"""

from __future__ import annotations

import stat
from pathlib import Path
from typing import Any

import pytest

from nfvha.amf.own.config import VnfAmConfig
from nfvha.controller.config import ControllerConfig
from nfvha.model.topology import TopologyError, parse_topology
from nfvha.testbed.deploy import Testbed


def topology(gw_vnfm: str = "own") -> dict[str, Any]:
    return {
        "name": "t",
        "sites": [{"name": "s", "racks": [{"name": "r1", "hosts": [{"name": "h1"}]},
                                          {"name": "r2", "hosts": [{"name": "h2"}]}]}],
        "vms": [{"name": "vm1", "host": "h1"}, {"name": "vm2", "host": "h2"}],
        "vnfs": [
            {"name": "gw", "redundancy": "2n", "stateful": True, "state": "sync",
             "vnfm": gw_vnfm, "service_address": {"kind": "vip", "port": 7000},
             "components": [{"name": "gw-a", "vm": "vm1", "port": 7000},
                            {"name": "gw-b", "vm": "vm2", "port": 7000}]},
            {"name": "db", "redundancy": "none", "stateful": False,
             "components": [{"name": "db-1", "vm": "vm1", "port": 7200}]},
        ],
    }


def test_vnfm_own_is_a_manager_and_nothing_else_is() -> None:
    assert parse_topology(topology("own")).vnf("gw").vnfm == "own"
    with pytest.raises(TopologyError, match=r"vnfs\[0\]\.vnfm"):
        parse_topology(topology("itself"))


@pytest.mark.parametrize(("lb", "web"), [("own", "own"), ("generic", "own"),
                                         ("own", "generic")])
def test_a_load_balancer_and_its_members_cannot_have_an_own_am(lb: str, web: str) -> None:
    data = topology()
    data["vms"].append({"name": "vm3", "host": "h1"})
    data["vnfs"] = [
        {"name": "web", "redundancy": "n-way-active", "stateful": False, "vnfm": web,
         "service_address": {"kind": "lb", "port": 7300},
         "components": [{"name": "web-1", "vm": "vm1", "port": 7300},
                        {"name": "web-2", "vm": "vm2", "port": 7300}]},
        {"name": "lb", "redundancy": "2n", "stateful": False, "balances": "web", "vnfm": lb,
         "service_address": {"kind": "vip", "port": 7300},
         "components": [{"name": "lb-a", "vm": "vm3", "program": "lb", "port": 7300},
                        {"name": "lb-b", "vm": "vm2", "program": "lb", "port": 7301}]},
    ]
    with pytest.raises(TopologyError, match=r"vnfs\[1\]\.vnfm: a load balancer and 'web'"):
        parse_topology(data)


def test_the_test_bed_gives_an_own_vnf_its_own_am(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NFVHA_RUN_ROOT", str(tmp_path))
    tb = Testbed(parse_topology(topology()))
    ctl, agents = tb.write_configs()
    # The controller's generic VNFM manages db only.
    loaded = ControllerConfig.load(tb.run.controller_dir / "controller.json")
    assert loaded.amf is not None and ctl.amf is not None
    assert [c.name for c in loaded.amf.components] == ["db-1"]
    # gw's own AM: its components, its VIP, an operator token of its own, its own db.
    cfg = VnfAmConfig.load(tb.own_am_dir("gw") / "vnf-am.json")
    assert (cfg.vnf, cfg.vim_url) == ("gw", tb.api_url)
    assert [c.name for c in cfg.amf.components] == ["gw-a", "gw-b"]
    assert cfg.amf.port not in (ctl.amf.port, 0)
    assert cfg.db_path.parent == tb.own_am_dir("gw")
    assert cfg.token_file.read_text() == tb.tokens["operator"]
    assert stat.S_IMODE(cfg.token_file.stat().st_mode) == 0o600
    assert cfg.amf.vips == {k: v for k, v in ctl.amf.vips.items() if k == "gw"}
    # The components register with it, not with the generic VNFM.
    argv = {v.name: v.argv for a in agents.values() for vm in a.vms for v in vm.vnfcs}
    own, generic = f"{cfg.amf.listen_ip}:{cfg.amf.port}", f"{ctl.amf.listen_ip}:{ctl.amf.port}"
    for name in ("gw-a", "gw-b"):
        assert argv[name][argv[name].index("--am") + 1] == own
    assert argv["db-1"][argv["db-1"].index("--am") + 1] == generic
