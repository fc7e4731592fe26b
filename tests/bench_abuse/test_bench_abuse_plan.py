"""``nfvha bench abuse`` without a test bed: what it faults and watches, the shape of its
figures, how it asks components whether they serve."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator

import pytest

from nfvha.bench.abuseplan import FIGURES, AbuseResult, bench_topology, make_plan
from nfvha.model.topology import default_topology_path, load_topology
from nfvha.testbed.observe import is_serving, serving_round


def test_plan_faults_other_vnfs_and_watches_the_2n_ones() -> None:
    t = load_topology(default_topology_path())
    plan = make_plan(t, "gw")
    assert plan.targets == ["web-1", "web-2", "web-3", "dns-1", "db-1"]
    assert plan.watched == ["gw", "web-lb"]
    tweaked = bench_topology(t, plan)
    for v in tweaked.vnfs:
        restarts = v.escalation.vnfc_restart.max
        assert (restarts == 1000) == (v.name in ("web", "dns", "db")), v.name
    assert tweaked.vnf("gw") == t.vnf("gw")


@pytest.mark.parametrize(("vnf", "error"), [
    ("nope", "no VNF 'nope'"),
    ("web", "must be 2N under the generic VNFM with a VIP"),
])
def test_plan_refuses_what_is_no_2n_vnf(vnf: str, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        make_plan(load_topology(default_topology_path()), vnf)


def test_plan_needs_something_else_to_fault() -> None:
    t = load_topology(default_topology_path())
    only_2n = t.model_copy(update={"vnfs": [t.vnf("gw")]})
    with pytest.raises(ValueError, match="no VNF to fault"):
        make_plan(only_2n, "gw")


def test_json_has_the_six_figures_first_then_the_rest() -> None:
    r = AbuseResult(actives_lost=0, probe_outage_ms=0.0, detect_p99_idle_ms=12.5,
                    extra={"flood_s": 30.0}, errors=["flood: x"])
    out = json.loads(json.dumps(r.to_json()))
    assert list(out)[:6] == list(FIGURES) == [
        "actives_lost", "probe_outage_ms", "lease_late_max_ms", "detect_p99_ms",
        "detect_p99_idle_ms", "rss_growth_mb"]
    assert out["lease_late_max_ms"] is None and out["flood_s"] == 30.0
    assert out["errors"] == ["flood: x"]


@pytest.mark.parametrize(("answer", "serving"), [
    ("VAL abuse-watch 0 gw-a", True),
    ("ERR not-active standby", False),
    ('{"role": "active", "members": []}', True),
    ('{"role": "standby"}', False),
    ("{not json", False),
])
def test_what_counts_as_serving(answer: str, serving: bool) -> None:
    assert is_serving(answer) is serving


@pytest.fixture
def responders() -> Iterator[list[tuple[str, int]]]:
    """Three UDP services: one serving, one not, one that never answers."""
    socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(3)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    stop = threading.Event()

    def answer(sock: socket.socket, reply: bytes) -> None:
        sock.settimeout(0.05)
        while not stop.is_set():
            try:
                _, addr = sock.recvfrom(100)
            except TimeoutError:
                continue
            sock.sendto(reply, addr)

    threads = [threading.Thread(target=answer, args=(socks[0], b"VAL w 1 a")),
               threading.Thread(target=answer, args=(socks[1], b"ERR not-active standby"))]
    for t in threads:
        t.start()
    try:
        yield [s.getsockname() for s in socks]
    finally:
        stop.set()
        for t in threads:
            t.join()
        for s in socks:
            s.close()


def test_a_round_counts_who_serves_and_who_answered(
        responders: list[tuple[str, int]]) -> None:
    assert serving_round(responders[:2], "GET w", 2.0) == (1, 2)
    assert serving_round(responders, "GET w", 0.2) == (1, 2)  # the third is silent
