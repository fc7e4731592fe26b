"""The deployment model: the bundled default, and every documented problem message.

Each semantic check is exercised with a small dict that is valid except for one
thing, and the test asserts on the exact problem line (path + message), because
those lines are what an operator reads when `nfvha up` refuses a file.
"""

from __future__ import annotations

import copy
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pydantic
import pytest
import yaml

from nfvha.model.settings import Settings
from nfvha.model.topology import (
    Topology,
    TopologyError,
    default_topology_path,
    format_loc,
    load_topology,
    parse_topology,
)

# A mutation edits the dict in place; lambdas may return a tuple of their edits.
Mutation = Callable[[dict[str, Any]], object]


@pytest.fixture
def tmp_dir() -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="nfvha-test-") as d:
        yield Path(d)


def base() -> dict[str, Any]:
    """A minimal valid topology: one site, racks r1 (h1, h2) and r2 (h3), one 2N VNF."""
    return {
        "name": "t",
        "sites": [
            {
                "name": "s1",
                "racks": [
                    {"name": "r1", "hosts": [{"name": "h1"}, {"name": "h2"}]},
                    {"name": "r2", "hosts": [{"name": "h3"}]},
                ],
            }
        ],
        "vms": [
            {"name": "vm1", "host": "h1"},
            {"name": "vm2", "host": "h2"},
            {"name": "vm3", "host": "h3"},
        ],
        "vnfs": [
            {
                "name": "a",
                "redundancy": "2n",
                "stateful": True,
                "state": "sync",
                "components": [{"name": "a-1", "vm": "vm1"}, {"name": "a-2", "vm": "vm2"}],
            }
        ],
    }


def problems_of(data: Any) -> list[str]:
    with pytest.raises(TopologyError) as ei:
        parse_topology(data)
    return ei.value.problems


def mutated(mutation: Mutation) -> dict[str, Any]:
    d = copy.deepcopy(base())
    mutation(d)
    return d


# -- the bundled default ----------------------------------------------------------


@pytest.fixture(scope="module")
def default() -> Topology:
    return load_topology(default_topology_path())


def test_default_topology_file_is_bundled() -> None:
    path = default_topology_path()
    assert path.is_file()
    assert path.name == "default.yaml"


def test_default_has_three_hosts_in_two_racks(default: Topology) -> None:
    assert len(default.sites) == 1
    racks = default.sites[0].racks
    assert len(racks) == 2
    assert sorted(default.host_names()) == ["host1", "host2", "host3"]
    assert {r.name: [h.name for h in r.hosts] for r in racks} == {
        "rack1": ["host1", "host2"],
        "rack2": ["host3"],
    }


def test_default_has_stateful_2n_vnf_with_vip(default: Topology) -> None:
    vnfs = [v for v in default.vnfs if v.redundancy == "2n" and v.stateful]
    assert len(vnfs) == 1
    gw = vnfs[0]
    assert gw.stateful
    assert gw.state in ("sync", "checkpoint")
    assert gw.service_address is not None and gw.service_address.kind == "vip"
    assert len(gw.components) == 2


def test_default_has_stateless_n_plus_m_vnf_with_lb(default: Topology) -> None:
    vnfs = [v for v in default.vnfs if v.redundancy == "n+m"]
    assert len(vnfs) == 1
    web = vnfs[0]
    assert not web.stateful
    assert (web.active, web.spare) == (2, 1)
    assert len(web.components) == 3
    assert web.service_address is not None and web.service_address.kind == "lb"


def test_default_has_stateful_unredundant_vnf_with_checkpoint(default: Topology) -> None:
    vnfs = [v for v in default.vnfs if v.redundancy == "none" and v.stateful]
    assert len(vnfs) == 1
    db = vnfs[0]
    assert db.stateful
    assert db.state == "checkpoint"
    assert len(db.components) == 1


def test_default_views_are_consistent(default: Topology) -> None:
    for vm in default.vms:
        assert vm.host in default.host_names()
        assert default.vm(vm.name) is vm
    for _, comp in default.components():
        assert comp.vm in {v.name for v in default.vms}
    assert {v.name for v in default.vms_on("host1")} == {"gw-vm1", "web-vm1", "lb-vm1"}
    assert [c.name for _, c in default.components_on("db-vm1")] == ["db-1"]
    with pytest.raises(KeyError):
        default.host("nope")
    with pytest.raises(KeyError):
        default.vm("nope")


def test_default_settings_derived_times(default: Topology) -> None:
    assert default.settings.host_suspect_after_ms == 300
    assert default.settings.guest_hang_after_ms == 300


def test_base_fixture_is_valid() -> None:
    t = parse_topology(base())
    assert t.name == "t"


# -- semantic problems, one at a time -----------------------------------------------


def _second_vnf(d: dict[str, Any], **vnf: Any) -> None:
    d["vnfs"].append({"redundancy": "none", "stateful": False, **vnf})


SEMANTIC_CASES: list[tuple[str, Mutation, list[str]]] = [
    (
        "duplicate host",
        lambda d: d["sites"][0]["racks"][1]["hosts"].append({"name": "h1"}),
        ["sites[0].racks[1].hosts[1].name: duplicate host 'h1'"],
    ),
    (
        "duplicate process",
        lambda d: d["sites"][0]["racks"][0]["hosts"][0].update(
            processes=[{"name": "vs"}, {"name": "vs", "port": 6001}]
        ),
        ["sites[0].racks[0].hosts[0].processes: duplicate process 'vs'"],
    ),
    (
        "duplicate site",
        lambda d: d["sites"].append(
            {"name": "s1", "racks": [{"name": "r9", "hosts": [{"name": "h9"}]}]}
        ),
        ["sites: duplicate site 's1'"],
    ),
    (
        "duplicate rack",
        lambda d: d["sites"].append(
            {"name": "s2", "racks": [{"name": "r1", "hosts": [{"name": "h9"}]}]}
        ),
        ["sites: duplicate rack 'r1'"],
    ),
    (
        "duplicate vm",
        lambda d: d["vms"].append({"name": "vm1", "host": "h3"}),
        ["vms[3].name: duplicate VM 'vm1'"],
    ),
    (
        "vm on unknown host",
        lambda d: d["vms"][1].update(host="h9"),
        ["vms[1].host: no host named 'h9'"],
    ),
    (
        "duplicate vnf",
        lambda d: _second_vnf(d, name="a", components=[{"name": "b-1", "vm": "vm3"}]),
        ["vnfs: duplicate VNF 'a'"],
    ),
    (
        "duplicate component",
        lambda d: _second_vnf(d, name="b", components=[{"name": "a-1", "vm": "vm3"}]),
        ["vnfs[1].components[0].name: duplicate component 'a-1'"],
    ),
    (
        "component on unknown vm",
        lambda d: _second_vnf(d, name="b", components=[{"name": "b-1", "vm": "vm9"}]),
        ["vnfs[1].components[0].vm: no VM named 'vm9'"],
    ),
    (
        "port used twice in a vm",
        lambda d: _second_vnf(d, name="b", components=[{"name": "b-1", "vm": "vm1"}]),
        ["vnfs[1].components[0].port: port 7000 on VM 'vm1' is already used by 'a-1'"],
    ),
    (
        "2n with three components",
        lambda d: d["vnfs"][0]["components"].append({"name": "a-3", "vm": "vm3"}),
        ["vnfs[0].components: redundancy 2n needs exactly 2 components, got 3"],
    ),
    (
        "2n with one component",
        lambda d: d["vnfs"][0]["components"].pop(),
        ["vnfs[0].components: redundancy 2n needs exactly 2 components, got 1"],
    ),
    (
        "none with two components",
        lambda d: d["vnfs"][0].update(redundancy="none", state="checkpoint"),
        ["vnfs[0].components: redundancy none needs exactly 1 component, got 2"],
    ),
    (
        "n-way with one component",
        lambda d: (d["vnfs"][0].update(redundancy="n-way"), d["vnfs"][0]["components"].pop()),
        ["vnfs[0].components: redundancy n-way needs at least 2 components, got 1"],
    ),
    (
        "n-way-active with one component",
        lambda d: (
            d["vnfs"][0].update(redundancy="n-way-active"),
            d["vnfs"][0]["components"].pop(),
        ),
        ["vnfs[0].components: redundancy n-way-active needs at least 2 components, got 1"],
    ),
    (
        "n+m without active/spare",
        lambda d: d["vnfs"][0].update(redundancy="n+m"),
        ["vnfs[0]: redundancy n+m needs 'active' (N) and 'spare' (M)"],
    ),
    (
        "n+m with only active",
        lambda d: d["vnfs"][0].update(redundancy="n+m", active=1),
        ["vnfs[0]: redundancy n+m needs 'active' (N) and 'spare' (M)"],
    ),
    (
        "n+m count mismatch",
        lambda d: d["vnfs"][0].update(redundancy="n+m", active=1, spare=2),
        ["vnfs[0].components: n+m with active=1 spare=2 needs 3 components, got 2"],
    ),
    (
        "active/spare on 2n",
        lambda d: d["vnfs"][0].update(spare=1),
        ["vnfs[0]: 'active'/'spare' apply only to redundancy n+m"],
    ),
    (
        "stateful without state keeping",
        lambda d: d["vnfs"][0].update(state="none"),
        ["vnfs[0].state: a stateful VNF must keep its state ('sync' or 'checkpoint')"],
    ),
    (
        "stateless with state keeping",
        lambda d: d["vnfs"][0].update(stateful=False, state="checkpoint"),
        ["vnfs[0].state: a stateless VNF has no state to keep (use 'none')"],
    ),
    (
        "sync without a standby",
        lambda d: (d["vnfs"][0].update(redundancy="none"), d["vnfs"][0]["components"].pop()),
        ["vnfs[0].state: 'sync' needs a standby; without redundancy use 'checkpoint'"],
    ),
    (
        "vip on n-way-active",
        lambda d: d["vnfs"][0].update(
            redundancy="n-way-active", service_address={"kind": "vip", "port": 7000}
        ),
        ["vnfs[0].service_address.kind: several actives cannot share a VIP; use 'lb'"],
    ),
    (
        "vip on n+m with two actives",
        lambda d: (
            d["vnfs"][0].update(
                redundancy="n+m",
                active=2,
                spare=1,
                service_address={"kind": "vip", "port": 7000},
            ),
            d["vnfs"][0]["components"].append({"name": "a-3", "vm": "vm3"}),
        ),
        ["vnfs[0].service_address.kind: several actives cannot share a VIP; use 'lb'"],
    ),
    (
        "address outside the fabric",
        lambda d: d["vnfs"][0].update(
            service_address={"kind": "vip", "port": 7000, "address": "10.0.0.1"}
        ),
        ["vnfs[0].service_address.address: 10.0.0.1 is outside 198.18.0.0/15"],
    ),
]


@pytest.mark.parametrize(
    ("mutation", "expected"),
    [pytest.param(m, e, id=name) for name, m, e in SEMANTIC_CASES],
)
def test_semantic_problem_message(mutation: Mutation, expected: list[str]) -> None:
    assert problems_of(mutated(mutation)) == expected


VALID_VARIANTS: list[tuple[str, Mutation]] = [
    ("vip on n+m with one active", lambda d: d["vnfs"][0].update(
        redundancy="n+m", active=1, spare=1, service_address={"kind": "vip", "port": 7000})),
    ("lb on n-way-active", lambda d: d["vnfs"][0].update(
        redundancy="n-way-active", service_address={"kind": "lb", "port": 7000})),
    ("address inside the fabric", lambda d: d["vnfs"][0].update(
        service_address={"kind": "vip", "port": 7000, "address": "198.19.255.1"})),
    ("same port on different vms", lambda d: _second_vnf(
        d, name="b", components=[{"name": "b-1", "vm": "vm3"}])),
    ("different ports on one vm", lambda d: _second_vnf(
        d, name="b", components=[{"name": "b-1", "vm": "vm1", "port": 7001}])),
    ("stateful checkpoint without redundancy", lambda d: (
        d["vnfs"][0].update(redundancy="none", state="checkpoint"),
        d["vnfs"][0]["components"].pop())),
]


@pytest.mark.parametrize(
    "mutation", [pytest.param(m, id=name) for name, m in VALID_VARIANTS]
)
def test_valid_variants_are_accepted(mutation: Mutation) -> None:
    parse_topology(mutated(mutation))


def test_several_problems_are_reported_at_once() -> None:
    def break_three_things(d: dict[str, Any]) -> None:
        d["vms"][2]["host"] = "h9"
        d["vnfs"][0]["components"].append({"name": "a-3", "vm": "vm3"})
        _second_vnf(d, name="b", components=[{"name": "b-1", "vm": "vm9"}])

    problems = problems_of(mutated(break_three_things))
    assert problems == [
        "vms[2].host: no host named 'h9'",
        "vnfs[0].components: redundancy 2n needs exactly 2 components, got 3",
        "vnfs[1].components[0].vm: no VM named 'vm9'",
    ]


def test_error_text_lists_every_problem() -> None:
    d = mutated(lambda d: (d["vms"][0].update(host="h8"), d["vms"][1].update(host="h9")))
    with pytest.raises(TopologyError) as ei:
        parse_topology(d, "my.yaml")
    err = ei.value
    assert err.source == "my.yaml"
    text = str(err)
    assert text.startswith("my.yaml: 2 problem(s)\n")
    assert "  vms[0].host: no host named 'h8'" in text
    assert "  vms[1].host: no host named 'h9'" in text


# -- anti-affinity ------------------------------------------------------------------


@pytest.mark.req("VNFHA-2")
def test_anti_affinity_host_violation() -> None:
    d = mutated(lambda d: d["vms"][1].update(host="h1"))
    assert problems_of(d) == [
        "vnfs[0].components[1].vm: anti-affinity 'host' is violated: 'a-2' and 'a-1' are"
        " both in host 'h1'"
    ]


@pytest.mark.req("VNFHA-2")
def test_anti_affinity_rack_violation() -> None:
    # h1 and h2 are different hosts but share rack r1.
    d = mutated(lambda d: d["vnfs"][0].update(anti_affinity="rack"))
    assert problems_of(d) == [
        "vnfs[0].components[1].vm: anti-affinity 'rack' is violated: 'a-2' and 'a-1' are"
        " both in rack 's1/r1'"
    ]


@pytest.mark.req("VNFHA-2")
def test_anti_affinity_rack_satisfied_across_racks() -> None:
    d = mutated(lambda d: (
        d["vnfs"][0].update(anti_affinity="rack"),
        d["vnfs"][0]["components"][1].update(vm="vm3"),
    ))
    parse_topology(d)


@pytest.mark.req("VNFHA-2")
def test_anti_affinity_site_violation() -> None:
    # h1 (rack r1) and h3 (rack r2): different racks, same site.
    d = mutated(lambda d: (
        d["vnfs"][0].update(anti_affinity="site"),
        d["vnfs"][0]["components"][1].update(vm="vm3"),
    ))
    assert problems_of(d) == [
        "vnfs[0].components[1].vm: anti-affinity 'site' is violated: 'a-2' and 'a-1' are"
        " both in site 's1'"
    ]


@pytest.mark.req("VNFHA-2")
def test_anti_affinity_site_satisfied_across_sites() -> None:
    def two_sites(d: dict[str, Any]) -> None:
        d["sites"].append({"name": "s2", "racks": [{"name": "r9", "hosts": [{"name": "h9"}]}]})
        d["vms"][1]["host"] = "h9"
        d["vnfs"][0]["anti_affinity"] = "site"

    parse_topology(mutated(two_sites))


@pytest.mark.req("VNFHA-2")
def test_anti_affinity_reports_every_colliding_pair() -> None:
    def three_on_one_host(d: dict[str, Any]) -> None:
        d["vms"][1]["host"] = "h1"
        d["vms"][2]["host"] = "h1"
        d["vnfs"][0]["redundancy"] = "n-way"
        d["vnfs"][0]["components"].append({"name": "a-3", "vm": "vm3"})

    assert problems_of(mutated(three_on_one_host)) == [
        "vnfs[0].components[1].vm: anti-affinity 'host' is violated: 'a-2' and 'a-1' are"
        " both in host 'h1'",
        "vnfs[0].components[2].vm: anti-affinity 'host' is violated: 'a-3' and 'a-1' are"
        " both in host 'h1'",
        "vnfs[0].components[2].vm: anti-affinity 'host' is violated: 'a-3' and 'a-2' are"
        " both in host 'h1'",
    ]


@pytest.mark.req("VNFHA-2")
def test_anti_affinity_none_allows_colocation() -> None:
    d = mutated(lambda d: (
        d["vms"][1].update(host="h1"),
        d["vnfs"][0].update(anti_affinity="none"),
    ))
    parse_topology(d)


@pytest.mark.req("VNFHA-2")
def test_default_topology_respects_anti_affinity(default: Topology) -> None:
    # Components of each redundant VNF sit on distinct hosts; gw (rack anti-affinity)
    # on distinct racks.
    rack_of = {h.name: r.name for _, r, h in default.hosts()}
    for vnf in default.vnfs:
        if vnf.redundancy == "none":
            continue
        hosts = [default.vm(c.vm).host for c in vnf.components]
        assert len(set(hosts)) == len(hosts), vnf.name
        if vnf.anti_affinity == "rack":
            racks = [rack_of[h] for h in hosts]
            assert len(set(racks)) == len(racks), vnf.name


# -- structural problems (pydantic) ---------------------------------------------------


def test_not_a_mapping() -> None:
    assert problems_of([1, 2]) == ["(top level): expected a mapping"]
    assert problems_of(None) == ["(top level): expected a mapping"]


def test_unknown_fields_are_reported_with_their_path() -> None:
    d = mutated(lambda d: (
        d.update(colour="blue"),
        d["vnfs"][0]["components"][0].update(colour="red"),
    ))
    assert sorted(problems_of(d)) == [
        "colour: unknown field",
        "vnfs[0].components[0].colour: unknown field",
    ]


def test_missing_fields_are_reported_with_their_path() -> None:
    d = mutated(lambda d: (d.pop("sites"), d["vnfs"][0].pop("redundancy")))
    assert sorted(problems_of(d)) == [
        "sites: required field is missing",
        "vnfs[0].redundancy: required field is missing",
    ]


def test_bad_values_are_reported_with_their_path() -> None:
    d = mutated(lambda d: (
        d["vnfs"][0].update(redundancy="3n"),
        d["vms"][0].update(memory_mb=1),
        d.update(name="Bad_Name"),
    ))
    problems = problems_of(d)
    assert len(problems) == 3
    assert any(p.startswith("vnfs[0].redundancy: Input should be '2n'") for p in problems)
    assert any(p.startswith("vms[0].memory_mb: Input should be greater than") for p in problems)
    assert any(p.startswith("name: String should match pattern") for p in problems)


def test_empty_sites_list_is_rejected() -> None:
    assert problems_of(mutated(lambda d: d.update(sites=[]))) == [
        "sites: List should have at least 1 item after validation, not 0"
    ]


def test_format_loc() -> None:
    assert format_loc(["vnfs", 1, "components", 0, "vm"]) == "vnfs[1].components[0].vm"
    assert format_loc([]) == "(top level)"
    assert format_loc(["settings"]) == "settings"


# -- settings cross-checks ------------------------------------------------------------


SETTINGS_CASES: list[tuple[dict[str, Any], str]] = [
    (
        {"agent_restart_backoff_initial_s": 10, "agent_restart_backoff_max_s": 5},
        "agent_restart_backoff_initial_s must be <= agent_restart_backoff_max_s",
    ),
    (
        {"process_restart_backoff_initial_s": 20, "process_restart_backoff_max_s": 10},
        "process_restart_backoff_initial_s must be <= process_restart_backoff_max_s",
    ),
    (
        {"reconnect_backoff_initial_s": 1.0, "reconnect_backoff_max_s": 0.5},
        "reconnect_backoff_initial_s must be <= reconnect_backoff_max_s",
    ),
    (
        {"sensor_poll_interval_s": 20, "condition_report_interval_s": 10},
        "sensor_poll_interval_s must be <= condition_report_interval_s",
    ),
    (
        {"host_confirm_retry_ms": 301},  # suspect after 100 ms x 3
        "host_confirm_retry_ms must be <= host_heartbeat_interval_ms x host_heartbeat_misses",
    ),
]


@pytest.mark.parametrize(("settings", "message"), SETTINGS_CASES)
def test_settings_cross_check_in_topology(settings: dict[str, Any], message: str) -> None:
    d = mutated(lambda d: d.update(settings=settings))
    assert problems_of(d) == [f"settings: {message}"]


@pytest.mark.parametrize(("settings", "message"), SETTINGS_CASES)
def test_settings_cross_check_direct(settings: dict[str, Any], message: str) -> None:
    with pytest.raises(pydantic.ValidationError, match=message):
        Settings(**settings)


def test_settings_boundaries_are_accepted() -> None:
    s = Settings(
        agent_restart_backoff_initial_s=5,
        agent_restart_backoff_max_s=5,
        host_confirm_retry_ms=300,
    )
    assert s.host_suspect_after_ms == 300


def test_settings_several_cross_check_problems_in_one_line() -> None:
    d = mutated(lambda d: d.update(settings={
        "agent_restart_backoff_initial_s": 10,
        "agent_restart_backoff_max_s": 5,
        "reconnect_backoff_initial_s": 1.0,
        "reconnect_backoff_max_s": 0.5,
    }))
    assert problems_of(d) == [
        "settings: agent_restart_backoff_initial_s must be <= agent_restart_backoff_max_s;"
        " reconnect_backoff_initial_s must be <= reconnect_backoff_max_s"
    ]


def test_settings_unknown_field() -> None:
    d = mutated(lambda d: d.update(settings={"host_heartbeat_intervall_ms": 50}))
    assert problems_of(d) == ["settings.host_heartbeat_intervall_ms: unknown field"]


def test_settings_out_of_range() -> None:
    d = mutated(lambda d: d.update(settings={"host_heartbeat_misses": 1}))
    assert problems_of(d) == [
        "settings.host_heartbeat_misses: Input should be greater than or equal to 2"
    ]


# -- files ----------------------------------------------------------------------------


def test_load_valid_file(tmp_dir: Path) -> None:
    path = tmp_dir / "topo.yaml"
    path.write_text(yaml.safe_dump(base()))
    t = load_topology(path)
    assert t.host_names() == ["h1", "h2", "h3"]


def test_load_reports_problems_with_file_as_source(tmp_dir: Path) -> None:
    path = tmp_dir / "topo.yaml"
    path.write_text(yaml.safe_dump(mutated(lambda d: d["vms"][0].update(host="h9"))))
    with pytest.raises(TopologyError) as ei:
        load_topology(path)
    assert ei.value.source == str(path)
    assert ei.value.problems == ["vms[0].host: no host named 'h9'"]


def test_load_bad_yaml(tmp_dir: Path) -> None:
    path = tmp_dir / "topo.yaml"
    path.write_text("name: t\nsites: [\n  {name: s1\n")
    with pytest.raises(TopologyError) as ei:
        load_topology(path)
    assert len(ei.value.problems) == 1
    problem = ei.value.problems[0]
    assert problem.startswith("line ")
    assert ": not valid YAML: " in problem
    line_no = int(problem.removeprefix("line ").split(":")[0])
    assert 1 <= line_no <= 4


def test_load_empty_file(tmp_dir: Path) -> None:
    path = tmp_dir / "topo.yaml"
    path.write_text("")
    with pytest.raises(TopologyError) as ei:
        load_topology(path)
    assert ei.value.problems == ["(top level): expected a mapping"]


def test_load_missing_file(tmp_dir: Path) -> None:
    path = tmp_dir / "absent.yaml"
    with pytest.raises(TopologyError) as ei:
        load_topology(path)
    assert ei.value.source == str(path)
    assert ei.value.problems == ["cannot read: No such file or directory"]


def test_load_unreadable_file(tmp_dir: Path) -> None:
    # Permission bits do not stop root; a directory is unreadable as a file for anyone.
    with pytest.raises(TopologyError) as ei:
        load_topology(tmp_dir)
    assert ei.value.problems == ["cannot read: Is a directory"]


def test_lookups_by_name_agree_with_the_lists_and_follow_copies() -> None:
    """The lookups are indexed once per topology: they give what a scan of the lists
    gives, also for a copy with other lists, and leave comparisons and dumps alone."""
    t = load_topology(default_topology_path())
    assert t.host("host3").name == "host3" and t.has_host("host3")
    assert not t.has_host("nope")
    site, rack = t.place("host3")
    assert (site.name, rack.name) == ("site1", "rack2")
    for i, vm in enumerate(t.vms):
        assert t.vm(vm.name) is vm and t.vm_position(vm.name) == i
    for host in t.host_names():
        assert t.vms_on(host) == [v for v in t.vms if v.host == host]
    for vnf, c in t.components():
        assert t.component(c.name) == (vnf, c)
        assert (vnf, c) in t.components_on(c.vm)
    assert t.vnf("web").name == "web" and t.balancer_of("web") is t.vnf("web-lb")
    assert t.balancer_of("gw") is None
    for lookup in (t.host, t.vm, t.vnf, t.component, t.vm_position, t.place):
        with pytest.raises(KeyError):
            lookup("nope")
    t.vms_on("host1").clear()  # a copy: the topology is not changed through it
    assert t.vms_on("host1")
    # A copy with other lists is looked up in those, not in the original's index.
    copy_ = t.model_copy(update={"vms": t.vms[:2]})
    assert copy_.vm_position(t.vms[1].name) == 1
    with pytest.raises(KeyError):
        copy_.vm(t.vms[5].name)
    without = t.without_vnfm()
    assert {v.vnfm for v in without.vnfs} == {"none"}
    assert without.vnf("gw").vnfm == "none" and t.vnf("gw").vnfm == "generic"
    assert t == load_topology(default_topology_path())  # the index is not compared
    assert "_nfvha" not in t.model_dump_json()
