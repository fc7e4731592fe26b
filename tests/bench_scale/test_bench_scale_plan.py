"""The deployment ``nfvha bench scale`` generates, where it injects its faults, and what
it reads from /proc."""

from __future__ import annotations

import os
import socket
from collections import Counter
from pathlib import Path

import pytest
import yaml

from nfvha.bench import procstats
from nfvha.bench.scale import crash_targets, silence_targets, simulator_count
from nfvha.bench.scaleplan import (
    HOSTS_PER_RACK,
    controller_config,
    plan_topology,
    shard,
    topology_text,
)
from nfvha.controller.config import ControllerConfig
from nfvha.model.auth import token_hash
from nfvha.model.topology import parse_topology


def test_the_generated_topology_passes_every_check_of_the_controller() -> None:
    plan = plan_topology(45, 3)
    t = parse_topology(plan.topology.model_dump(mode="json"), "generated")
    assert len(t.host_names()) == 45 and len(t.vms) == 135
    racks = [r for s in t.sites for r in s.racks]
    assert [len(r.hosts) for r in racks] == [HOSTS_PER_RACK, HOSTS_PER_RACK, 5]
    assert all(h.fence.type == "none" for _, _, h in t.hosts())
    assert all(v.vnfm == "none" for v in t.vnfs)
    # 135 VMs: 67 2N VNFs over two hosts each, and a lone VM's VNF of its own.
    assert Counter(v.redundancy for v in t.vnfs) == {"2n": 67, "none": 1}
    for v in t.vnfs:
        hosts = [t.vm(c.vm).host for c in v.components]
        assert len(set(hosts)) == len(hosts)
    # The topology file as written parses to the same deployment.
    assert parse_topology(yaml.safe_load(topology_text(t))) == t


def test_the_simulated_hosts_match_the_topology_with_one_address_each() -> None:
    plan = plan_topology(300, 2)
    assert [h.name for h in plan.hosts] == plan.topology.host_names()
    assert len({h.ip for h in plan.hosts}) == 300
    assert all(h.ip.startswith("127.77.") for h in plan.hosts)
    on_vms = {c.vm: c.name for _, c in plan.topology.components()}
    for h in plan.hosts:
        assert [v.name for v in h.vms] == [v.name for v in plan.topology.vms_on(h.name)]
        assert all(v.vnfcs == [on_vms[v.name]] for v in h.vms)
    assert set(plan.racks.values()) == {f"{s.name}/{r.name}" for s in plan.topology.sites
                                        for r in s.racks}


def test_shards_split_the_hosts_without_overlap() -> None:
    plan = plan_topology(50, 1)
    parts = [shard(plan.hosts, i, 3) for i in range(3)]
    names = [h.name for p in parts for h in p]
    assert sorted(names) == sorted(h.name for h in plan.hosts)
    assert simulator_count(1000, 0) == 2 and simulator_count(100, 0) == 1
    assert simulator_count(100, 3) == 3


def test_crashes_hit_distinct_vms_spread_over_the_hosts_never_a_silenced_one() -> None:
    plan = plan_topology(20, 3)
    silenced = silence_targets(plan, 2)
    assert len(set(silenced)) == 2
    targets = crash_targets(plan, 40, set(silenced))
    assert len(set(targets)) == 40
    assert not {h for h, _ in targets} & set(silenced)
    # Every host not silenced is hit before any is hit twice.
    first = [h for h, _ in targets[:18]]
    assert len(set(first)) == 18
    with pytest.raises(ValueError):
        crash_targets(plan, 55, set(silenced))
    with pytest.raises(ValueError):
        silence_targets(plan, 7)


def test_proc_net_udp_is_read_by_inode_with_its_drops() -> None:
    text = (
        "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt"
        "   uid  timeout inode ref pointer drops\n"
        "  123: 0100007F:1E14 00000000:0000 07 00000000:00000040 00:00000000 00000000"
        "     0        0 4242 2 0000000000000000 17\n")
    (s,) = procstats.parse_proc_net_udp(text)
    assert (s.local_ip, s.local_port, s.inode, s.drops, s.rx_queue) == \
        ("127.0.0.1", 0x1E14, 4242, 17, 0x40)


def test_this_process_own_udp_socket_and_cpu_and_memory_are_found() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        assert procstats.udp_drops(os.getpid(), ("127.0.0.1", port)) == 0
    assert procstats.udp_drops(os.getpid(), ("127.0.0.1", port)) is None
    cpu = procstats.cpu_seconds(os.getpid())
    assert cpu is not None and cpu > 0
    peak, now = procstats.peak_rss_mb(os.getpid()), procstats.rss_mb(os.getpid())
    assert peak is not None and now is not None and peak >= now > 0
    assert procstats.udp_rcvbuf_errors() is not None


def test_the_controller_config_names_every_host_s_rack_addresses_and_port(
        tmp_path: Path) -> None:
    plan = plan_topology(25, 2)
    ports = {h.name: 40_000 + i for i, h in enumerate(plan.hosts)}
    cfg = controller_config(plan, run_id="abcde", run_dir=tmp_path,
                            topology_file=tmp_path / "topology.yaml", listen_ip="127.0.0.1",
                            port=7700, api_port=7701, amf_port=7702, probe_ports=ports,
                            admin_token="secret")
    assert ControllerConfig.model_validate_json(cfg.model_dump_json()) == cfg
    by_name = {h.name: h for h in cfg.hosts}
    for h in plan.hosts:
        e = by_name[h.name]
        assert (e.rack, e.mgmt_ip, e.probe_ip, e.probe_port) == \
            (plan.racks[h.name], h.ip, h.ip, ports[h.name])
        assert e.fence.type == "none"
    assert {e.rack for e in cfg.hosts} == {"s01/s01-r01", "s01/s01-r02"}
    (token,) = cfg.auth.tokens
    assert (token.role, token.sha256) == ("admin", token_hash("secret"))
    with pytest.raises(ValueError, match="no UDP port"):
        controller_config(plan, run_id="abcde", run_dir=tmp_path,
                          topology_file=tmp_path / "t.yaml", listen_ip="127.0.0.1", port=1,
                          api_port=2, amf_port=3, probe_ports={}, admin_token="x")
